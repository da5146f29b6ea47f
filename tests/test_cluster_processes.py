"""Real ``twistd symple`` processes over a private redis-server: failures and recovery."""

from __future__ import annotations

import os
import signal

import orjson
from twisted.internet import defer, reactor
from twisted.internet.task import LoopingCall, deferLater
from twisted.trial import unittest

from symple_tx.cluster import redis_bus

from tests.cluster_support import (Node, PeersMixin, eventually, is_message, presence_of,
                                   private_redis)
from tests.support import with_timeout

#: --node-timeout of these processes: a silent process is declared dead after it.
NODE_TIMEOUT = 2.0


#: A node timeout no test waits for: what happens sooner was announced, not timed out.
LONG_NODE_TIMEOUT = 120.0

#: Seconds to wait for a signalled process to act: a loaded machine schedules it late.
SIGNAL_WAIT = 20.0


class ProcessClusterTestCase(PeersMixin, unittest.TestCase):
    count = 2
    node_timeout = NODE_TIMEOUT

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield private_redis(self)
        self.processes = [Node(self, self.redis.url, "--node-timeout", str(self.node_timeout))
                          for _ in range(self.count)]
        yield defer.gatherResults([p.start() for p in self.processes], consumeErrors=True)

    def on(self, index: int, user: str, **fields):
        return self.peer_on(self.processes[index].port, user, **fields)

    @defer.inlineCallbacks
    def connected_pair(self, a: int = 0, b: int = 1):
        """alice on process ``a`` and bob on process ``b``, seeing each other."""
        alice = yield self.on(a, "alice", rooms=["lobby"])
        bob = yield self.on(b, "bob", rooms=["lobby"])
        yield alice.expect(presence_of(bob, True))
        yield bob.expect(presence_of(alice, True))
        return alice, bob


class RoutingAcrossProcessesTests(ProcessClusterTestCase):
    count = 3

    @defer.inlineCallbacks
    def test_routing_and_presence_with_peers_on_three_processes(self):
        alice = yield self.on(0, "alice", rooms=["lobby"])
        bob = yield self.on(1, "bob", rooms=["lobby"])
        carol = yield self.on(2, "carol", rooms=["lobby"])
        dave = yield self.on(2, "dave")
        for peer, others in ((alice, (bob, carol)), (bob, (alice, carol)),
                             (carol, (alice, bob))):
            for other in others:  # snapshots come in no particular order
                yield received(peer, presence_of(other, True))
        alice.send_json({"type": "message", "data": "to all"})
        yield bob.expect(is_message("to all"))
        yield carol.expect(is_message("to all"))
        bob.send_json({"type": "message", "to": carol.session_id, "data": "direct"})
        yield carol.expect(is_message("direct"))
        dave.send_json({"type": "join", "room": "lobby"})
        for peer in (alice, bob, carol):
            yield peer.expect(presence_of(dave, True))
        for peer in (alice, bob):
            yield received(dave, presence_of(peer, True))
        dave.send_json({"type": "leave", "room": "lobby"})
        yield alice.expect(presence_of(dave, False))
        yield bob.expect(presence_of(dave, False))
        bob.send_json({"type": "close"})
        yield alice.expect(presence_of(bob, False))
        yield carol.expect(presence_of(bob, False))
        alice.send_json({"type": "message", "to": carol.address, "data": "marker"})
        yield carol.expect(is_message("marker"))
        self.assertEqual(sum(1 for f in carol.received if is_message("to all")(f)), 1)
        self.assertEqual(sum(1 for f in carol.received if presence_of(bob, False)(f)), 1)


class FailureTests(ProcessClusterTestCase):
    count = 3

    @defer.inlineCallbacks
    def test_killed_process_sessions_go_offline_within_the_node_timeout(self):
        alice, bob = yield self.connected_pair(0, 1)
        carol = yield self.on(2, "carol", rooms=["lobby"])
        yield bob.expect(presence_of(carol, True))
        yield received(carol, presence_of(bob, True))
        self.processes[1].kill()
        killed_at = reactor.seconds()
        yield alice.expect(presence_of(bob, False))
        yield carol.expect(presence_of(bob, False))
        elapsed = reactor.seconds() - killed_at
        self.assertLess(elapsed, NODE_TIMEOUT + 1.0)  # the bound, plus scheduling slack
        # the survivors still talk to each other
        alice.send_json({"type": "message", "data": "still here"})
        yield carol.expect(is_message("still here"))


