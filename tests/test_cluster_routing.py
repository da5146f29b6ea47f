"""Routing and presence across processes: in-process servers sharing a private Redis.

Each server has its own router, bus and Redis connections, exactly as a
separate process would; keeping them in one process keeps these tests fast.
``test_cluster_processes`` runs the same kind of traffic between real
``twistd symple`` processes.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from tests.cluster_support import (InProcessCluster, PeersMixin, eventually, is_message,
                                   metric_sum, presence_of, private_redis)


def count(peer, match) -> int:
    return sum(1 for f in peer.received if match(f))


class ClusterTestCase(PeersMixin, unittest.TestCase):
    nodes = 3

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield private_redis(self)
        yield self.start_cluster(self.redis.url, node_timeout=3.0)

    @defer.inlineCallbacks
    def start_cluster(self, redis_url: str, **settings):
        """``self.nodes`` in-process servers on ``redis_url``, once they all know each other."""
        self.cluster = InProcessCluster(redis_url, self.nodes, **settings)
        self.addCleanup(self.cluster.stop)
        yield self.cluster.start()
        yield eventually(lambda: self.cluster.nodes_known(self.nodes), what="nodes to meet")

    def on(self, index: int, user: str, **fields):
        return self.peer_on(self.cluster.ports[index], user, **fields)

    @defer.inlineCallbacks
    def marker(self, sender, *recipients, text="marker"):
        """Send ``text`` to each recipient after everything ``sender`` sent before.

        One process publishes in order, so a recipient that got the marker has
        got every earlier frame of the sender too.
        """
        for peer in recipients:
            sender.send_json({"type": "message", "to": peer.address, "data": text})
        for peer in recipients:
            yield peer.expect(is_message(text), text)


class RoutingTests(ClusterTestCase):
    @defer.inlineCallbacks
    def test_broadcast_reaches_every_process_once(self):
        alice = yield self.on(0, "alice", rooms=["lobby", "team"])
        bob = yield self.on(1, "bob", rooms=["lobby", "team"])
        carol = yield self.on(2, "carol", rooms=["lobby"])
        dave = yield self.on(1, "dave", rooms=["elsewhere"])
        yield bob.expect(presence_of(carol, True))
        yield alice.expect(presence_of(carol, True))
        alice.send_json({"type": "message", "data": "hello all"})
        first = yield bob.expect(is_message("hello all"))
        self.assertEqual(first["from"], alice.address)
        yield carol.expect(is_message("hello all"))
        yield self.marker(alice, bob, carol)
        self.assertEqual(count(bob, is_message("hello all")), 1)
        self.assertEqual(count(carol, is_message("hello all")), 1)
        self.assertEqual(count(alice, is_message("hello all")), 0)
        self.assertEqual(count(dave, is_message("hello all")), 0)

    @defer.inlineCallbacks
    def test_room_array_and_room_name(self):
        alice = yield self.on(0, "alice", rooms=["a", "b"])
        bob = yield self.on(1, "bob", rooms=["a", "b"])
        carol = yield self.on(2, "carol", rooms=["b"])
        dave = yield self.on(2, "dave", rooms=["c", "a"])
        yield alice.expect(presence_of(dave, True))
        alice.send_json({"type": "message", "to": ["a", "b", "c"], "data": "rooms"})
        for peer in (bob, carol, dave):
            yield peer.expect(is_message("rooms"))
        alice.send_json({"type": "message", "to": "b", "data": "room b"})
        for peer in (bob, carol):
            yield peer.expect(is_message("room b"))
        yield self.marker(alice, bob, carol, dave)
        self.assertEqual(count(bob, is_message("rooms")), 1)
        self.assertEqual(count(dave, is_message("room b")), 0)

    @defer.inlineCallbacks
    def test_room_name_from_outside_reaches_only_members_sharing_a_room(self):
        alice = yield self.on(0, "alice", rooms=["x"])
        bob = yield self.on(1, "bob", rooms=["x", "secret"])
        carol = yield self.on(2, "carol", rooms=["secret"])
        yield bob.expect(presence_of(carol, True))
        alice.send_json({"type": "message", "to": "secret", "data": "knock"})
        yield bob.expect(is_message("knock"))
        yield self.marker(alice, bob)
        yield self.marker(bob, carol)
        self.assertEqual(count(carol, is_message("knock")), 0)

    @defer.inlineCallbacks
    def test_direct_addresses_and_permission(self):
        alice = yield self.on(0, "alice", rooms=["x"])
        bob = yield self.on(1, "bob", rooms=["x"])
        eve = yield self.on(2, "eve", rooms=["y"])
        mallory = yield self.on(0, "mallory", rooms=["y"])
        yield eve.expect(presence_of(mallory, True))
        alice.send_json({"type": "message", "to": bob.address, "data": "full"})
        alice.send_json({"type": "message", "to": bob.session_id, "data": "bare"})
        alice.send_json({"type": "message", "to": "bob", "data": "user room"})
        for text in ("full", "bare", "user room"):
            yield bob.expect(is_message(text))
        alice.send_json({"type": "message", "to": eve.address, "data": "blocked"})
        yield self.marker(alice, bob)
        yield self.marker(mallory, eve)
        self.assertEqual(count(eve, is_message("blocked")), 0)

    @defer.inlineCallbacks
    def test_signalling_between_sessions_of_one_user_on_two_processes(self):
        phone = yield self.on(0, "alice")
        laptop = yield self.on(1, "alice")
        yield phone.expect(presence_of(laptop, True))
        phone.send_json({"type": "message", "subtype": "call:offer", "to": laptop.address,
                         "data": {"sdp": "v=0"}})
        offer = yield laptop.expect(lambda f: f.get("subtype") == "call:offer")
        self.assertEqual(offer["data"], {"sdp": "v=0"})


class PresenceTests(ClusterTestCase):
    @defer.inlineCallbacks
    def test_snapshot_holds_peers_of_every_process_with_latest_data(self):
        alice = yield self.on(0, "alice", rooms=["lobby"])
        bob = yield self.on(1, "bob", rooms=["lobby"])
        yield alice.expect(presence_of(bob, True))
        yield bob.expect(presence_of(alice, True))  # a round trip after its welcome
        bob.send_json({"type": "presence", "data": {"capabilities": {"video": True}}})
        update = yield alice.expect(lambda f: f.get("type") == "presence"
                                    and "capabilities" in f["data"])
        self.assertEqual(update["data"]["id"], bob.session_id)
        carol = yield self.on(2, "carol", rooms=["lobby"])
        seen = {}
        for _ in range(2):
            frame = yield carol.expect("presence")
            seen[frame["data"]["user"]] = frame["data"]
        self.assertEqual(set(seen), {"alice", "bob"})
        self.assertEqual(seen["bob"]["capabilities"], {"video": True})

    @defer.inlineCallbacks
    def test_probe_is_answered_with_peers_of_other_processes(self):
        alice = yield self.on(0, "alice", rooms=["lobby"])
        bob = yield self.on(1, "bob", rooms=["lobby"])
        yield alice.expect(presence_of(bob, True))
        alice.send_json({"type": "presence", "probe": True, "data": {"status": "probing"}})
        answer = yield alice.expect(presence_of(bob, True))
        self.assertEqual(answer["from"], bob.address)
        forwarded = yield bob.expect(lambda f: f.get("type") == "presence"
                                     and f["data"].get("status") == "probing")
        self.assertEqual(forwarded["from"], alice.address)
        self.assertNotIn("probe", forwarded)
        self.assertEqual(count(alice, lambda f: f.get("type") == "presence"
                               and f["data"].get("status") == "probing"), 0)

    @defer.inlineCallbacks
    def test_join_and_leave_across_processes(self):
        alice = yield self.on(0, "alice")
        bob = yield self.on(1, "bob", rooms=["club"])
        alice.send_json({"type": "join", "room": "club"})
        yield alice.expect("join:ok")
        yield alice.expect(presence_of(bob, True))
        yield bob.expect(presence_of(alice, True))
        alice.send_json({"type": "message", "to": "club", "data": "in"})
        yield bob.expect(is_message("in"))
        bob.send_json({"type": "leave", "room": "club"})
        yield bob.expect("leave:ok")
        yield bob.expect(presence_of(alice, False))
        yield alice.expect(presence_of(bob, False))
        alice.send_json({"type": "message", "data": "gone?"})
        alice.send_json({"type": "join", "room": "club2"})
        yield alice.expect("join:ok")
        self.assertEqual(count(bob, is_message("gone?")), 0)

    @defer.inlineCallbacks
    def test_disconnect_is_announced_once_on_every_process(self):
        alice = yield self.on(0, "alice", rooms=["lobby"])
        bob = yield self.on(1, "bob", rooms=["lobby"])
        carol = yield self.on(2, "carol", rooms=["lobby"])
        yield bob.expect(presence_of(carol, True))
        yield alice.expect(presence_of(carol, True))
        carol.send_json({"type": "close"})
        yield alice.expect(presence_of(carol, False))
        yield bob.expect(presence_of(carol, False))
        yield self.marker(alice, bob)
        self.assertEqual(count(bob, presence_of(carol, False)), 1)
        self.assertEqual(count(alice, presence_of(carol, False)), 1)
        for server in self.cluster.servers:
            self.assertNotIn(carol.session_id, server.router.sessions)

    @defer.inlineCallbacks
    def test_new_process_mirrors_the_existing_sessions(self):
        alice = yield self.on(0, "alice", rooms=["lobby"])
        bob = yield self.on(1, "bob", rooms=["lobby"])
        yield alice.expect(presence_of(bob, True))
        yield self.cluster.add()
        yield eventually(lambda: self.cluster.nodes_known(self.nodes + 1), what="newcomer")
        newcomer = self.cluster.servers[-1].router
        # it holds no session, so it mirrors none ...
        self.assertEqual(newcomer.bus.remote_sessions(), 0)
        carol = yield self.on(self.nodes, "carol", rooms=["lobby"])
        users = set()
        for _ in range(2):
            frame = yield carol.expect("presence")
            users.add(frame["data"]["user"])
        self.assertEqual(users, {"alice", "bob"})
        # ... until one of its own shares a room with them
        self.assertEqual(newcomer.bus.remote_sessions(), 2)
        carol.send_json({"type": "message", "data": "from the newcomer"})
        yield alice.expect(is_message("from the newcomer"))
        yield bob.expect(is_message("from the newcomer"))

    @defer.inlineCallbacks
    def test_graceful_stop_announces_sessions_offline_at_once(self):
        alice = yield self.on(0, "alice", rooms=["lobby"])
        bob = yield self.on(1, "bob", rooms=["lobby"])
        yield alice.expect(presence_of(bob, True))
        started = self.cluster.servers[0].reactor.seconds()
        yield self.cluster.services[1].stopService()
        yield alice.expect(presence_of(bob, False))
        # well before the 3 s a silent process would take
        self.assertLess(self.cluster.servers[0].reactor.seconds() - started, 2.5)
        self.assertEqual(len(self.cluster.servers[0].router.bus.membership.nodes), 1)


class StoredSessionTests(ClusterTestCase):
    """Tokens in ``symple:session:<token>`` work on every process."""

    nodes = 2

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield private_redis(self)
        for token, user in (("t-alice", "alice"), ("t-bob", "bob")):
            self.redis.command("SET", f"symple:session:{token}",
                               f'{{"user": "{user}", "rooms": ["staff"]}}')
        yield self.start_cluster(self.redis.url, authentication=True)

    @defer.inlineCallbacks
    def test_stored_sessions_on_two_processes_share_their_rooms(self):
        alice = yield self.on(0, "whoever", token="t-alice", rooms=["ignored"])
        bob = yield self.on(1, "whoever", token="t-bob")
        self.assertEqual(alice.welcome["rooms"], ["alice", "staff"])
        yield alice.expect(presence_of(bob, True))
        yield bob.expect(presence_of(alice, True))
        bob.send_json({"type": "message", "to": "staff", "data": "hello staff"})
        got = yield alice.expect(is_message("hello staff"))
        self.assertEqual(got["from"], bob.address)


class CountTests(ClusterTestCase):
    nodes = 2

    @defer.inlineCallbacks
    def test_peer_counts_are_per_process(self):
        alice = yield self.on(0, "alice", rooms=["lobby"])
        bob = yield self.on(1, "bob", rooms=["lobby"])
        carol = yield self.on(1, "carol", rooms=["lobby"])
        yield alice.expect(presence_of(bob, True))
        yield alice.expect(presence_of(carol, True))
        for server, local in zip(self.cluster.servers, (1, 2)):
            self.assertEqual(len(server.router.sessions), 3)
            self.assertEqual(server.health.status()[1]["peers"], local)
            self.assertEqual(metric_sum(server.metrics.render().decode(), "symple_peers"), local)
            self.assertEqual(metric_sum(server.metrics.render().decode(), "symple_bus_nodes"), 2)


class PasswordAndDatabaseTests(ClusterTestCase):
    """A URL with a password and a database number reaches the same cluster."""

    nodes = 2

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield private_redis(self, password="s3cret:/@")
        yield self.start_cluster(f"redis://:s3cret%3A%2F%40@127.0.0.1:{self.redis.port}/3")

    @defer.inlineCallbacks
    def test_message_crosses(self):
        alice = yield self.on(0, "alice", rooms=["lobby"])
        bob = yield self.on(1, "bob", rooms=["lobby"])
        yield alice.expect(presence_of(bob, True))
        alice.send_json({"type": "message", "data": "with a password"})
        yield bob.expect(is_message("with a password"))
        alive = self.redis.command("-n", "3", "KEYS", "symple:cluster:alive:*").split()
        self.assertEqual(len(alive), 2)


class StopWithoutRedisTests(ClusterTestCase):
    nodes = 2

    @defer.inlineCallbacks
    def test_local_traffic_and_stop_without_redis(self):
        alice = yield self.on(0, "alice", rooms=["lobby"])
        carol = yield self.on(0, "carol", rooms=["lobby"])
        server = self.cluster.servers[0]
        yield self.redis.stop()
        yield eventually(lambda: not server.router.bus.up, what="the bus to notice")
        code, body = server.health.status()
        self.assertEqual((code, body["problems"]), (503, ["redis unreachable"]))
        alice.send_json({"type": "message", "data": "still local"})
        yield carol.expect(is_message("still local"))
        started = server.reactor.seconds()
        yield self.cluster.services[0].stopService()
        self.assertLess(server.reactor.seconds() - started, 5)


class ScalingTests(ClusterTestCase):
    """A routed frame costs one publish per process with recipients, and reaches no other."""

    @defer.inlineCallbacks
    def test_one_publish_per_process_with_recipients(self):
        sender = yield self.on(0, "sender", rooms=["room"])
        receivers = []
        for number in range(4):
            peer = yield self.on(1, f"r{number}", rooms=["room"])
            receivers.append(peer)
        bystander = yield self.on(2, "bystander", rooms=["elsewhere"])
        for peer in receivers:
            yield sender.expect(presence_of(peer, True))

        def deliveries(index: int, name: str) -> float:
            text = self.cluster.servers[index].metrics.render().decode()
            return metric_sum(text, f'symple_bus_{name}_total{{kind="delivery"}}')

        before = [(deliveries(i, "publishes"), deliveries(i, "receives")) for i in range(3)]
        for number in range(10):
            sender.send_json({"type": "message", "data": f"m{number}"})
        for peer in receivers:
            yield peer.expect(is_message("m9"))
        after = [(deliveries(i, "publishes"), deliveries(i, "receives")) for i in range(3)]
        self.assertEqual(after[0][0] - before[0][0], 10)  # not 40
        self.assertEqual(after[1][1] - before[1][1], 10)
        self.assertEqual(after[2][1] - before[2][1], 0)
        self.assertEqual(count(bystander, lambda f: f.get("type") == "message"), 0)
