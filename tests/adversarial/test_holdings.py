"""What one session may hold: rooms, presence data, and a user it did not choose.

Rows: anonymous auth with ~6 900 room names in one 64 KiB frame from 20
connections held 146 000 rooms (+2.8 MiB per connection); a stored session
without ``user`` plus a client-chosen ``user: "bob"`` was welcomed as bob; a
version-8 handshake with ``Sec-WebSocket-Origin: https://evil.example``
passed an allow-list.
"""

from __future__ import annotations

import orjson
from twisted.internet import defer

from symple_tx.config import Settings
from tests.adversarial.support import UPGRADE, RawTestCase
from tests.support import presence_of, with_timeout
from tests.test_auth import RedisSessionCase

MAX_ROOMS = Settings().max_rooms


def room_names(count: int, prefix: str = "r") -> list[str]:
    return [f"{prefix}{n}" for n in range(count)]


class RoomLimitTests(RawTestCase):
    @defer.inlineCallbacks
    def test_a_frame_full_of_rooms_is_refused_and_holds_nothing(self):
        rooms = room_names(6900)
        self.assertLess(len(orjson.dumps({"type": "auth", "user": "u", "rooms": rooms})),
                        Settings().max_message_size)
        for n in range(20):
            peer = yield self.connect()
            peer.send_json({"type": "auth", "user": f"u{n}", "rooms": rooms})
            error = yield peer.expect("error")
            self.assertEqual(error["status"], 400)
            self.assertIn(f"at most {MAX_ROOMS}", error["message"])
            code, _ = yield peer.wait_closed()
            self.assertEqual(code, 4400)
        self.assertEqual(self.server.router.room_count(), 0)

    @defer.inlineCallbacks
    def test_auth_at_the_limit_is_welcomed(self):
        peer = yield self.peer("alice", rooms=room_names(MAX_ROOMS) + ["alice"])
        self.assertEqual(len(peer.welcome["rooms"]), MAX_ROOMS + 1)  # and the user room

    @defer.inlineCallbacks
    def test_joins_past_the_limit_get_a_clear_error(self):
        peer = yield self.peer("alice", rooms=room_names(MAX_ROOMS - 2))
        for room in ("extra1", "extra2", "r0", "alice"):  # rejoins and the user room are free
            peer.send_json({"type": "join", "room": room, "id": room})
            ack = yield peer.expect(lambda f: f.get("id") == room)
            self.assertEqual(ack["type"], "join:ok", ack)
        peer.send_json({"type": "join", "room": "one-too-many", "id": "x"})
        error = yield peer.expect("error")
        self.assertEqual((error["status"], error["id"]), (403, "x"))
        self.assertIn(f"at most {MAX_ROOMS} rooms", error["message"])
        peer.send_json({"type": "leave", "room": "extra1"})
        peer.send_json({"type": "join", "room": "one-too-many", "id": "y"})
        ack = yield peer.expect(lambda f: f.get("id") == "y")
        self.assertEqual(ack["type"], "join:ok")


class HookRoomLimitTests(RawTestCase):
    settings = Settings(authentication=True, auth_hook=lambda request: {
        "user": request.user, "rooms": room_names(MAX_ROOMS + 1)})

    @defer.inlineCallbacks
    def test_trusted_rooms_count_too(self):
        peer = yield self.connect()
        peer.send_json({"type": "auth", "user": "alice", "token": "t"})
        error = yield peer.expect("error")
        self.assertEqual(error["status"], 400)
        self.assertIn("Too many rooms", error["message"])


class PresenceSizeTests(RawTestCase):
    settings = Settings(max_presence_size=1024)

    @defer.inlineCallbacks
    def test_oversized_presence_data_is_refused_and_not_stored(self):
        alice = yield self.peer("alice", rooms=["lobby"])
        bob = yield self.peer("bob", rooms=["lobby"])
        yield alice.expect("presence")
        alice.send_json({"type": "presence", "id": "big", "data": {"blob": "x" * 2000}})
        error = yield alice.expect("error")
        self.assertEqual((error["status"], error["id"]), (413, "big"))
        alice.send_json({"type": "presence", "data": {"status": "fine"}})
        got = yield self.collect(alice, bob)
        seen = presence_of(got[bob], alice)
        self.assertEqual(seen[-1]["data"].get("status"), "fine")
        self.assertFalse(any("blob" in frame["data"] for frame in seen))
        self.assertNotIn("blob", self.server.router.sessions[alice.session_id].presence)

    @defer.inlineCallbacks
    def test_oversized_auth_data_is_refused(self):
        peer = yield self.connect()
        peer.send_json({"type": "auth", "user": "alice", "data": {"blob": "x" * 2000}})
        error = yield peer.expect("error")
        self.assertEqual(error["status"], 413)
        yield peer.wait_closed()


class StoredSessionUserTests(RedisSessionCase):
    @defer.inlineCallbacks
    def test_a_session_without_user_cannot_be_anybody(self):
        bob = yield self.peer("bob", token=(yield self.store({"user": "bob"})))
        token = yield self.store({"rooms": ["r"]})
        yield self.refused_at_auth({"type": "auth", "user": "bob", "token": token}, 401,
                                   "names no user")
        self.assertEqual([s.user for s in self.server.router.sessions.values()], ["bob"])
        self.assertEqual(bob.drain(), [])


class OldVersionOriginTests(RawTestCase):
    settings = Settings(allowed_origins=("https://good.example",))

    @defer.inlineCallbacks
    def handshake(self, version: bytes, origin_header: bytes, origin: bytes) -> int:
        head = UPGRADE.replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: " + version)
        client = yield self.raw(head + origin_header + b": " + origin + b"\r\n\r\n")
        yield with_timeout(client.until(b"\r\n\r\n"), what="a handshake answer")
        return client.status

    @defer.inlineCallbacks
    def test_sec_websocket_origin_meets_the_allow_list(self):
        status = yield self.handshake(b"8", b"Sec-WebSocket-Origin", b"https://evil.example")
        self.assertEqual(status, 403)
        status = yield self.handshake(b"8", b"Sec-WebSocket-Origin", b"https://good.example")
        self.assertEqual(status, 101)
        status = yield self.handshake(b"13", b"Sec-WebSocket-Origin", b"https://evil.example")
        self.assertEqual(status, 403)
        status = yield self.handshake(b"13", b"Origin", b"https://evil.example")
        self.assertEqual(status, 403)
