"""Redis goes away and comes back: no gap after /healthz says ok, one log line each way."""

from __future__ import annotations

import orjson
from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from symple_tx.config import Settings
from symple_tx.service import SympleServer, SympleService
from tests.cluster_support import (SOURCE_ROOT, RedisServer, private_redis,
                                   require_redis_server)
from tests.support import (ServerTestCase, clean_environment, eventually, free_port, http_get,
                           spawn_twistd)


class LogCapture:
    """Every log event's text while a test runs."""

    def __init__(self, test) -> None:
        self.lines: list[str] = []
        globalLogPublisher.addObserver(self.observe)
        test.addCleanup(globalLogPublisher.removeObserver, self.observe)

    def observe(self, event: dict) -> None:
        self.lines.append(formatEvent(event) or "")

    def matching(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]


class RedisRestartCase(ServerTestCase):
    """A server on a redis-server of the test's own, which the test may stop and start."""

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield private_redis(self)
        yield super().setUp()

    def make_settings(self) -> Settings:
        return Settings(redis_url=self.redis.url, demo=False)

    @defer.inlineCallbacks
    def health(self):
        code, _, body = yield http_get(f"http://127.0.0.1:{self.port}/healthz")
        return code, orjson.loads(body)

    @defer.inlineCallbacks
    def wait_health(self, wanted: int):
        deadline = reactor.seconds() + 20
        while True:
            code, body = yield self.health()
            if code == wanted:
                return body
            self.assertLess(reactor.seconds(), deadline, f"/healthz stayed {code}: {body}")
            yield deferLater(reactor, 0.02, lambda: None)


class RecoveryTests(RedisRestartCase):
    """A backend frame published as soon as /healthz is ok again is delivered."""

    @defer.inlineCallbacks
    def test_frame_published_right_after_healthz_ok_is_delivered(self):
        yield self.wait_health(200)
        alice = yield self.peer("alice")
        for round_ in range(2):  # a second outage follows the same path
            yield self.redis.stop()
            body = yield self.wait_health(503)
            self.assertEqual(body["problems"], ["redis unreachable"])
            yield self.redis.start()
            yield self.wait_health(200)
            # At once, from a backend's own connection: nothing waits for the server.
            frame = {"type": "message", "from": "bot|backend", "to": "alice", "data": round_}
            receivers = self.redis.command("PUBLISH", "symple:broadcast",
                                           orjson.dumps(frame).decode())
            self.assertEqual(receivers.strip(), "1")
            got = yield alice.expect(lambda f: f.get("from") == "bot|backend", "backend frame")
            self.assertEqual(got["data"], round_)
            # The session store is back too: a command through its pool answers.
            self.assertTrue(self.server.pool.connected)
            self.assertIsNone((yield self.server.redis.get("symple:session:none")))


class StoreOutageTests(RedisRestartCase):
    """A token lookup while Redis is away is refused at once, saying why, not timed out."""

    def make_settings(self) -> Settings:
        return Settings(redis_url=self.redis.url, demo=False, authentication=True)

    @defer.inlineCallbacks
    def test_auth_while_redis_is_away_is_503_and_works_once_back(self):
        yield self.wait_health(200)
        self.redis.command("SET", "symple:session:tok", '{"user": "alice"}')
        yield self.redis.stop()
        yield self.wait_health(503)
        peer = yield self.connect()
        peer.send_json({"type": "auth", "user": "alice", "token": "tok"})
        error = yield peer.expect("error")
        self.assertEqual(error["status"], 503)
        self.assertIn("session store (Redis) is unreachable", error["message"])
        code, _ = yield peer.wait_closed()
        self.assertEqual(code, 4503)
        yield self.redis.start()
        yield self.wait_health(200)
        self.redis.command("SET", "symple:session:tok", '{"user": "alice"}')  # a fresh Redis
        peer = yield self.connect()
        welcome = yield peer.auth("someone", token="tok")
        self.assertEqual(welcome["peer"]["user"], "alice")