class GracefulStopTests(ProcessClusterTestCase):
    # No process is declared dead for silence during the test, so bob's offline
    # presence can only come from his process's goodbye (with the 2 s timeout a
    # loaded machine could not tell the two apart, nor keep heartbeats on time).
    node_timeout = LONG_NODE_TIMEOUT

    @defer.inlineCallbacks
    def test_sigterm_announces_sessions_offline_before_exiting(self):
        alice, bob = yield self.connected_pair(0, 1)
        self.processes[1].process.signal("TERM")
        shutdown = yield bob.expect(lambda f: f.get("type") == "event", "the shutdown event",
                                    SIGNAL_WAIT)
        self.assertEqual(shutdown["name"], "shutdown")
        yield alice.expect(presence_of(bob, False), "bob offline", SIGNAL_WAIT)
        self.assertNotIn("went silent", self.processes[0].process.text)
        yield self.processes[1].exited()


class RedisOutageTests(ProcessClusterTestCase):
    @defer.inlineCallbacks
    def test_processes_keep_serving_and_recover_after_redis_restarts(self):
        alice, bob = yield self.connected_pair(0, 1)
        carol = yield self.on(0, "carol", rooms=["lobby"])
        yield bob.expect(presence_of(carol, True))
        yield self.redis.stop()
        code, body = yield eventually_health(self.processes[0], 503)
        self.assertIn("redis", orjson.loads(body)["problems"][0])
        # local traffic still flows during the outage
        alice.send_json({"type": "message", "to": carol.address, "data": "local"})
        yield carol.expect(is_message("local"))
        alice.send_json({"type": "message", "to": bob.address, "data": "lost"})
        yield eventually_metric(self, 0, "symple_bus_lost_total", 1)
        # the others are announced offline once they are silent for the timeout
        yield alice.expect(presence_of(bob, False))
        yield bob.expect(presence_of(alice, False))
        yield self.redis.start()
        yield self.processes[0].healthy()
        yield self.processes[1].healthy()
        # everything is re-registered: presence comes back and frames cross again
        yield alice.expect(presence_of(bob, True))
        yield bob.expect(presence_of(alice, True))
        yield bob.expect(presence_of(carol, True))
        alice.send_json({"type": "message", "to": bob.address, "data": "after"})
        yield bob.expect(is_message("after"))
        bob.send_json({"type": "message", "data": "back"})
        yield carol.expect(is_message("back"))
        self.assertEqual([f for f in bob.received if f.get("data") == "lost"], [])
        # a backend's frame on symple:broadcast reaches sessions on every process
        yield eventually(lambda: self.redis.command("PUBSUB", "NUMSUB", "symple:broadcast")
                         .split() == ["symple:broadcast", "2"], what="broadcast subscribers")
        frame = {"type": "message", "from": "backend", "to": "lobby", "data": "announcement"}
        self.redis.command("PUBLISH", "symple:broadcast", orjson.dumps(frame).decode())
        for peer in (alice, bob, carol):
            got = yield peer.expect(is_message("announcement"))
            self.assertEqual(got["from"], "backend")
        reconnects = yield self.processes[0].metric("symple_bus_reconnects_total")
        self.assertGreaterEqual(reconnects, 1)


    @defer.inlineCallbacks
    def test_traffic_through_a_redis_restart(self):
        """Local frames all arrive; frames across processes arrive at most once."""
        alice, bob = yield self.connected_pair(0, 1)
        carol = yield self.on(0, "carol", rooms=["lobby"])
        yield bob.expect(presence_of(carol, True))
        numbers = iter(range(10_000))
        sent: list[str] = []

        def send() -> None:
            text = f"n{next(numbers)}"
            sent.append(text)
            alice.send_json({"type": "message", "data": text})

        stream = LoopingCall(send)
        stream.start(0.1)
        self.addCleanup(lambda: stream.running and stream.stop())
        yield eventually(lambda: len(sent) >= 5, what="traffic before the outage")
        yield self.redis.stop()
        # Both sides have dropped the other before Redis returns; otherwise a loaded
        # machine may bring Redis back before bob's process gave up on alice's, and
        # bob, who never saw her go, would wait for her return for ever.
        yield alice.expect(presence_of(bob, False))
        yield bob.expect(presence_of(alice, False))
        yield self.redis.start()
        yield bob.expect(presence_of(alice, True))
        yield alice.expect(presence_of(bob, True))  # alice's process routes to bob again
        first_after = len(sent)
        yield eventually(lambda: len(sent) >= first_after + 5, what="traffic after recovery")
        stream.stop()
        yield self.marker_to(alice, carol, bob)
        got_by = {peer: [f["data"] for f in peer.received if f.get("type") == "message"
                         and f["data"] in sent] for peer in (carol, bob)}
        self.assertEqual(got_by[carol], sent)  # local: every frame, in order, once
        self.assertEqual(len(got_by[bob]), len(set(got_by[bob])))  # remote: at most once
        self.assertEqual(got_by[bob], sorted(got_by[bob], key=sent.index))
        self.assertTrue(set(sent[first_after:]) <= set(got_by[bob]),
                        "frames sent after recovery were lost")
        self.assertEqual([f for p in (alice, bob, carol) for f in p.received
                          if f.get("type") == "error"], [])

    @defer.inlineCallbacks
    def marker_to(self, sender, *peers):
        for peer in peers:
            sender.send_json({"type": "message", "to": peer.address, "data": "end"})
            yield peer.expect(is_message("end"))


