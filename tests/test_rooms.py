"""Room control (docs/spec.md §6) over real WebSockets."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from symple_tx.config import Settings
from symple_tx.hooks import JoinRefused
from tests.routing_support import ErrorCase, of_kind

INVALID_ROOMS: list[Any] = [None, "", "x" * 257, 42, True, ["r"], {"name": "r"}]


class RoomCase(ErrorCase):
    @defer.inlineCallbacks
    def answer(self, peer, frame: dict):
        """Send ``frame``; fires with the one frame it was answered with (the peer stays open)."""
        peer.send_json(frame)
        frames = yield self.assert_stays_open(peer)
        self.assertEqual(len(frames), 1, frames)
        return frames[0]

    @defer.inlineCallbacks
    def assert_refused(self, peer, frame: dict, status: int, message: str = None):
        reply = yield self.answer(peer, frame)
        self.assert_error(reply, status, message, frame.get("id"))

    @defer.inlineCallbacks
    def assert_invalid_rooms_are_400(self):
        peer = yield self.peer("alice")
        for kind in ("join", "leave"):
            for number, room in enumerate(INVALID_ROOMS):
                frame: dict = {"type": kind, "id": f"{kind}-{number}"}
                if room is not None:
                    frame["room"] = room
                yield self.assert_refused(peer, frame, 400, "Invalid room name")


class DynamicRoomsOnTests(RoomCase):
    @defer.inlineCallbacks
    def test_join_and_leave_are_acknowledged(self):
        peer = yield self.peer("alice")
        reply = yield self.answer(peer, {"type": "join", "room": "r", "id": 1})
        self.assertEqual(reply, {"type": "join:ok", "room": "r", "id": 1})
        reply = yield self.answer(peer, {"type": "leave", "room": "r", "id": 2})
        self.assertEqual(reply, {"type": "leave:ok", "room": "r", "id": 2})
        longest = "é" * 256
        reply = yield self.answer(peer, {"type": "join", "room": longest})
        self.assertEqual(reply, {"type": "join:ok", "room": longest})

    @defer.inlineCallbacks
    def test_leaving_the_own_user_room_is_403(self):
        peer = yield self.peer("alice", rooms=["lobby"])
        yield self.assert_refused(peer, {"type": "leave", "room": "alice", "id": "x"}, 403)
        self.assertEqual(peer.welcome["rooms"], ["alice", "lobby"])
        # Still in it: a second session of alice still reaches this one.
        other = yield self.peer("alice")
        yield self.collect(peer, other)
        other.send_json({"type": "message", "subtype": "t", "to": "alice"})
        got = yield self.collect(other, peer)
        self.assertEqual(len(of_kind(got[peer], "message")), 1)

    @defer.inlineCallbacks
    def test_invalid_room_is_400(self):
        yield self.assert_invalid_rooms_are_400()


class DynamicRoomsOffTests(RoomCase):
    settings = Settings(dynamic_rooms=False)

    @defer.inlineCallbacks
    def test_join_and_leave_are_403(self):
        peer = yield self.peer("alice", rooms=["lobby"])
        yield self.assert_refused(peer, {"type": "join", "room": "r", "id": "j"}, 403)
        yield self.assert_refused(peer, {"type": "leave", "room": "lobby", "id": "l"}, 403)
        yield self.assert_refused(peer, {"type": "leave", "room": "alice"}, 403)
        # Membership did not change: lobby still routes.
        bob = yield self.peer("bob", rooms=["lobby"])
        yield self.collect(peer, bob)
        bob.send_json({"type": "message", "subtype": "t", "to": "lobby"})
        got = yield self.collect(bob, peer)
        self.assertEqual(len(of_kind(got[peer], "message")), 1)

    @defer.inlineCallbacks
    def test_invalid_room_is_400_even_so(self):
        yield self.assert_invalid_rooms_are_400()


def join_hook(peer: dict, room: str) -> Any:
    """Allows "open" rooms; "slow-" rooms after a delay; refuses "vip" with a message."""
    if room == "vip":
        raise JoinRefused(f"Room 'vip' is for members only, {peer['user']}")
    if room.startswith("slow-"):
        return deferLater(reactor, 0.01, lambda: True)
    return room.startswith("open")


class JoinHookTests(RoomCase):
    settings = Settings(join_hook=join_hook)

    @defer.inlineCallbacks
    def test_hook_refusal_is_403(self):
        peer = yield self.peer("alice")
        reply = yield self.answer(peer, {"type": "join", "room": "closed", "id": "c"})
        self.assert_error(reply, 403, "closed", "c")
        reply = yield self.answer(peer, {"type": "join", "room": "vip", "id": "v"})
        self.assert_error(reply, 403, frame_id="v")
        self.assertEqual(reply["message"], "Room 'vip' is for members only, alice")

    @defer.inlineCallbacks
    def test_refused_join_grants_no_membership(self):
        alice = yield self.peer("alice")
        bob = yield self.peer("bob", rooms=["vip"])
        yield self.answer(alice, {"type": "join", "room": "vip"})
        got = yield self.collect(alice, bob)
        self.assertEqual(got[bob], [])
        bob.send_json({"type": "message", "subtype": "t", "to": "vip"})
        got = yield self.collect(bob, alice)
        self.assertEqual(of_kind(got[alice], "message"), [])

    @defer.inlineCallbacks
    def test_allowed_joins_keep_frame_order(self):
        alice = yield self.peer("alice")
        bob = yield self.peer("bob", rooms=["slow-1"])
        yield self.collect(alice, bob)
        alice.send_json({"type": "join", "room": "slow-1", "id": 1})
        alice.send_json({"type": "message", "subtype": "t", "to": "slow-1", "id": 2})
        alice.send_json({"type": "join", "room": "open-2", "id": 3})
        got = yield self.collect(alice, bob)
        self.assertEqual([(f["type"], f.get("id")) for f in got[alice]],
                         [("join:ok", 1), ("presence", None), ("join:ok", 3)])
        self.assertEqual([(f["type"], f.get("id")) for f in got[bob]],
                         [("presence", None), ("message", 2)])
