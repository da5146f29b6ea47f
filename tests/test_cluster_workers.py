"""``twistd symple --workers N``: one port served by N processes that act as one server."""

from __future__ import annotations

import os

import orjson
from twisted.internet import defer, reactor, ssl
from twisted.internet.task import deferLater
from twisted.trial import unittest
from twisted.web.client import BrowserLikePolicyForHTTPS

from symple_tx.redis import RedisAddress
from symple_tx.redis.connect import Subscription
from symple_tx.tap import SympleOptions
from tests.cluster_support import (SOURCE_ROOT, PeersMixin, eventually, is_message,
                                   private_redis)
from tests.support import (LoopbackPolicy, clean_environment, free_port, http_get,
                           self_signed_cert, spawn_twistd, wait_serving)


class OptionTests(unittest.TestCase):
    def test_workers_need_redis(self):
        with self.assertRaises(Exception) as caught:
            SympleOptions(environ={}).parseOptions(["--workers", "2"])
        self.assertIn("--workers needs --redis", str(caught.exception))

    def test_workers_from_command_line_and_environment(self):
        options = SympleOptions(environ={"SYMPLE_WORKERS": "3"})
        options.parseOptions(["--redis", "redis://127.0.0.1:6379"])
        self.assertEqual(options["workers"], 3)
        options = SympleOptions(environ={})
        options.parseOptions(["--redis", "redis://127.0.0.1:6379", "--workers", "2"])
        self.assertEqual(options["workers"], 2)


class ControlWatcher:
    """Reads the lobby's channel: which process opened which session there."""

    def __init__(self, url: str) -> None:
        self.node_of: dict[str, str] = {}
        self.subscribed = False
        self.connection = Subscription(RedisAddress.parse(url), listeners=[self])
        self.connection.add("symple:cluster:v2:room:lobby", self.received)
        self.connection.start()

    def ready(self, connection, protocol) -> None:
        self.subscribed = True

    def lost(self, connection, protocol) -> None:
        self.subscribed = False

    def failed(self, connection, why) -> None:
        pass

    def received(self, message: bytes) -> None:
        event = orjson.loads(message)
        if event.get("op") == "open":
            self.node_of[event["s"]["id"]] = event["node"]

    def stop(self):
        return self.connection.stop()


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found.update(int(p) for p in f.read().split())
    return found


class WorkersTests(PeersMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield private_redis(self)
        self.watcher = ControlWatcher(self.redis.url)
        self.addCleanup(self.watcher.stop)
        yield eventually(lambda: self.watcher.subscribed, what="lobby channel")
        self.port = free_port()
        self.process = spawn_twistd(
            self, ["symple", "--workers", "2", "--redis", self.redis.url, "--no-demo",
                   "--listen", f"tcp:{self.port}:interface=127.0.0.1", "--drain-timeout", "2"],
            env=clean_environment(PYTHONPATH=SOURCE_ROOT))
        yield wait_serving(self.process, self.port, seconds=20)
        yield eventually(self.both_workers_up, seconds=20, what="two workers on the bus")

    def live_workers(self) -> set[int]:
        """The supervisor's two workers, each checked alive first, so that a later
        "none is alive" says the supervisor stopped them, not that none ever ran."""
        workers = children(self.process.transport.pid)
        self.assertEqual(len(workers), 2, f"workers: {workers}")
        self.assertEqual([pid for pid in workers if not alive(pid)], [])
        return workers

    def both_workers_up(self) -> bool:
        return self.redis.command("PUBSUB", "NUMSUB", "symple:cluster:v2:control").split()[1] == "2"

    @defer.inlineCallbacks
    def peers_on_two_workers(self):
        """Connect until two sessions are held by different workers."""
        peers = []
        for number in range(40):
            peer = yield self.peer_on(self.port, f"user{number}", rooms=["lobby"])
            yield eventually(lambda: peer.session_id in self.watcher.node_of, what="open event")
            for other in peers:
                if self.watcher.node_of[other.session_id] != \
                        self.watcher.node_of[peer.session_id]:
                    return other, peer
            peers.append(peer)
        raise AssertionError("every connection went to the same worker")

    @defer.inlineCallbacks
    def test_one_port_two_processes_and_a_message_crosses(self):
        first, second = yield self.peers_on_two_workers()
        first.send_json({"type": "message", "to": second.address, "data": "across"})
        got = yield second.expect(is_message("across"))
        self.assertEqual(got["from"], first.address)

    @defer.inlineCallbacks
    def test_a_dead_worker_is_restarted(self):
        workers = self.live_workers()
        victim = sorted(workers)[0]
        os.kill(victim, 9)
        yield eventually(lambda: len(children(self.process.transport.pid) - {victim}) == 2,
                         seconds=15, what="a replacement worker")
        yield eventually(self.both_workers_up, seconds=20, what="the replacement on the bus")
        first, second = yield self.peers_on_two_workers()
        second.send_json({"type": "message", "to": first.address, "data": "again"})
        yield first.expect(is_message("again"))

    @defer.inlineCallbacks
    def test_sigterm_stops_every_worker(self):
        workers = self.live_workers()
        self.process.signal("TERM")
        yield self.process.wait(20)
        self.assertEqual([pid for pid in workers if alive(pid)], [])

    @defer.inlineCallbacks
    def test_workers_stop_when_the_supervisor_is_killed(self):
        workers = self.live_workers()
        self.process.signal("KILL")
        yield eventually(lambda: not any(alive(pid) for pid in workers), seconds=15,
                         what="orphaned workers to stop")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read()
    except FileNotFoundError:
        return False


class TlsWorkersTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_workers_serve_tls_on_the_inherited_socket(self):
        redis = yield private_redis(self)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        key, cert = self_signed_cert(directory)
        port = free_port()
        process = spawn_twistd(
            self, ["symple", "--workers", "2", "--redis", redis.url, "--no-demo",
                   "--listen", f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"],
            env=clean_environment(PYTHONPATH=SOURCE_ROOT))
        with open(cert, "rb") as f:
            policy = LoopbackPolicy(BrowserLikePolicyForHTTPS(
                trustRoot=ssl.Certificate.loadPEM(f.read())))
        answers = []

        @defer.inlineCallbacks
        def ask():
            try:
                code, _, body = yield http_get(f"https://127.0.0.1:{port}/healthz",
                                               context=policy)
            except Exception:
                return
            if code == 200:
                answers.append(orjson.loads(body))

        deadline = reactor.seconds() + 20
        while not answers:
            self.assertFalse(process.ended.called, process.text)
            self.assertLess(reactor.seconds(), deadline, "no answer over TLS")
            yield ask()
            if not answers:
                yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(answers[0]["status"], "ok")
