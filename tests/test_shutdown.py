"""Graceful shutdown (docs/spec.md §8) of a real ``twistd -n symple`` process."""

from __future__ import annotations

import signal

import orjson
from twisted.internet import defer, reactor
from twisted.internet.error import ConnectError
from twisted.internet.task import deferLater
from twisted.web.client import ResponseNeverReceived

from symple_tx import wire
from tests.support import (ServerTestCase, TestPeer, free_port, http_get, spawn_twistd,
                           wait_serving)

SHUTDOWN = orjson.loads(wire.SHUTDOWN_EVENT)


class ShutdownTestCase(ServerTestCase):
    """Peers connect to a ``twistd`` child instead of an in-process server."""

    drain_timeout = 3.0

    @defer.inlineCallbacks
    def setUp(self):
        self.serve_peers_on(free_port())
        self.process = spawn_twistd(self, [
            "symple", "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--drain-timeout", str(self.drain_timeout), "--no-demo"])
        yield wait_serving(self.process, self.port)

    def stop_server(self) -> None:
        """The child is stopped by the test itself or killed at cleanup by spawn_twistd."""

    @defer.inlineCallbacks
    def wait_exit(self, signal: int):
        """The child exits by ``signal``, as twistd does after a clean stop."""
        yield self.process.wait(self.drain_timeout + 5)
        self.assertEqual((self.process.exit_code, self.process.exit_signal), (None, signal),
                         self.process.text)
        self.assertNotIn("Traceback", self.process.text)

    @defer.inlineCallbacks
    def assert_goodbye(self, peer: TestPeer):
        """``peer`` gets the shutdown event, then close 1001, and nothing else."""
        event = yield peer.expect("event")
        self.assertEqual(event, SHUTDOWN)
        code, _ = yield peer.wait_closed()
        self.assertEqual(code, 1001)
        self.assertEqual(peer.drain(), [])


class SignalTests(ShutdownTestCase):
    @defer.inlineCallbacks
    def test_sigterm_says_goodbye_to_every_peer_and_exits(self):
        alice = yield self.peer("alice", rooms=["lobby"])
        bob = yield self.peer("bob", rooms=["lobby"])
        yield alice.expect("presence")
        yield self.settle(alice, bob)
        idle = yield self.connect()  # not authenticated yet: told as well
        sent_at = reactor.seconds()
        self.process.signal("TERM")
        for peer in (alice, bob, idle):
            yield self.assert_goodbye(peer)
        yield self.wait_exit(signal.SIGTERM)
        self.assertLess(self.process.ended_at - sent_at, self.drain_timeout)
        self.assertNotIn("Drain timeout", self.process.text)

    @defer.inlineCallbacks
    def test_sigint_does_the_same(self):
        alice = yield self.peer("alice")
        self.process.signal("INT")
        yield self.assert_goodbye(alice)
        yield self.wait_exit(signal.SIGINT)

    @defer.inlineCallbacks
    def test_new_connections_are_refused_once_draining(self):
        alice = yield self.peer("alice")
        alice.transport.pauseProducing()  # holds the drain open for a while
        self.process.signal("TERM")

        @defer.inlineCallbacks
        def refused():
            try:
                yield http_get(f"http://127.0.0.1:{self.port}/healthz")
            except (ConnectError, ResponseNeverReceived):  # refused, or closed while accepted
                return True
            return False
        deadline = reactor.seconds() + 5
        while not (yield refused()):
            self.assertLess(reactor.seconds(), deadline, "still accepting while draining")
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(self.process.ended.called)
        alice.transport.resumeProducing()
        yield self.assert_goodbye(alice)
        yield self.wait_exit(signal.SIGTERM)


class StubbornPeerTests(ShutdownTestCase):
    drain_timeout = 1.0

    @defer.inlineCallbacks
    def test_peer_ignoring_the_close_does_not_hold_exit_past_the_drain_timeout(self):
        polite = yield self.peer("polite")
        stubborn = yield self.peer("stubborn")
        yield self.settle(polite, stubborn)
        stubborn.transport.pauseProducing()  # never reads the event nor the close
        sent_at = reactor.seconds()
        self.process.signal("TERM")
        yield self.assert_goodbye(polite)
        yield self.wait_exit(signal.SIGTERM)
        elapsed = self.process.ended_at - sent_at
        self.assertIn("Drain timeout: aborting 1 connections", self.process.text)
        self.assertGreaterEqual(elapsed, self.drain_timeout * 0.9)
        # The log proves the drain timeout, not a later close timeout, ended it.
        self.assertLess(elapsed, self.drain_timeout + 1.5, self.process.text)
        stubborn.transport.resumeProducing()
        yield stubborn.wait_closed()
        self.assertNotEqual(stubborn.close_code, 1000)