class RedisNotStartedCase(ServerTestCase):
    """A server pointed at a Redis whose port is chosen but not started; its log captured."""

    def setUp(self):
        require_redis_server(self)
        self.redis = RedisServer()  # its port, not started yet
        self.addCleanup(self.redis.cleanup)
        self.log = LogCapture(self)
        return super().setUp()

    def make_settings(self) -> Settings:
        return Settings(redis_url=self.redis.url, demo=False)


class OutageLogTests(RedisNotStartedCase):
    """An unreachable Redis is one readable line, not a line per retry; its return is another."""

    @defer.inlineCallbacks
    def test_one_line_per_state_change(self):
        bus = self.server.router.bus
        yield eventually(lambda: bus.publisher.attempts >= 4, seconds=10,
                         what="several connection attempts")
        where = f"127.0.0.1:{self.redis.port}"
        self.assertEqual(self.log.matching("Cannot reach Redis"),
                         [f"Cannot reach Redis at {where} (connection refused); retrying; "
                          f"local sessions are served"])
        self.assertEqual(self.log.matching("retry"), self.log.matching("Cannot reach"))
        self.assertEqual(self.log.matching("Scheduling"), [])
        yield self.redis.start()
        yield eventually(lambda: self.log.matching("is back"), seconds=10, what="back line")
        self.assertEqual(self.log.matching("is back"), [f"Redis at {where} is back"])
        self.assertEqual(len(self.log.matching("Cannot reach Redis")), 1)
        # Lost again, said again (once).
        yield self.redis.stop()
        yield eventually(lambda: len(self.log.matching("Cannot reach Redis")) == 2,
                         what="second outage line")
        self.assertIn(f"Cannot reach Redis at {where} (connection lost)",
                      self.log.matching("Cannot reach Redis")[1])


class StopWhileDownTests(RedisNotStartedCase):
    """Stopping a server whose Redis never answered is quick and says nothing more."""

    @defer.inlineCallbacks
    def test_stop_without_redis(self):
        yield eventually(lambda: self.log.matching("Cannot reach Redis"), what="outage line")
        yield self.service.stopService()
        self.service = SympleService(SympleServer(Settings()))  # cleanup stops this one
        self.assertEqual(len(self.log.matching("Cannot reach Redis")), 1)


class TwistdOutageLogTests(unittest.TestCase):
    """``twistd -n symple --redis URL`` as a person runs it: one line for the outage, one
    for the return, however many retries in between."""

    @defer.inlineCallbacks
    def test_retries_print_nothing_between_the_two_lines(self):
        require_redis_server(self)
        redis = RedisServer()  # its port; started later
        self.addCleanup(redis.cleanup)
        # Until then something holds the port that hangs up on every connection:
        # each attempt is counted, and each fails the same way.
        attempts = []

        class HangUp(Protocol):
            def connectionMade(self):
                attempts.append(1)
                self.transport.loseConnection()
        impostor = reactor.listenTCP(redis.port, Factory.forProtocol(HangUp),
                                     interface="127.0.0.1")
        self.addCleanup(impostor.stopListening)
        port = free_port()
        process = spawn_twistd(self, ["symple", "--listen", f"tcp:{port}:interface=127.0.0.1",
                                      "--redis", redis.url, "--no-demo"],
                               env=clean_environment(PYTHONPATH=SOURCE_ROOT))
        # Six connections (bus publisher and subscriber, four for the session store),
        # each retried: several rounds of backoff.
        yield eventually(lambda: len(attempts) >= 18, seconds=30, what="18 attempts")
        code, _, body = yield http_get(f"http://127.0.0.1:{port}/healthz")
        self.assertEqual((code, orjson.loads(body)["problems"]), (503, ["redis unreachable"]))
        yield impostor.stopListening()
        yield redis.start()
        yield eventually(lambda: "is back" in process.text, seconds=30, what="the back line")
        where = f"127.0.0.1:{redis.port}"
        lines = [line.split("] ", 1)[-1] for line in process.text.splitlines()
                 if "Redis" in line or "retry" in line.lower()]
        self.assertEqual(lines, [f"Cannot reach Redis at {where} (the server closed the "
                                 f"connection); retrying; local sessions are served",
                                 f"Redis at {where} is back"], process.text)
        self.assertNotIn("Traceback", process.text)
