"""HTTP on the WebSocket port (docs/spec.md §12): demo page, health, metrics."""

from __future__ import annotations


import orjson
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater

from symple_tx.config import Settings
from tests.support import ServerTestCase, eventually, http_get, with_timeout


def samples(text: bytes) -> dict[tuple, float]:
    """Prometheus text as {(sample name, label items...): value}."""
    result = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            result[(sample.name, *sorted(sample.labels.items()))] = sample.value
    return result


class RawClient(Protocol):
    """Writes bytes and records what comes back and when the server hangs up."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = data
        self.received = b""
        self.lost: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        if self.data:
            self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason=None) -> None:
        self.lost.callback(self.received)


class HttpTestCase(ServerTestCase):
    def get(self, path: str, **kwargs):
        return http_get(f"http://127.0.0.1:{self.port}{path}", **kwargs)

    @defer.inlineCallbacks
    def raw(self, data: bytes = b"") -> RawClient:
        client = RawClient(data)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), client)
        return client


class DemoPageTests(HttpTestCase):
    @defer.inlineCallbacks
    def test_root_serves_the_demo_page(self):
        code, headers, body = yield self.get("/")
        self.assertEqual(code, 200)
        self.assertIn(b"text/html", headers.getRawHeaders(b"content-type")[0])
        self.assertIn(b"<html", body.lower())

    @defer.inlineCallbacks
    def test_unknown_path_is_404(self):
        code, _, _ = yield self.get("/no-such-page")
        self.assertEqual(code, 404)


class NoDemoTests(HttpTestCase):
    settings = Settings(demo=False)

    @defer.inlineCallbacks
    def test_root_is_a_short_status_text(self):
        code, headers, body = yield self.get("/")
        self.assertEqual(code, 200)
        self.assertIn(b"text/plain", headers.getRawHeaders(b"content-type")[0])
        self.assertIn(b"symple_tx", body)
        self.assertLess(len(body), 200)
        self.assertNotIn(b"<html", body.lower())

    @defer.inlineCallbacks
    def test_pages_and_websocket_share_the_port(self):
        alice = yield self.peer("alice", rooms=["lobby"])
        code, _, _ = yield self.get("/healthz")
        self.assertEqual(code, 200)
        bob = yield self.peer("bob", rooms=["lobby"])
        alice.send_json({"type": "message", "subtype": "after-http"})
        message = yield bob.expect("message")
        self.assertEqual(message["from"], alice.address)


class HealthTests(HttpTestCase):
    @defer.inlineCallbacks
    def test_healthz_reports_ok_with_counts(self):
        yield self.peer("alice", rooms=["lobby"])
        yield self.connect()  # open but not authenticated
        code, headers, body = yield self.get("/healthz")
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        health = orjson.loads(body)
        self.assertEqual(health["status"], "ok")
        self.assertEqual((health["connections"], health["peers"], health["rooms"]), (2, 1, 2))
        self.assertEqual(health["problems"], [])

    @defer.inlineCallbacks
    def test_healthz_is_503_while_draining(self):
        """An embedded server drains while its host's site keeps answering."""
        stubborn = yield self.peer("stubborn")
        stubborn.transport.pauseProducing()  # never reads the close: the drain lasts
        self.server.settings.drain_timeout = 5
        drained = self.server.shutdown()
        code, _, body = yield self.get("/healthz")
        self.assertEqual(code, 503)
        health = orjson.loads(body)
        self.assertEqual(health["status"], "unavailable")
        self.assertIn("draining", health["problems"])
        stubborn.transport.resumeProducing()
        yield with_timeout(drained, what="drain")

    @defer.inlineCallbacks
    def test_healthz_refuses_post(self):
        code, _, _ = yield self.get("/healthz", method=b"POST")
        self.assertEqual(code, 405)


