"""A process mirrors only the sessions that share a room with its own (real Redis).

Three in-process servers on a private Redis, with disjoint and overlapping
rooms: each one's ``symple_bus_remote_sessions`` counts only the sessions of
the others that share a room with one of its own; entering a room another
process holds brings its members, leaving the last shared room forgets them.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from tests.cluster_support import (InProcessCluster, PeersMixin, eventually, is_message,
                                   presence_of, private_redis)


class SharedRoomsTestCase(PeersMixin, unittest.TestCase):
    nodes = 3

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield private_redis(self)
        self.cluster = InProcessCluster(self.redis.url, self.nodes, node_timeout=3.0)
        self.addCleanup(self.cluster.stop)
        yield self.cluster.start()
        yield eventually(lambda: self.cluster.nodes_known(self.nodes), what="nodes to meet")
        # alice@0 in a; bob@1 in b; carol@2 in a and c
        self.alice = yield self.on(0, "alice", rooms=["a"])
        self.bob = yield self.on(1, "bob", rooms=["b"])
        self.carol = yield self.on(2, "carol", rooms=["a", "c"])
        yield self.alice.expect(presence_of(self.carol, True))
        yield self.carol.expect(presence_of(self.alice, True))

    def on(self, index: int, user: str, **fields):
        return self.peer_on(self.cluster.ports[index], user, **fields)

    def mirrored(self, index: int) -> float:
        """``symple_bus_remote_sessions`` of server ``index``."""
        return self.cluster.servers[index].router.metrics.registry.get_sample_value(
            "symple_bus_remote_sessions")

    def mirrors(self, index: int) -> set[str]:
        router = self.cluster.servers[index].router
        return {i for i, s in router.sessions.items() if s.node is not None}

    def subscribers(self, channel: str) -> int:
        return int(self.redis.command("PUBSUB", "NUMSUB", channel).split()[1])

    @defer.inlineCallbacks
    def settled(self, *expected: set):
        """Each server's mirror becomes ``expected[i]`` (session ids)."""
        for index, ids in enumerate(expected):
            yield eventually(lambda: self.mirrors(index) == ids,
                             what=f"server {index} mirroring {sorted(ids)}")
            self.assertEqual(self.mirrored(index), len(ids))


class MirrorTests(SharedRoomsTestCase):
    @defer.inlineCallbacks
    def test_a_process_mirrors_only_sessions_sharing_a_room_with_its_own(self):
        alice, bob, carol = self.alice, self.bob, self.carol
        yield self.settled({carol.session_id}, set(), {alice.session_id})
        self.assertEqual(self.subscribers("symple:cluster:v2:room:a"), 2)
        self.assertEqual(self.subscribers("symple:cluster:v2:room:b"), 1)
        self.assertEqual([f for f in alice.received + carol.received
                          if f.get("type") == "presence" and f["data"]["id"] == bob.session_id],
                         [])
        # a frame for bob from a stranger is refused, as on one process
        alice.send_json({"type": "message", "to": bob.address, "data": "no"})
        alice.send_json({"type": "message", "to": carol.address, "data": "yes"})
        yield carol.expect(is_message("yes"))
        self.assertEqual([f for f in bob.received if f.get("data") == "no"], [])

    @defer.inlineCallbacks
    def test_joining_a_room_another_process_holds_brings_its_members(self):
        alice, bob, carol = self.alice, self.bob, self.carol
        bob.send_json({"type": "join", "room": "a"})
        yield bob.expect("join:ok")
        seen = set()
        for _ in range(2):
            frame = yield bob.expect(lambda f: f.get("type") == "presence"
                                     and f["data"]["online"])
            seen.add(frame["data"]["id"])
        self.assertEqual(seen, {alice.session_id, carol.session_id})
        yield alice.expect(presence_of(bob, True))
        yield carol.expect(presence_of(bob, True))
        yield self.settled({carol.session_id, bob.session_id},
                           {alice.session_id, carol.session_id},
                           {alice.session_id, bob.session_id})
        bob.send_json({"type": "message", "to": "a", "data": "hello a"})
        yield alice.expect(is_message("hello a"))
        yield carol.expect(is_message("hello a"))
        alice.send_json({"type": "message", "to": bob.address, "data": "hi bob"})
        yield bob.expect(is_message("hi bob"))
        # carol's c is still hers alone
        self.assertEqual(self.subscribers("symple:cluster:v2:room:c"), 1)

    @defer.inlineCallbacks
    def test_leaving_the_last_shared_room_forgets_each_other(self):
        alice, bob, carol = self.alice, self.bob, self.carol
        bob.send_json({"type": "join", "room": "a"})
        yield alice.expect(presence_of(bob, True))
        yield carol.expect(presence_of(bob, True))
        yield bob.expect(presence_of(carol, True))
        bob.send_json({"type": "join", "room": "c"})  # shares c with carol only
        yield bob.expect("join:ok")
        bob.send_json({"type": "leave", "room": "a"})
        yield bob.expect(presence_of(alice, False))
        yield alice.expect(presence_of(bob, False))
        yield self.settled({carol.session_id}, {carol.session_id},
                           {alice.session_id, bob.session_id})
        self.assertEqual(self.subscribers("symple:cluster:v2:room:a"), 2)
        bob.send_json({"type": "leave", "room": "c"})
        yield bob.expect(presence_of(carol, False))
        yield carol.expect(presence_of(bob, False))
        yield self.settled({carol.session_id}, set(), {alice.session_id})
        self.assertEqual(self.subscribers("symple:cluster:v2:room:c"), 1)
        self.assertEqual(self.subscribers("symple:cluster:v2:user:bob"), 1)
        alice.send_json({"type": "message", "to": bob.address, "data": "gone"})
        carol.send_json({"type": "message", "to": alice.address, "data": "marker"})
        yield alice.expect(is_message("marker"))
        self.assertEqual([f for f in bob.received if f.get("data") == "gone"], [])

    @defer.inlineCallbacks
    def test_sessions_of_one_user_share_the_user_room_across_processes(self):
        second = yield self.on(1, "alice")
        yield second.expect(presence_of(self.alice, True))
        yield self.alice.expect(presence_of(second, True))
        yield self.settled({self.carol.session_id, second.session_id},
                           {self.alice.session_id}, {self.alice.session_id})
        self.alice.send_json({"type": "message", "to": "alice", "data": "to myself"})
        yield second.expect(is_message("to myself"))


