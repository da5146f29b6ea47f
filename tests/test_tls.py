"""TLS: ``ssl:`` endpoints serve wss:// and https:// with a certificate made for the test."""

from __future__ import annotations

import os

import orjson
from twisted.internet import defer, reactor, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.web.client import BrowserLikePolicyForHTTPS

from symple_tx.config import Settings
from symple_tx.tap import SympleOptions
from tests.support import (LoopbackPolicy, ServerTestCase, eventually, http_get,
                           self_signed_cert, with_timeout)


class TlsTestCase(ServerTestCase):
    def listen_on(self) -> str:
        directory = self.mktemp()
        os.makedirs(directory)
        self.key, self.cert = self_signed_cert(directory)
        return f"ssl:0:interface=127.0.0.1:privateKey={self.key}:certKey={self.cert}"

    def trust_root(self) -> ssl.Certificate:
        with open(self.cert, "rb") as f:
            return ssl.Certificate.loadPEM(f.read())

    def client_endpoint(self):
        options = ssl.optionsForClientTLS("localhost", trustRoot=self.trust_root())
        return wrapClientTLS(options, TCP4ClientEndpoint(reactor, "127.0.0.1", self.port))

    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        self.url = f"wss://localhost:{self.port}/"


class WssTests(TlsTestCase):
    @defer.inlineCallbacks
    def test_auth_presence_and_messages_over_wss(self):
        alice = yield self.peer("alice", rooms=["lobby"])
        self.assertEqual(alice.welcome["protocol"], "symple/4")
        self.assertEqual(alice.welcome["peer"]["host"], "127.0.0.1")
        bob = yield self.peer("bob", rooms=["lobby"])
        online = yield alice.expect("presence")
        self.assertEqual(online["from"], bob.address)
        bob.send_json({"type": "message", "to": alice.address, "subtype": "call:offer",
                       "data": {"sdp": "v=0"}})
        message = yield alice.expect("message")
        self.assertEqual((message["from"], message["data"]), (bob.address, {"sdp": "v=0"}))
        bob.send_json({"type": "close"})
        code, _ = yield bob.wait_closed()
        self.assertEqual(code, 1000)
        offline = yield alice.expect("presence")
        self.assertFalse(offline["data"]["online"])

    @defer.inlineCallbacks
    def test_large_frames_cross_tls_intact(self):
        alice = yield self.peer("alice", rooms=["lobby"])
        bob = yield self.peer("bob", rooms=["lobby"])
        payload = "é" * 20_000  # 40 KB of UTF-8: several TLS records
        alice.send_json({"type": "message", "data": payload})
        message = yield bob.expect("message")
        self.assertEqual(message["data"], payload)

    @defer.inlineCallbacks
    def test_https_healthz_on_the_same_port(self):
        policy = BrowserLikePolicyForHTTPS(trustRoot=self.trust_root())
        code, _, body = yield http_get(f"https://127.0.0.1:{self.port}/healthz",
                                       context=LoopbackPolicy(policy))
        self.assertEqual(code, 200)
        self.assertEqual(orjson.loads(body)["status"], "ok")

    @defer.inlineCallbacks
    def test_plain_websocket_to_a_tls_port_fails(self):
        factory = self.client_factory()
        factory.url = f"ws://127.0.0.1:{self.port}/"
        peer = factory.buildProtocol(None)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), peer)
        with self.assertRaises(ConnectionError):
            yield with_timeout(peer.opened, what="refused plain handshake")


class TapTlsTests(TlsTestCase):
    """``--ssl-key``/``--ssl-cert`` produce a working wss:// listener."""

    def listen_on(self) -> str:
        super().listen_on()
        options = SympleOptions(environ={})
        options.parseOptions(["--port", "0", "--ssl-key", self.key, "--ssl-cert", self.cert])
        [description] = options.descriptions()
        self.assertTrue(description.startswith("ssl:0:"))
        return description + ":interface=127.0.0.1"

    @defer.inlineCallbacks
    def test_wss_through_the_options(self):
        alice = yield self.peer("alice")
        self.assertEqual(alice.welcome["peer"]["user"], "alice")


class TlsSlowConsumerTests(TlsTestCase):
    """The slow-consumer guard holds when TLS sits between the peer and the server."""

    settings = Settings(max_send_buffer=256 * 1024, max_message_size=32 * 1024,
                        rate_limit=10_000)

    @defer.inlineCallbacks
    def test_stalled_tls_reader_is_closed_with_4008(self):
        stalled = yield self.peer("stalled", rooms=["lobby"])
        bob = yield self.peer("bob", rooms=["lobby"])
        carol = yield self.peer("carol", rooms=["lobby"])
        yield self.settle(stalled)
        link = self.server.router.sessions[stalled.session_id].link
        stalled.transport.transport.pauseProducing()  # the TCP socket under TLS stops reading
        padding = "p" * 16 * 1024
        sent = 0
        while not self.sample("symple_disconnects_total", reason="slow_consumer"):
            self.assertLess(sent, 2000, "never disconnected as a slow consumer")
            for _ in range(8):
                carol.send_json({"type": "message", "subtype": "flood", "data": sent,
                                 "pad": padding})
                sent += 1
            yield eventually(lambda: sum(1 for f in bob.received
                                         if f.get("subtype") == "flood") == sent,
                             what=f"bob receiving {sent} frames")
        self.assertLessEqual(link._queued_bytes, 256 * 1024 + 17 * 1024)
        stalled.transport.transport.resumeProducing()
        code, _ = yield stalled.wait_closed()
        self.assertEqual(code, 4008)