class MetricsTests(HttpTestCase):
    @defer.inlineCallbacks
    def test_metrics_reflect_real_traffic(self):
        alice = yield self.peer("alice", rooms=["lobby"])
        bob = yield self.peer("bob", rooms=["lobby"])
        carol = yield self.peer("carol", rooms=["elsewhere"])
        yield alice.expect("presence")
        for n in range(3):
            alice.send_json({"type": "message", "subtype": "count", "data": n})
        alice.send_json({"type": "message", "to": carol.address, "subtype": "blocked"})
        alice.send_raw(b"{not json")
        for n in range(3):
            yield bob.expect("message")
        yield alice.expect("error")
        intruder = yield self.connect()
        intruder.send_json({"type": "message"})
        yield intruder.wait_closed()
        code, headers, body = yield self.get("/metrics")
        self.assertEqual(code, 200)
        self.assertTrue(headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain"))
        values = samples(body)
        self.assertEqual(values[("symple_connections",)], 3)
        self.assertEqual(values[("symple_peers",)], 3)
        # alice, bob, carol user rooms + lobby + elsewhere
        self.assertEqual(values[("symple_rooms",)], 5)
        self.assertEqual(values[("symple_frames_in_total", ("type", "auth"))], 3)
        self.assertEqual(values[("symple_frames_in_total", ("type", "message"))], 4)
        self.assertEqual(values[("symple_frames_out_total", ("type", "message"))], 3)
        self.assertEqual(values[("symple_frames_out_total", ("type", "welcome"))], 3)
        self.assertEqual(values[("symple_frames_out_total", ("type", "presence"))], 2)
        self.assertEqual(values[("symple_drops_total", ("reason", "permission"))], 1)
        self.assertEqual(values[("symple_drops_total", ("reason", "invalid"))], 1)
        self.assertEqual(values[("symple_auth_failures_total", ("status", "401"))], 1)

    @defer.inlineCallbacks
    def test_gauges_follow_disconnects(self):
        alice = yield self.peer("alice", rooms=["lobby"])
        alice.send_json({"type": "close"})
        yield alice.wait_closed()
        yield eventually(lambda: not self.server.router.links, what="link closed")
        _, _, body = yield self.get("/metrics")
        values = samples(body)
        self.assertEqual((values[("symple_connections",)], values[("symple_peers",)],
                          values[("symple_rooms",)]), (0, 0, 0))


class ConnectionHygieneTests(HttpTestCase):
    settings = Settings(auth_timeout=0.3)

    @defer.inlineCallbacks
    def test_silent_connection_is_dropped(self):
        """A connection that never sends a request head must not hold a socket forever."""
        client = yield self.raw()
        yield with_timeout(client.lost, what="the server dropping a silent connection")

    @defer.inlineCallbacks
    def test_endless_request_head_is_refused(self):
        client = yield self.raw(b"GET / HTTP/1.1\r\nX-Pad: " + b"x" * 40_000)
        received = yield with_timeout(client.lost, what="refusal of an endless head")
        self.assertFalse(received.startswith(b"HTTP/1.1 200"), received[:60])

    @defer.inlineCallbacks
    def test_garbage_gets_400(self):
        client = yield self.raw(b"\x16\x03\x01garbage\r\n\r\n")
        received = yield with_timeout(client.lost, what="refusal of garbage")
        self.assertTrue(received.startswith(b"HTTP/1.1 400"), received[:60])

    @defer.inlineCallbacks
    def test_idle_keep_alive_connection_is_closed(self):
        client = yield self.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        received = yield with_timeout(client.lost, what="the server closing an idle keep-alive")
        self.assertTrue(received.startswith(b"HTTP/1.1 200"), received[:60])


class RedisHealthTests(HttpTestCase):
    """With Redis configured, /healthz follows its reachability."""

    @defer.inlineCallbacks
    def setUp(self):
        from tests.cluster_support import private_redis
        self.redis = yield private_redis(self)
        yield super().setUp()

    def make_settings(self) -> Settings:
        return Settings(redis_url=f"redis://127.0.0.1:{self.redis.port}/0")

    @defer.inlineCallbacks
    def health(self):
        code, _, body = yield self.get("/healthz")
        return code, orjson.loads(body)

    @defer.inlineCallbacks
    def wait_health(self, code: int):
        deadline = reactor.seconds() + 15
        while True:
            current, body = yield self.health()
            if current == code:
                return body
            self.assertLess(reactor.seconds(), deadline, f"/healthz stayed {current}: {body}")
            yield deferLater(reactor, 0.1, lambda: None)

    @defer.inlineCallbacks
    def test_healthz_is_503_while_redis_is_down(self):
        yield self.wait_health(200)
        yield self.redis.stop()
        body = yield self.wait_health(503)
        self.assertEqual(body["problems"], ["redis unreachable"])
        yield self.redis.start()
        body = yield self.wait_health(200)
        self.assertEqual(body["status"], "ok")
