"""User rooms are private (docs/protocol.md, "Rooms"), over real sockets.

A stranger who names another user's room, by ``join`` or in its auth
``rooms``, before or after that user connects, on one process or on
another process of a cluster, gets a *named* room of that name: it never
sees the user's presence, and nothing it sends reaches the user.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from tests.cluster_support import InProcessCluster, PeersMixin, eventually, private_redis
from tests.support import ServerTestCase, TestPeer, presences


def ids(frames: list[dict]) -> set[str]:
    """Session ids announced online among ``frames``."""
    return {f["data"]["id"] for f in presences(frames) if f["data"].get("online")}


class PrivacyChecks:
    """The checks, for peers on one process or spread over a cluster."""

    @defer.inlineCallbacks
    def assert_private(self, alice: TestPeer, alice2: TestPeer,
                       strangers: list[TestPeer]):
        """``strangers`` named "alice" one way or another; none of them meets alice."""
        everyone = [alice, alice2, *strangers]
        yield self.quiesce(everyone)
        for stranger in strangers:
            for target in ("alice", alice.address, alice.session_id, ["alice"]):
                stranger.send_json({"type": "message", "to": target, "data": "psst"})
            stranger.send_json({"type": "message", "data": "psst"})
            stranger.send_json({"type": "presence", "probe": True, "to": "alice"})
            stranger.send_json({"type": "presence", "probe": True})
        yield self.quiesce(everyone)
        strangers_ids = {s.session_id for s in strangers}
        for peer in (alice, alice2):
            self.assertEqual(ids(peer.received) & strangers_ids, set(),
                             "a stranger's presence reached alice")
            self.assertFalse([f for f in peer.received if f.get("data") == "psst"],
                             "a stranger's message reached alice")
        for stranger in strangers:
            self.assertEqual(ids(stranger.received) & {alice.session_id, alice2.session_id},
                             set(), "alice's presence reached a stranger")
            self.assertFalse([f for f in stranger.received if f.get("type") == "error"])
            # The strangers share the named room "alice" with each other.
            others = {s.session_id for s in strangers if s is not stranger}
            self.assertEqual(ids(stranger.received) & others, others)
        # Alice's sessions still share her user room.
        self.assertIn(alice2.session_id, ids(alice.received))
        self.assertIn(alice.session_id, ids(alice2.received))
        alice.send_json({"type": "message", "to": "alice", "data": "note to self"})
        got = yield alice2.expect(lambda f: f.get("data") == "note to self", "own user room")
        self.assertEqual(got["from"], alice.address)


class SingleProcessTests(PrivacyChecks, ServerTestCase):
    def quiesce(self, peers):
        return self.collect(*peers)

    @defer.inlineCallbacks
    def test_joins_and_auth_rooms_naming_a_user_never_reach_her(self):
        early = yield self.peer("mallory")
        early.send_json({"type": "join", "room": "alice", "id": "j"})
        yield early.expect("join:ok")
        alice = yield self.peer("alice", rooms=["lobby"])
        late = yield self.peer("trudy")
        late.send_json({"type": "join", "room": "alice"})
        listed = yield self.peer("eve", rooms=["alice"])
        self.assertEqual(listed.welcome["rooms"], ["eve", "alice"])
        alice2 = yield self.peer("alice")
        yield self.assert_private(alice, alice2, [early, late, listed])

    @defer.inlineCallbacks
    def test_a_user_joining_her_own_name_stays_in_her_user_room(self):
        stranger = yield self.peer("mallory", rooms=["alice"])
        alice = yield self.peer("alice")
        alice.send_json({"type": "join", "room": "alice", "id": 1})
        ack = yield alice.expect("join:ok")
        self.assertEqual(ack, {"type": "join:ok", "room": "alice", "id": 1})
        yield self.collect(alice, stranger)
        self.assertNotIn(stranger.session_id, ids(alice.received))
        self.assertNotIn(alice.session_id, ids(stranger.received))
        router = self.server.router
        self.assertEqual({s.id for s in router.rooms["alice"]}, {stranger.session_id})
        self.assertEqual({s.id for s in router.users["alice"]}, {alice.session_id})


class ClusterTests(PrivacyChecks, PeersMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        redis = yield private_redis(self)
        self.cluster = InProcessCluster(redis.url, 2)
        self.addCleanup(self.cluster.stop)
        yield self.cluster.start()
        yield eventually(lambda: self.cluster.nodes_known(2), what="nodes to meet")

    def on(self, index: int, user: str, **fields):
        return self.peer_on(self.cluster.ports[index], user, **fields)

    @defer.inlineCallbacks
    def quiesce(self, peers):
        """Every process mirrors the same sessions and rooms (here each session
        shares a room with one on each process), and every echo is back."""
        routers = [server.router for server in self.cluster.servers]

        def same_view() -> bool:
            views = [({s.id: sorted(s.rooms) for s in r.sessions.values()},
                      {u: {s.id for s in m} for u, m in r.users.items()}) for r in routers]
            return all(view == views[0] for view in views) \
                and len(views[0][0]) == len(peers)
        yield eventually(same_view, what="processes to agree")
        for _ in range(2):
            for peer in peers:
                yield peer.round_trip()

    @defer.inlineCallbacks
    def test_strangers_on_either_process_never_reach_her(self):
        early = yield self.on(0, "mallory")
        early.send_json({"type": "join", "room": "alice"})
        yield early.expect("join:ok")
        alice = yield self.on(1, "alice", rooms=["lobby"])
        late = yield self.on(1, "trudy")
        late.send_json({"type": "join", "room": "alice"})
        listed = yield self.on(0, "eve", rooms=["alice"])
        alice2 = yield self.on(0, "alice")
        yield self.assert_private(alice, alice2, [early, late, listed])