class RedisRestartTests(SharedRoomsTestCase):
    @defer.inlineCallbacks
    def test_mirrors_converge_after_a_redis_restart(self):
        alice, bob, carol = self.alice, self.bob, self.carol
        yield self.settled({carol.session_id}, set(), {alice.session_id})
        yield self.redis.stop()
        yield eventually(lambda: not any(s.router.bus.up for s in self.cluster.servers),
                         what="buses down")
        # meanwhile: carol leaves a, bob joins a; nobody else hears of it
        carol.send_json({"type": "leave", "room": "a"})
        yield carol.expect("leave:ok")
        bob.send_json({"type": "join", "room": "a"})
        yield bob.expect("join:ok")
        yield self.redis.start()
        yield eventually(lambda: all(s.router.bus.up for s in self.cluster.servers),
                         seconds=20, what="buses up")
        yield self.settled({bob.session_id}, {alice.session_id}, set())
        yield alice.expect(presence_of(bob, True))
        yield bob.expect(presence_of(alice, True))
        bob.send_json({"type": "message", "to": "a", "data": "after"})
        yield alice.expect(is_message("after"))
        self.assertEqual([f for f in carol.received if f.get("data") == "after"], [])


class FirstRoundTripTests(PeersMixin, unittest.TestCase):
    """``user|id`` frames sent right after ``welcome``, before the sender's process
    has heard of the room's other members (the WebRTC caller's ``call:init``)."""

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield private_redis(self)
        self.cluster = InProcessCluster(self.redis.url, 2, node_timeout=3.0)
        self.addCleanup(self.cluster.stop)
        yield self.cluster.start()
        yield eventually(lambda: self.cluster.nodes_known(2), what="nodes to meet")

    def drops(self, index: int, reason: str) -> float:
        return self.cluster.servers[index].router.metrics.registry.get_sample_value(
            "symple_drops_total", {"reason": reason}) or 0

    @defer.inlineCallbacks
    def test_direct_frames_sent_at_once_reach_a_peer_sharing_a_room_exactly_once(self):
        ports = self.cluster.ports
        b = self.cluster.servers[1].router
        bob = yield self.peer_on(ports[1], "bob", rooms=["r"])
        eve = yield self.peer_on(ports[1], "eve", rooms=["s", "alice"])  # named room "alice"
        gone = yield self.peer_on(ports[1], "bob", rooms=["r"])
        gone.send_json({"type": "close"})
        yield gone.wait_closed()
        yield eventually(lambda: gone.session_id not in b.sessions, what="bob's second gone")
        alice = yield self.peer_on(ports[0], "alice", rooms=["r"])
        # process 0 has not heard of bob yet: its first member of r just entered r
        self.assertNotIn(bob.session_id, self.cluster.servers[0].router.sessions)
        texts = ["call:init", "offer", "candidate"]
        for text in texts:
            alice.send_json({"type": "message", "to": bob.address, "data": text})
        alice.send_json({"type": "message", "to": eve.address, "data": "blocked"})
        alice.send_json({"type": "message", "to": gone.address, "data": "late"})
        alice.send_json({"type": "message", "to": "nobody|x1", "data": "void"})
        alice.send_json({"type": "message", "to": bob.address, "data": "marker"})
        for text in texts + ["marker"]:
            yield bob.expect(is_message(text))
        # one publisher connection: process 1 has handled every earlier frame
        self.assertEqual([f["data"] for f in bob.received if f.get("type") == "message"],
                         texts + ["marker"])
        self.assertEqual([f for f in eve.received if f.get("type") == "message"], [])
        yield eventually(lambda: self.drops(1, "permission") >= 1, what="eve's frame refused")
        yield eventually(lambda: self.drops(1, "gone") >= 1, what="the closed session's")
        yield eventually(lambda: self.drops(0, "no_recipient") >= 1, what="nobody's")
        # blocked traffic is dropped silently (docs/spec.md §4)
        before = yield alice.round_trip()
        self.assertEqual([f for f in alice.received + before if f.get("type") == "error"], [])