def received(peer, match) -> defer.Deferred:
    """Fires once ``peer`` has received a frame that matches, in any order."""
    return eventually(lambda: any(match(f) for f in peer.received), what="a frame")


@defer.inlineCallbacks
def eventually_health(process: Node, code: int):
    result = []

    @defer.inlineCallbacks
    def check():
        answer = yield process.health()
        if answer[0] == code:
            result.append(answer)

    deadline = reactor.seconds() + 10
    while not result:
        yield check()
        if reactor.seconds() > deadline:
            raise AssertionError(f"/healthz never answered {code}")
    return result[0]


@defer.inlineCallbacks
def eventually_metric(test, index: int, name: str, at_least: float):
    deadline = reactor.seconds() + 10
    while True:
        value = yield test.processes[index].metric(name)
        if value >= at_least:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"{name} stayed at {value}")


class DefaultFailureDetectionTests(ProcessClusterTestCase):
    """With the default --node-timeout (4 s): a crash is announced within 5 s, and a
    process whose event loop stalls for 2 s raises no false alarm."""

    count = 2

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield private_redis(self)
        self.processes = [Node(self, self.redis.url) for _ in range(self.count)]
        yield defer.gatherResults([p.start() for p in self.processes], consumeErrors=True)

    @defer.inlineCallbacks
    def test_sigkill_is_announced_within_five_seconds(self):
        alice, bob = yield self.connected_pair(0, 1)
        self.processes[1].kill()
        killed_at = reactor.seconds()
        yield with_timeout(alice.expect(presence_of(bob, False)), 6.0, "bob offline")
        self.assertLess(reactor.seconds() - killed_at, 5.0)

    @defer.inlineCallbacks
    def test_a_two_second_stall_is_no_false_alarm(self):
        alice, bob = yield self.connected_pair(0, 1)
        pid = self.processes[1].process.transport.pid
        os.kill(pid, signal.SIGSTOP)  # its event loop (and everything else) stops
        try:
            yield deferLater(reactor, 2.0, lambda: None)
        finally:
            os.kill(pid, signal.SIGCONT)
        # Past the point where a shorter timeout would have fired, both ways work.
        yield deferLater(reactor, redis_bus.NODE_TIMEOUT - 2.0 + 0.5, lambda: None)
        alice.send_json({"type": "message", "to": bob.address, "data": "after the stall"})
        yield bob.expect(is_message("after the stall"))
        bob.send_json({"type": "message", "to": alice.address, "data": "and back"})
        yield alice.expect(is_message("and back"))
        self.assertEqual([f for f in alice.received if presence_of(bob, False)(f)], [])
        self.assertEqual([f for f in bob.received if presence_of(alice, False)(f)], [])
