"""The router without sockets: routing table, permissions, presence, rooms, hooks.

Every test drives ``Router`` directly with ``FakeLink`` peers and the identity
encoder, so what a link receives is exactly the serialized JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import orjson
from twisted.internet.defer import Deferred, succeed
from twisted.trial import unittest

from symple_tx import wire
from symple_tx.bus import Bus
from symple_tx.config import Settings
from symple_tx.hooks import JoinRefused
from symple_tx.ratelimit import Budget
from symple_tx.router import Router
from symple_tx.session import Identity, Session
from symple_tx.wire import ProtocolError

from tests.fakes import FakeLink, connect, disconnect, make_router


@dataclass
class Peer:
    """A session and the link that records what it was sent."""

    session: Session
    link: FakeLink

    @property
    def id(self) -> str:
        return self.session.id

    @property
    def address(self) -> str:
        return self.session.address

    def take(self, kind: Optional[str] = None) -> list[dict]:
        """Frames received since the last take, optionally of one type only."""
        frames = self.link.take()
        if kind is None:
            return frames
        return [f for f in frames if f["type"] == kind]


class RouterTestCase(unittest.TestCase):
    settings: dict[str, Any] = {}

    def setUp(self) -> None:
        self.router: Router = make_router(**self.settings)
        self.peers: list[Peer] = []

    def peer(self, user: str, *rooms: str, **kwargs: Any) -> Peer:
        session, link = connect(self.router, user, rooms, **kwargs)
        peer = Peer(session, link)
        self.peers.append(peer)
        return peer

    def quiet(self) -> None:
        """Forget everything sent so far (welcomes, snapshots, announcements)."""
        for peer in self.peers:
            peer.link.take()

    def send(self, peer: Peer, frame: dict) -> Any:
        return self.router.handle(peer.session, frame)

    def refused(self, peer: Peer, frame: dict, status: int) -> ProtocolError:
        """``frame`` is refused with ``status`` and the connection stays open."""
        exc = self.assertRaises(ProtocolError, self.send, peer, frame)
        self.assertEqual(exc.status, status, exc.message)
        self.assertFalse(exc.close)
        self.assertIsNone(peer.link.closed)
        self.assertGreater(len(exc.message), 10)
        return exc

    def metric(self, name: str, **labels: str) -> float:
        value = self.router.metrics.registry.get_sample_value(name, labels)
        return value or 0.0

    def drops(self, reason: str) -> float:
        return self.metric("symple_drops_total", reason=reason)

    def receivers(self, kind: str = "message") -> list[Peer]:
        """The peers that received a frame of ``kind`` since the last take; one entry per frame."""
        result = []
        for peer in self.peers:
            result.extend(peer for _ in peer.take(kind))
        return result

    def assertDelivered(self, frame: dict, sender: Peer, *expected: Peer) -> None:
        """``sender`` sends ``frame``: exactly ``expected`` receive it, once each."""
        self.quiet()
        self.send(sender, frame)
        got = self.receivers(frame["type"])
        self.assertEqual(sorted(p.address for p in got),
                         sorted(p.address for p in expected))


class OpenSessionTests(RouterTestCase):
    def test_welcome(self):
        alice = self.peer("alice", "team", "alice", "team", extra={"peerType": "person"})
        (welcome,) = alice.take()
        self.assertEqual(welcome["type"], "welcome")
        self.assertEqual(welcome["protocol"], "symple/4")
        self.assertEqual(welcome["status"], 200)
        self.assertEqual(welcome["rooms"], ["alice", "team"])
        self.assertEqual(welcome["peer"], {
            "id": alice.id, "user": "alice", "name": "alice", "online": True,
            "host": "192.0.2.1", "peerType": "person"})

    def test_name_and_type(self):
        bob = self.peer("bob", name="Bob", peer_type="bot")
        peer = bob.take()[0]["peer"]
        self.assertEqual((peer["name"], peer["type"]), ("Bob", "bot"))

    def test_snapshot_and_announcement(self):
        alice = self.peer("alice", "team")
        other = self.peer("carol", "elsewhere")
        alice.take()
        bob = self.peer("bob", "team")
        frames = bob.take()
        self.assertEqual([f["type"] for f in frames], ["welcome", "presence"])
        self.assertEqual(frames[1]["from"], alice.address)
        self.assertEqual(frames[1]["data"]["id"], alice.id)
        self.assertIs(frames[1]["data"]["online"], True)
        (announce,) = alice.take()
        self.assertEqual(announce["from"], bob.address)
        self.assertEqual(announce["data"]["user"], "bob")
        self.assertEqual(other.take(), [{"type": "welcome", "protocol": "symple/4",
                                         "status": 200, "peer": other.session.peer(),
                                         "rooms": ["carol", "elsewhere"]}])

    def test_sessions_of_one_user_see_each_other(self):
        first = self.peer("alice")
        second = self.peer("alice")
        self.assertEqual([f["data"]["id"] for f in second.take("presence")], [first.id])
        self.assertEqual([f["data"]["id"] for f in first.take("presence")], [second.id])


class RoutingTableTests(RouterTestCase):
    """docs/spec.md §4, one row at a time."""

    def test_absent_to(self):
        alice = self.peer("alice", "team", "lobby")
        bob = self.peer("bob", "team")
        carol = self.peer("carol", "lobby")
        self.peer("dave", "elsewhere")
        alice2 = self.peer("alice")
        self.assertDelivered({"type": "message"}, alice, bob, carol, alice2)

    def test_address(self):
        alice = self.peer("alice", "team")
        bob = self.peer("bob", "team")
        self.peer("bob", "team")
        self.peer("carol", "team")
        self.assertDelivered({"type": "message", "to": bob.address}, alice, bob)

    def test_address_with_wrong_user_reaches_nobody(self):
        alice = self.peer("alice", "team")
        bob = self.peer("bob", "team")
        self.assertDelivered({"type": "message", "to": f"mallory|{bob.id}"}, alice)
        self.assertDelivered({"type": "message", "to": "bob|no-such-id"}, alice)

    def test_bare_session_id(self):
        alice = self.peer("alice", "team")
        bob = self.peer("bob", "team")
        self.peer("carol", "team")
        self.assertDelivered({"type": "presence", "to": bob.id}, alice, bob)

    def test_user_room(self):
        alice = self.peer("alice", "team")
        bob1 = self.peer("bob", "team")
        bob2 = self.peer("bob", "team")
        self.peer("carol", "team")
        self.assertDelivered({"type": "message", "to": "bob"}, alice, bob1, bob2)

    def test_user_room_only_where_a_room_is_shared(self):
        alice = self.peer("alice", "team")
        bob1 = self.peer("bob", "team")
        self.peer("bob", "elsewhere")
        self.assertDelivered({"type": "message", "to": "bob"}, alice, bob1)
        self.assertEqual(self.drops("permission"), 1)

    def test_room_of_the_sender(self):
        alice = self.peer("alice", "team", "lobby")
        bob = self.peer("bob", "team")
        self.peer("carol", "lobby")
        self.assertDelivered({"type": "message", "to": "team"}, alice, bob)

    def test_room_the_sender_is_not_in(self):
        # alice shares "lobby" with bob only; bob and carol are in "team".
        alice = self.peer("alice", "lobby")
        bob = self.peer("bob", "team", "lobby")
        self.peer("carol", "team")
        self.assertDelivered({"type": "message", "to": "team"}, alice, bob)
        self.assertEqual(self.drops("permission"), 1)

    def test_unknown_room(self):
        alice = self.peer("alice", "team")
        self.peer("bob", "team")
        self.assertDelivered({"type": "message", "to": "nowhere"}, alice)
        self.assertEqual(self.drops("no_recipient"), 1)

    def test_array_of_rooms(self):
        alice = self.peer("alice", "r1", "r2")
        bob = self.peer("bob", "r1")
        carol = self.peer("carol", "r2")
        self.peer("dave", "r3")
        self.assertDelivered({"type": "message", "to": ["r1", "r2"]}, alice, bob, carol)
        self.assertDelivered({"type": "message", "to": ["r2"]}, alice, carol)
        self.assertDelivered({"type": "message", "to": []}, alice)

    def test_array_skips_rooms_the_sender_is_not_in(self):
        # bob shares r1 with alice and is also in r3, which alice is not in:
        # r3 is skipped as a whole, even for members alice shares a room with.
        alice = self.peer("alice", "r1")
        bob = self.peer("bob", "r1", "r3")
        self.peer("carol", "r3")
        self.assertDelivered({"type": "message", "to": ["r3"]}, alice)
        self.assertDelivered({"type": "message", "to": ["r1", "r3"]}, alice, bob)
        self.assertEqual(self.drops("permission"), 2)

    def test_array_with_invalid_entries(self):
        alice = self.peer("alice", "r1")
        bob = self.peer("bob", "r1")
        for to in (["r1", 5], ["r1", ""], [None], [["r1"]], ["x" * 257]):
            self.quiet()
            self.refused(alice, {"type": "message", "to": to}, 400)
            self.assertEqual(bob.take(), [])

    def test_invalid_to(self):
        alice = self.peer("alice", "r1")
        bob = self.peer("bob", "r1")
        self.quiet()
        for to in (5, 1.5, None, True, {"room": "r1"}, "", "x" * 257):
            exc = self.refused(alice, {"type": "message", "to": to}, 400)
            self.assertIn("'to'", exc.message)
        self.assertEqual(bob.take(), [])
        # The connection still works.
        self.assertDelivered({"type": "message"}, alice, bob)

    def test_every_routed_type(self):
        alice = self.peer("alice", "r1")
        bob = self.peer("bob", "r1")
        for kind in ("message", "presence", "command", "event"):
            self.assertDelivered({"type": kind}, alice, bob)


class PermissionTests(RouterTestCase):
    """Rooms are the only permission boundary."""

    def test_no_shared_room_no_delivery(self):
        alice = self.peer("alice", "r1")
        bob = self.peer("bob", "r2")
        for to in (bob.address, bob.id, "bob", "r2", ["r2"]):
            self.assertDelivered({"type": "message", "to": to}, alice)
        self.assertDelivered({"type": "message"}, alice)
        self.assertEqual(self.drops("permission"), 5)
        self.assertEqual(self.metric("symple_frames_out_total", type="message"), 0)

    def test_blocked_traffic_is_silent(self):
        alice = self.peer("alice", "r1")
        bob = self.peer("bob", "r2")
        self.quiet()
        self.send(alice, {"type": "message", "to": bob.address})
        self.assertEqual(alice.take(), [])


class ExactlyOnceTests(RouterTestCase):
    def test_overlapping_rooms(self):
        alice = self.peer("alice", "r1", "r2", "r3")
        bob = self.peer("bob", "r1", "r2", "r3")
        alice2 = self.peer("alice", "r1")
        cases = [(None, [bob, alice2]), ("r1", [bob, alice2]), ("alice", [alice2]),
                 (["r1", "r2", "r3", "r1", "alice"], [bob, alice2]), (bob.address, [bob])]
        for to, expected in cases:
            frame = {"type": "message"} if to is None else {"type": "message", "to": to}
            self.assertDelivered(frame, alice, *expected)


class RewriteTests(RouterTestCase):
    def setUp(self):
        super().setUp()
        self.alice = self.peer("alice", "r1", name="Alice")
        self.bob = self.peer("bob", "r1")
        self.quiet()

    def test_from_is_overwritten(self):
        self.send(self.alice, {"type": "message", "from": "bob|forged"})
        (frame,) = self.bob.take()
        self.assertEqual(frame["from"], self.alice.address)

    def test_token_removed_other_fields_unchanged(self):
        sent = {"type": "message", "id": "m1", "subtype": "call:offer", "to": self.bob.address,
                "token": "secret", "data": {"sdp": "v=0", "list": [1, {"a": None}]}}
        self.send(self.alice, dict(sent))
        (frame,) = self.bob.take()
        expected = {**sent, "from": self.alice.address}
        del expected["token"]
        self.assertEqual(frame, expected)

    def test_presence_tokens_removed_at_any_depth(self):
        data = {"token": "a", "caps": {"token": "b", "list": [{"token": "c", "ok": 1}]}}
        self.send(self.alice, {"type": "presence", "token": "t", "data": data})
        (frame,) = self.bob.take()
        self.assertNotIn("token", frame)
        self.assertEqual(frame["data"]["caps"], {"list": [{"ok": 1}]})
        self.assertNotIn("token", frame["data"])
        self.assertNotIn("token", self.alice.session.presence)

    def test_presence_cannot_impersonate(self):
        forged = {"id": self.bob.id, "user": "bob", "name": "Bob", "online": False,
                  "type": "admin", "mood": "sly"}
        self.send(self.alice, {"type": "presence", "data": forged})
        (frame,) = self.bob.take()
        data = frame["data"]
        self.assertEqual((data["id"], data["user"], data["name"], data["online"]),
                         (self.alice.id, "alice", "Alice", True))
        self.assertNotIn("type", data)
        self.assertEqual(data["mood"], "sly")

    def test_presence_type_comes_from_the_session(self):
        carol = self.peer("carol", "r1", peer_type="bot")
        self.quiet()
        self.send(carol, {"type": "presence", "data": {"type": "person"}})
        self.assertEqual(self.bob.take()[0]["data"]["type"], "bot")

    def test_presence_keeps_the_host(self):
        self.send(self.alice, {"type": "presence", "data": {"host": "198.51.100.7"}})
        self.assertEqual(self.bob.take()[0]["data"]["host"], "192.0.2.1")

    def test_presence_data_must_be_an_object(self):
        for data in ("x", 5, ["a"], True):
            self.refused(self.alice, {"type": "presence", "data": data}, 400)
        self.assertEqual(self.bob.take(), [])

    def test_presence_without_data_sends_the_latest(self):
        self.send(self.alice, {"type": "presence", "data": {"mood": "busy"}})
        self.bob.take()
        self.send(self.alice, {"type": "presence"})
        (frame,) = self.bob.take()
        self.assertEqual(frame["data"]["mood"], "busy")
        self.assertEqual(frame["data"]["id"], self.alice.id)


class PresenceTests(RouterTestCase):
    def test_latest_presence_in_snapshots(self):
        alice = self.peer("alice", "r1")
        self.send(alice, {"type": "presence", "data": {"caps": {"video": True}}})
        carol = self.peer("carol", "r1")
        (snapshot,) = carol.take("presence")
        self.assertEqual(snapshot["data"]["caps"], {"video": True})
        # ... and in the presence a join brings.
        dave = self.peer("dave", "r2")
        self.quiet()
        self.send(dave, {"type": "join", "room": "r1"})
        presence = {f["from"]: f["data"] for f in dave.take("presence")}
        self.assertEqual(presence[alice.address]["caps"], {"video": True})

    def test_latest_presence_in_offline(self):
        alice = self.peer("alice", "r1")
        bob = self.peer("bob", "r1")
        self.send(alice, {"type": "presence", "data": {"caps": 1}})
        self.quiet()
        disconnect(self.router, alice.session)
        (frame,) = bob.take()
        self.assertEqual((frame["data"]["online"], frame["data"]["caps"]), (False, 1))

    def test_probe_is_answered_by_the_server(self):
        alice = self.peer("alice", "r1")
        bob = self.peer("bob", "r1", "r2")
        carol = self.peer("carol", "r2")
        self.send(alice, {"type": "presence", "data": {"caps": "a"}})
        dave = self.peer("dave", "r1", "r2")
        self.quiet()
        self.send(dave, {"type": "presence", "probe": True, "data": {"caps": "d"}})
        answers = dave.take()
        self.assertEqual(sorted(f["from"] for f in answers),
                         sorted([alice.address, bob.address, carol.address]))
        for frame in answers:
            self.assertEqual(frame["type"], "presence")
            self.assertIs(frame["data"]["online"], True)
            self.assertIs(frame.get("probe", False), False)
        self.assertEqual({f["from"]: f["data"]["caps"] for f in answers
                          if f["from"] == alice.address}, {alice.address: "a"})
        for peer in (alice, bob, carol):
            (forwarded,) = peer.take()
            self.assertEqual(forwarded["from"], dave.address)
            self.assertEqual(forwarded["data"]["caps"], "d")
            self.assertNotIn("probe", forwarded)

    def test_probe_false_is_not_answered(self):
        alice = self.peer("alice", "r1")
        bob = self.peer("bob", "r1")
        self.quiet()
        self.send(bob, {"type": "presence", "probe": False})
        self.assertEqual(bob.take(), [])
        self.assertNotIn("probe", alice.take()[0])

    def test_addressed_probe_is_answered_for_its_recipients(self):
        # The server stands in for the recipients' own answers.
        alice = self.peer("alice", "r1")
        bob = self.peer("bob", "r1")
        self.peer("carol", "r1")
        self.quiet()
        self.send(bob, {"type": "presence", "probe": True, "to": alice.id})
        self.assertEqual([f["from"] for f in bob.take()], [alice.address])

    def test_probe_alone_in_a_room(self):
        alice = self.peer("alice", "r1")
        self.quiet()
        self.send(alice, {"type": "presence", "probe": True})
        self.assertEqual(alice.take(), [])


class JoinTests(RouterTestCase):
    def test_join_announces_only_new_visibility(self):
        alice = self.peer("alice", "lobby")
        bob = self.peer("bob", "team")
        carol = self.peer("carol", "team", "lobby")
        self.quiet()
        self.assertIsNone(self.send(alice, {"type": "join", "room": "team", "id": "j1"}))
        frames = alice.take()
        self.assertEqual(frames[0], {"type": "join:ok", "room": "team", "id": "j1"})
        self.assertEqual([(f["type"], f["from"]) for f in frames[1:]],
                         [("presence", bob.address)])
        (announce,) = bob.take()
        self.assertEqual((announce["from"], announce["data"]["online"]), (alice.address, True))
        self.assertEqual(carol.take(), [])
        self.assertIn(alice.session, self.router.rooms["team"])

    def test_join_new_room(self):
        alice = self.peer("alice")
        self.quiet()
        self.send(alice, {"type": "join", "room": "fresh"})
        self.assertEqual(alice.take(), [{"type": "join:ok", "room": "fresh"}])
        self.assertEqual(self.router.rooms["fresh"], {alice.session})

    def test_join_again(self):
        alice = self.peer("alice", "team")
        self.peer("bob", "team")
        self.quiet()
        self.send(alice, {"type": "join", "room": "team"})
        self.assertEqual(alice.take(), [{"type": "join:ok", "room": "team"}])
        self.assertEqual(self.receivers("presence"), [])

    def test_invalid_room(self):
        alice = self.peer("alice")
        for kind in ("join", "leave"):
            for frame in ({"type": kind}, {"type": kind, "room": ""},
                          {"type": kind, "room": 7}, {"type": kind, "room": ["r"]},
                          {"type": kind, "room": "x" * 257}):
                self.refused(alice, frame, 400)


class LeaveTests(RouterTestCase):
    def test_leave_announces_lost_visibility(self):
        alice = self.peer("alice", "team", "lobby")
        bob = self.peer("bob", "team")
        carol = self.peer("carol", "team", "lobby")
        dave = self.peer("dave", "lobby")
        self.quiet()
        self.send(alice, {"type": "leave", "room": "team", "id": "l1"})
        frames = alice.take()
        self.assertEqual(frames[0], {"type": "leave:ok", "room": "team", "id": "l1"})
        self.assertEqual([(f["type"], f["from"], f["data"]["online"]) for f in frames[1:]],
                         [("presence", bob.address, False)])
        (gone,) = bob.take()
        self.assertEqual((gone["from"], gone["data"]["online"]), (alice.address, False))
        self.assertEqual(carol.take() + dave.take(), [])
        self.assertNotIn(alice.session, self.router.rooms["team"])

    def test_leave_last_member_forgets_the_room(self):
        alice = self.peer("alice", "solo")
        self.send(alice, {"type": "leave", "room": "solo"})
        self.assertNotIn("solo", self.router.rooms)

    def test_leave_room_not_joined(self):
        alice = self.peer("alice", "r1")
        self.peer("bob", "r1", "r2")
        self.quiet()
        self.send(alice, {"type": "leave", "room": "r2"})
        self.assertEqual(alice.take(), [{"type": "leave:ok", "room": "r2"}])
        self.assertEqual(self.receivers("presence"), [])

    def test_own_user_room(self):
        alice = self.peer("alice", "r1")
        self.quiet()
        self.refused(alice, {"type": "leave", "room": "alice"}, 403)
        self.assertEqual(self.router.users["alice"], {alice.session})
        self.assertNotIn("alice", self.router.rooms)
        self.assertEqual(alice.take(), [])


class StaticRoomsTests(RouterTestCase):
    settings = {"dynamic_rooms": False}

    def test_join_and_leave_refused(self):
        alice = self.peer("alice", "r1")
        self.peer("bob", "r2")
        self.quiet()
        self.refused(alice, {"type": "join", "room": "r2"}, 403)
        self.refused(alice, {"type": "leave", "room": "r1"}, 403)
        self.refused(alice, {"type": "leave", "room": "alice"}, 403)
        self.assertEqual(alice.session.rooms, {"r1"})
        self.assertEqual(self.receivers("presence") + alice.take(), [])

    def test_invalid_room_is_still_400(self):
        alice = self.peer("alice")
        self.refused(alice, {"type": "join", "room": ""}, 400)
        self.refused(alice, {"type": "leave"}, 400)


class JoinHookTests(RouterTestCase):
    def use_hook(self, hook) -> list:
        calls: list = []

        def recording(peer: dict, room: str) -> Any:
            calls.append((peer, room))
            return hook(peer, room)

        self.router.settings.join_hook = recording
        return calls

    def join(self, peer: Peer, room: str = "vip") -> Any:
        self.quiet()
        return self.send(peer, {"type": "join", "room": room, "id": "j"})

    def assertJoined(self, peer: Peer, room: str = "vip") -> None:
        self.assertIn(room, peer.session.rooms)
        self.assertEqual(peer.take()[0], {"type": "join:ok", "room": room, "id": "j"})

    def assertRefusedJoin(self, d: Deferred, peer: Peer, message: str) -> None:
        exc = self.failureResultOf(d, ProtocolError).value
        self.assertEqual(exc.status, 403)
        self.assertIn(message, exc.message)
        self.assertNotIn("vip", peer.session.rooms)
        self.assertEqual(peer.take(), [])

    def test_sync_allow(self):
        calls = self.use_hook(lambda peer, room: True)
        alice = self.peer("alice")
        self.successResultOf(self.join(alice))
        self.assertJoined(alice)
        self.assertEqual(calls, [(alice.session.peer(), "vip")])

    def test_sync_refuse(self):
        self.use_hook(lambda peer, room: False)
        alice = self.peer("alice")
        self.assertRefusedJoin(self.join(alice), alice, "vip")

    def test_deferred(self):
        pending: Deferred = Deferred()
        self.use_hook(lambda peer, room: pending)
        alice = self.peer("alice")
        bob = self.peer("bob", "vip")
        d = self.join(alice)
        self.assertNoResult(d)
        self.assertNotIn("vip", alice.session.rooms)
        self.assertEqual(alice.take() + bob.take(), [])
        pending.callback(True)
        self.successResultOf(d)
        self.assertJoined(alice)
        self.assertEqual(bob.take()[0]["from"], alice.address)

    def test_deferred_refuse(self):
        self.use_hook(lambda peer, room: succeed(False))
        alice = self.peer("alice")
        self.assertRefusedJoin(self.join(alice), alice, "refused")

    def test_async_def(self):
        gate: Deferred = Deferred()

        async def hook(peer: dict, room: str) -> bool:
            return await gate

        self.use_hook(hook)
        alice = self.peer("alice")
        d = self.join(alice)
        self.assertNoResult(d)
        gate.callback(True)
        self.successResultOf(d)
        self.assertJoined(alice)

    def test_async_def_refuse(self):
        async def hook(peer: dict, room: str) -> bool:
            return False

        self.use_hook(hook)
        alice = self.peer("alice")
        self.assertRefusedJoin(self.join(alice), alice, "refused")

    def test_join_refused_message(self):
        def hook(peer: dict, room: str) -> bool:
            raise JoinRefused("Members only")

        self.use_hook(hook)
        alice = self.peer("alice")
        exc = self.failureResultOf(self.join(alice), ProtocolError).value
        self.assertEqual((exc.status, exc.message), (403, "Members only"))

    def test_async_join_refused(self):
        async def hook(peer: dict, room: str) -> bool:
            raise JoinRefused("Come back later")

        self.use_hook(hook)
        alice = self.peer("alice")
        exc = self.failureResultOf(self.join(alice), ProtocolError).value
        self.assertEqual((exc.status, exc.message), (403, "Come back later"))

    def test_hook_not_asked_for_a_room_already_joined(self):
        calls = self.use_hook(lambda peer, room: False)
        alice = self.peer("alice", "vip")
        self.assertIsNone(self.join(alice))
        self.assertJoined(alice)
        self.assertEqual(calls, [])

    def test_session_closed_while_hook_pending(self):
        pending: Deferred = Deferred()
        self.use_hook(lambda peer, room: pending)
        alice = self.peer("alice")
        bob = self.peer("bob", "vip")
        d = self.join(alice)
        disconnect(self.router, alice.session)
        self.quiet()
        pending.callback(True)
        self.successResultOf(d)
        self.assertEqual(alice.take() + bob.take(), [])
        self.assertEqual(self.router.rooms["vip"], {bob.session})
        self.assertNotIn(alice.id, self.router.sessions)


class CloseTests(RouterTestCase):
    def test_offline_exactly_once(self):
        alice = self.peer("alice", "r1", "r2")
        bob = self.peer("bob", "r1", "r2")
        carol = self.peer("carol", "r3")
        self.quiet()
        disconnect(self.router, alice.session)
        self.router.close_session(alice.session)
        (gone,) = bob.take()
        self.assertEqual(gone["type"], "presence")
        self.assertEqual((gone["from"], gone["data"]["id"], gone["data"]["online"]),
                         (alice.address, alice.id, False))
        self.assertEqual(carol.take(), [])
        self.assertNotIn(alice.id, self.router.sessions)
        self.assertEqual(set(self.router.rooms), {"r1", "r2", "r3"})
        self.assertEqual(set(self.router.users), {"bob", "carol"})

    def test_gone_session_is_no_longer_addressable(self):
        alice = self.peer("alice", "r1")
        bob = self.peer("bob", "r1")
        disconnect(self.router, bob.session)
        self.assertDelivered({"type": "message", "to": bob.address}, alice)
        self.assertDelivered({"type": "message", "to": bob.id}, alice)

    def test_close_frame(self):
        alice = self.peer("alice")
        self.assertIsNone(self.send(alice, {"type": "close"}))
        self.assertEqual(alice.link.closed[0], 1000)

    def test_no_offline_while_draining(self):
        alice = self.peer("alice", "r1")
        bob = self.peer("bob", "r1")
        self.quiet()
        d = self.router.shutdown()
        for peer in (alice, bob):
            self.assertEqual(peer.take(), [orjson.loads(wire.SHUTDOWN_EVENT)])
            self.assertEqual(peer.link.closed[0], 1001)
        disconnect(self.router, alice.session)
        self.assertEqual(bob.take(), [])
        self.assertNoResult(d)
        disconnect(self.router, bob.session)
        self.successResultOf(d)


class FrameTypeTests(RouterTestCase):
    def test_unknown_type(self):
        alice = self.peer("alice", "r1")
        bob = self.peer("bob", "r1")
        self.quiet()
        exc = self.refused(alice, {"type": "shout"}, 400)
        self.assertIn("shout", exc.message)
        self.assertEqual(bob.take(), [])
        self.assertEqual(self.metric("symple_frames_in_total", type="other"), 1)

    def test_second_auth(self):
        alice = self.peer("alice")
        self.refused(alice, {"type": "auth", "user": "mallory"}, 400)
        self.assertEqual(alice.session.user, "alice")

    def test_server_frame_types_are_not_accepted(self):
        alice = self.peer("alice")
        for kind in ("welcome", "error", "join:ok", "leave:ok"):
            self.refused(alice, {"type": kind}, 400)


class MetricsTests(RouterTestCase):
    def test_frames_in_and_out_by_type(self):
        alice = self.peer("alice", "r1")
        self.peer("bob", "r1")
        self.peer("carol", "r1")
        self.send(alice, {"type": "message"})
        self.send(alice, {"type": "message"})
        self.send(alice, {"type": "event"})
        self.send(alice, {"type": "join", "room": "r2"})
        self.send(alice, {"type": "leave", "room": "r2"})
        count = self.metric
        self.assertEqual(count("symple_frames_in_total", type="message"), 2)
        self.assertEqual(count("symple_frames_in_total", type="event"), 1)
        self.assertEqual(count("symple_frames_in_total", type="join"), 1)
        self.assertEqual(count("symple_frames_in_total", type="leave"), 1)
        self.assertEqual(count("symple_frames_out_total", type="message"), 4)
        self.assertEqual(count("symple_frames_out_total", type="event"), 2)
        self.assertEqual(count("symple_frames_out_total", type="welcome"), 3)
        self.assertEqual(count("symple_frames_out_total", type="join:ok"), 1)
        self.assertEqual(count("symple_frames_out_total", type="leave:ok"), 1)
        # bob: 1 snapshot + 1 announcement to alice; carol: 2 snapshots + 2 announcements.
        self.assertEqual(count("symple_frames_out_total", type="presence"), 6)

    def test_gauges(self):
        self.peer("alice", "r1")
        self.peer("bob", "r1")
        self.assertEqual(self.metric("symple_peers"), 2)
        self.assertEqual(self.metric("symple_connections"), 2)
        self.assertEqual(self.metric("symple_rooms"), 3)


class EncodeOnceTests(RouterTestCase):
    def test_fanout_encodes_once(self):
        alice = self.peer("alice", "r1")
        for user in ("bob", "carol", "dave"):
            self.peer(user, "r1")
        self.quiet()
        encoded: list = []

        def encode(payload: bytes) -> object:
            frame = object()
            encoded.append(frame)
            return frame

        self.router.encode = encode
        self.send(alice, {"type": "message"})
        self.assertEqual(len(encoded), 1)
        for peer in self.peers[1:]:
            self.assertEqual(len(peer.link.sent), 1)
            self.assertIs(peer.link.sent[0], encoded[0])
        self.assertEqual(alice.link.sent, [])

    def test_announcement_encodes_once(self):
        for user in ("bob", "carol", "dave"):
            self.peer(user, "r1")
        calls: list = []
        self.router.encode = lambda payload: calls.append(payload) or payload
        self.peer("alice", "r1")
        # welcome + three snapshots to alice, one announcement for three peers.
        self.assertEqual(len(calls), 5)


class _Forwarding(Bus):
    """A bus with other processes: records the frames handed to ``forward_direct``."""

    def __init__(self) -> None:
        self.router: Optional[Router] = None
        self.direct: list[tuple[str, str, dict, str]] = []

    def attach(self, router: Router) -> None:
        self.router = router

    def forward_direct(self, sender: Session, user: str, session_id: str, payload: bytes,
                       kind: str) -> bool:
        assert self.router is not None
        self.router.charge(sender, 1)
        self.direct.append((user, session_id, orjson.loads(payload), kind))
        return True


class DirectElsewhereTests(RouterTestCase):
    """A ``user|id`` no session here has may be held by another process
    (docs/clustering.md, "Frames for a session this process does not know")."""

    def setUp(self) -> None:
        self.bus = _Forwarding()
        self.router = Router(Settings(), bus=self.bus)
        self.peers = []

    def remote(self, user: str, *rooms: str) -> Session:
        """A mirrored session of another process."""
        session = Session(FakeLink(), Identity(user=user, name=user), "192.0.2.7",
                          node="other")
        self.router.admit(session, rooms)
        return session

    def test_an_unknown_address_is_handed_to_the_bus_charged_as_one_delivery(self):
        alice = self.peer("alice", "r")
        alice.session.budget = Budget(10, 1, 10.0, lambda: 0.0)
        self.quiet()
        self.send(alice, {"type": "message", "to": "bob|b9", "data": "call:init",
                          "token": "secret"})
        [(user, session_id, frame, kind)] = self.bus.direct
        self.assertEqual((user, session_id, kind), ("bob", "b9", "message"))
        self.assertEqual(frame, {"type": "message", "to": "bob|b9", "data": "call:init",
                                 "from": alice.address})
        self.assertEqual(self.drops("no_recipient"), 0)
        # the budget's one delivery is spent: the next one is refused before the bus
        self.refused(alice, {"type": "message", "to": "bob|b9"}, 429)
        self.assertEqual(len(self.bus.direct), 1)

    def test_presence_bare_ids_and_known_addresses_are_not_forwarded(self):
        alice = self.peer("alice", "r")
        bob = self.peer("bob", "r")
        stranger = self.remote("eve", "s")
        self.send(alice, {"type": "presence", "to": "bob|b9", "data": {"x": 1}})
        self.send(alice, {"type": "message", "to": "b9"})
        self.send(alice, {"type": "message", "to": "|b9"})
        self.send(alice, {"type": "message", "to": "bob|"})
        self.assertEqual(self.drops("no_recipient"), 4)
        self.assertDelivered({"type": "message", "to": bob.address}, alice, bob)
        # a mirrored session sharing no room is refused here, as ever
        self.send(alice, {"type": "message", "to": stranger.address})
        self.assertEqual(self.drops("permission"), 1)
        self.assertEqual(self.bus.direct, [])

    def test_one_process_counts_no_recipient_and_charges_nothing(self):
        router = make_router()
        session = connect(router, "alice", ["r"])[0]
        session.budget = Budget(10, 1, 10.0, lambda: 0.0)
        router.handle(session, {"type": "message", "to": "bob|b9"})
        router.handle(session, {"type": "message", "to": "bob|b9"})
        self.assertEqual(router.metrics.registry.get_sample_value(
            "symple_drops_total", {"reason": "no_recipient"}), 2)

    def test_a_forwarded_frame_reaches_a_local_session_sharing_a_room(self):
        bob = self.peer("bob", "r", "t")
        self.quiet()
        payload = b'{"type":"message","from":"alice|a1","data":"hi"}'
        self.router.deliver_direct(bob.id, "bob", "alice", ["q", "r"], payload, "message")
        self.assertEqual(bob.link.sent, [payload])
        # the same user shares its user room
        self.router.deliver_direct(bob.id, "bob", "bob", [], payload, "message")
        self.assertEqual(len(bob.link.take()), 2)

    def test_a_forwarded_frame_is_dropped_without_a_shared_room(self):
        bob = self.peer("bob", "r")
        self.quiet()
        payload = b'{"type":"message","from":"alice|a1"}'
        # "bob" among the sender's rooms is a named room, not bob's user room
        self.router.deliver_direct(bob.id, "bob", "alice", ["s", "bob"], payload, "message")
        self.assertEqual(self.drops("permission"), 1)
        # an id of another user, or of a closed session
        self.router.deliver_direct(bob.id, "carol", "carol", ["r"], payload, "message")
        self.router.deliver_direct("gone1", "bob", "bob", ["r"], payload, "message")
        self.assertEqual(self.drops("gone"), 2)
        self.assertEqual(bob.link.sent, [])

    def test_a_session_of_another_process_is_left_to_it(self):
        far = self.remote("bob", "r")
        self.router.deliver_direct(far.id, "bob", "alice", ["r"], b"{}", "message")
        self.assertEqual(far.link.sent, [])
        self.assertEqual(self.drops("gone") + self.drops("permission"), 0)
