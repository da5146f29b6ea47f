"""HTTP on the WebSocket port serves GET and HEAD of its pages, and nothing else.

Rows: ``POST /`` with a 150 MB body (spooled to disk), a body trickled one
byte at a time (kept open for ever), HTTP connections outside the
connection limit, ``GET /index.html%00.js`` (500).
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from symple_tx.config import Settings
from tests.adversarial.support import RawTestCase
from tests.support import WAIT, with_timeout

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


class BodyTests(RawTestCase):
    # Long enough that only a refusal, not a timeout, can end these connections.
    settings = Settings(auth_timeout=30)

    @defer.inlineCallbacks
    def test_post_is_refused_before_its_body_is_read(self):
        """405 at once: the server does not wait for (or store) the 150 MB announced."""
        client = yield self.raw(b"POST / HTTP/1.1\r\nHost: x\r\n"
                                b"Content-Length: 150000000\r\n\r\n" + b"x" * 65536)
        received = yield with_timeout(client.lost, what="405 and close")
        self.assertEqual(client.status, 405, received[:80])
        self.assertIn(b"\r\nAllow: GET, HEAD\r\n", received)
        self.assertIn(b"\r\nConnection: close\r\n", received)
        self.assertEqual(self.sample("symple_disconnects_total", reason="http_method"), 1)

    @defer.inlineCallbacks
    def test_a_body_trickled_a_byte_at_a_time_is_not_waited_for(self):
        """The row: a body at one byte per 1.8 s kept its connection open for ever."""
        client = yield self.raw(b"POST /healthz HTTP/1.1\r\nHost: x\r\n"
                                b"Content-Length: 1000\r\n\r\nx")
        yield with_timeout(client.lost, what="405 and close, without waiting for the body")
        self.assertEqual(client.status, 405)

    @defer.inlineCallbacks
    def test_get_with_a_body_is_refused(self):
        client = yield self.raw(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        yield with_timeout(client.lost, what="413 and close")
        self.assertEqual(client.status, 413)
        self.assertEqual(self.sample("symple_disconnects_total", reason="http_body"), 1)

    @defer.inlineCallbacks
    def test_chunked_body_is_refused(self):
        client = yield self.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        yield with_timeout(client.lost, what="413 and close")
        self.assertEqual(client.status, 413)

    @defer.inlineCallbacks
    def test_other_methods_are_refused(self):
        for method in (b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE"):
            client = yield self.raw(method + b" /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            yield with_timeout(client.lost, what=f"405 for {method!r}")
            self.assertEqual(client.status, 405, method)

    @defer.inlineCallbacks
    def test_head_and_get_still_work(self):
        client = yield self.raw(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + HEALTHZ)
        yield with_timeout(client.until(b'"status"'), what="two responses")
        self.assertEqual(client.received.count(b"HTTP/1.1 200 OK"), 2)


class DeadlineTests(RawTestCase):
    settings = Settings(auth_timeout=0.5)

    @defer.inlineCallbacks
    def test_a_trickled_request_is_cut_at_its_deadline(self):
        """A byte every 0.1 s used to restart twisted.web's idle timer for ever."""
        client = yield self.raw(HEALTHZ)
        yield with_timeout(client.until(b'"status"'), what="the first response")
        started = reactor.seconds()
        for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"y" * 60:
            if client.lost.called:
                break
            client.transport.write(bytes([byte]))
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertTrue(client.lost.called, "a trickled request kept its connection open")
        self.assertLess(client.lost_at - started, 2.0)
        self.assertEqual(self.sample("symple_disconnects_total", reason="http_deadline"), 1)

    @defer.inlineCallbacks
    def test_a_trickled_first_head_is_cut_at_its_deadline(self):
        client = yield self.raw(b"G")
        for byte in b"ET /healthz HTTP/1.1\r\nX-Slow: " + b"y" * 60:
            if client.lost.called:
                break
            client.transport.write(bytes([byte]))
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertTrue(client.lost.called, "a trickled head kept its connection open")


class CountedTests(RawTestCase):
    settings = Settings(max_connections=2, auth_timeout=30)

    @defer.inlineCallbacks
    def test_http_connections_hold_connection_slots(self):
        """Keep-alive HTTP connections count like WebSocket ones; a slot frees on close."""
        first = yield self.raw(HEALTHZ)
        second = yield self.raw(HEALTHZ)
        for client in (first, second):
            yield with_timeout(client.until(b'"status"'), what="a keep-alive response")
        third = yield self.raw(HEALTHZ)
        yield with_timeout(third.lost, what="503 at the connection limit")
        self.assertEqual(third.status, 503)
        self.assertEqual(self.server.router.http_connections, 2)
        peer = yield self.connect()
        code, _ = yield peer.wait_closed()
        self.assertEqual(code, 4503)
        first.transport.loseConnection()
        yield first.lost
        yield with_timeout(self._freed(), what="the slot to free")
        peer = yield self.peer("alice")
        self.assertEqual(peer.welcome["type"], "welcome")

    @defer.inlineCallbacks
    def _freed(self):
        while self.server.router.http_connections != 1:
            yield deferLater(reactor, 0.02, lambda: None)


class PathTests(RawTestCase):
    @defer.inlineCallbacks
    def test_malformed_paths_are_client_errors(self):
        paths = [b"/index.html%00.js", b"/%00", b"/js/%00/x", b"/%zz", b"/%", b"/a%2",
                 b"/%ff%fe", b"/\xff", b"/%0a", b"/js/..%2f..%2fsetup.cfg", b"/..%00/"]
        for path in paths:
            client = yield self.raw(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n"
                                    b"Connection: close\r\n\r\n")
            received = yield with_timeout(client.lost, WAIT, what=f"an answer for {path!r}")
            self.assertIn(client.status, (400, 404), (path, received[:80]))
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertGreaterEqual(self.sample("symple_disconnects_total", reason="http_path"), 9)


class NoDemoPathTests(PathTests):
    settings = Settings(demo=False)
