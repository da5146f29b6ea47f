"""The protections of docs/spec.md §7, over real loopback sockets with small limits.

The timed ones (auth timeout, keepalive, rate refill) run on simulated time in
tests/unit/test_transport_timers.py.
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall

from symple_tx.config import Settings
from tests.support import ServerTestCase, TestPeer, eventually, with_timeout


def is_error(status: int):
    return lambda frame: frame.get("type") == "error" and frame.get("status") == status


def errors(peer: TestPeer, status: int) -> list[dict]:
    return [f for f in peer.received if is_error(status)(f)]


def messages(peer: TestPeer, subtype: str) -> list[dict]:
    return [f for f in peer.received if f.get("type") == "message" and f.get("subtype") == subtype]


class LimitTestCase(ServerTestCase):
    """A server whose limits are those of ``limits`` and defaults elsewhere."""

    limits: dict = {}

    def make_settings(self) -> Settings:
        return Settings(**self.limits)

    def server_link(self, peer: TestPeer):
        """The server-side protocol of an authenticated ``peer``."""
        return self.server.router.sessions[peer.session_id].link

    @defer.inlineCallbacks
    def pair(self, room: str = "lobby"):
        """Two peers sharing ``room``, each past the other's online presence."""
        alice = yield self.peer("alice", rooms=[room])
        bob = yield self.peer("bob", rooms=[room])
        yield alice.expect("presence")
        yield bob.expect("presence")
        return alice, bob


class FrameSizeTests(LimitTestCase):
    limits = {"max_message_size": 1024}

    @defer.inlineCallbacks
    def test_frame_over_the_limit_gets_413_then_close_4413(self):
        alice, bob = yield self.pair()
        alice.send_json({"type": "message", "data": "x" * 2000})
        error = yield alice.expect("error")
        self.assertEqual(error["status"], 413)
        self.assertIn("1024", error["message"])
        code, _ = yield alice.wait_closed()
        self.assertEqual(code, 4413)
        offline = yield bob.expect("presence")
        self.assertFalse(offline["data"]["online"])
        self.assertNotIn("message", [f["type"] for f in bob.received])
        self.assertEqual(self.sample("symple_drops_total", reason="too_large"), 1)

    @defer.inlineCallbacks
    def test_frame_at_the_limit_passes(self):
        alice, bob = yield self.pair()
        frame = b'{"type":"message","subtype":"fits","data":"'
        frame += b"y" * (1024 - len(frame) - 2) + b'"}'
        self.assertEqual(len(frame), 1024)
        alice.send_raw(frame)
        message = yield bob.expect("message")
        self.assertEqual(message["subtype"], "fits")

    @defer.inlineCallbacks
    def test_oversized_frame_is_refused_before_it_arrives(self):
        """A frame announcing 64 MiB is refused on its header; its bytes are never buffered."""
        alice, _ = yield self.pair()
        link = self.server_link(alice)
        alice.beginMessage()
        alice.beginMessageFrame(64 * 1024 * 1024)
        alice.sendMessageFrameData(b"z" * 8192)
        error = yield alice.expect("error")
        self.assertEqual(error["status"], 413)
        self.assertEqual(sum(map(len, link.message_data or [])), 0)
        self.assertEqual(sum(map(len, link.frame_data or [])), 0)
        code, _ = yield alice.wait_closed()
        self.assertEqual(code, 4413)

    @defer.inlineCallbacks
    def test_fragmented_message_over_the_limit_is_refused(self):
        alice, _ = yield self.pair()
        alice.beginMessage()
        for _ in range(3):
            alice.beginMessageFrame(512)
            alice.sendMessageFrameData(b" " * 512)
        error = yield alice.expect("error")
        self.assertEqual(error["status"], 413)
        code, _ = yield alice.wait_closed()
        self.assertEqual(code, 4413)


class RateLimitTests(LimitTestCase):
    # A bucket of 5 that refills at 0.05 frames/s: nothing refills during a test.
    limits = {"rate_limit": 5, "rate_period": 100.0}

    @defer.inlineCallbacks
    def test_burst_over_the_bucket_drops_each_extra_frame_with_429(self):
        alice, bob = yield self.pair()  # the auth frame took one of alice's 5 tokens
        for n in range(7):
            alice.send_json({"type": "message", "subtype": "burst", "data": n, "id": f"m{n}"})
        for n in range(4, 7):
            error = yield alice.expect("error")
            self.assertEqual((error["status"], error["id"]), (429, f"m{n}"))
        yield self.settle(bob)
        self.assertEqual([m["data"] for m in messages(bob, "burst")], [0, 1, 2, 3])
        self.assertIsNone(alice.close_code)
        self.assertIn(alice.session_id, self.server.router.sessions)
        self.assertEqual(self.sample("symple_drops_total", reason="rate_limit"), 3)

    @defer.inlineCallbacks
    def test_sustained_flooding_closes_with_4429(self):
        alice, bob = yield self.pair()
        for n in range(30):
            alice.send_json({"type": "message", "subtype": "flood", "data": n})
        code, _ = yield alice.wait_closed()
        self.assertEqual(code, 4429)
        refusals = errors(alice, 429)
        self.assertEqual(len(refusals), 6)  # rate_limit strikes, then the closing one
        self.assertIn("closing", refusals[-1]["message"])
        offline = yield bob.expect(lambda f: f.get("type") == "presence"
                                   and not f["data"]["online"], "offline presence")
        self.assertEqual(offline["from"], alice.address)
        self.assertEqual(len(messages(bob, "flood")), 4)
        self.assertEqual(self.sample("symple_disconnects_total", reason="rate_limit"), 1)


class BudgetAcrossReconnectsTests(LimitTestCase):
    """Budgets belong to (client address, user): reconnecting does not refill them."""

    limits = {"rate_limit": 5, "rate_period": 100.0, "delivery_limit": 6}

    @defer.inlineCallbacks
    def test_a_reconnect_keeps_the_spent_budget_another_user_has_its_own(self):
        alice, bob = yield self.pair()
        for n in range(4):  # the auth frame took one of alice's 5
            alice.send_json({"type": "message", "subtype": "first", "data": n})
        yield eventually(lambda: len(messages(bob, "first")) == 4, what="4 messages")
        alice.transport.abortConnection()
        yield alice.wait_closed()
        again = yield self.peer("alice", rooms=["lobby"])  # this auth is over the budget too
        again.send_json({"type": "message", "subtype": "second", "id": "late"})
        error = yield again.expect("error")
        self.assertEqual((error["status"], error["id"]), (429, "late"))
        carol = yield self.peer("carol", rooms=["lobby"])
        carol.send_json({"type": "message", "to": bob.address, "subtype": "carol"})
        yield bob.expect(lambda f: f.get("subtype") == "carol", "carol's message")
        self.assertEqual(errors(carol, 429), [])

    @defer.inlineCallbacks
    def test_deliveries_are_counted_per_recipient(self):
        alice, bob = yield self.pair()
        carol = yield self.peer("carol", rooms=["lobby"])
        yield alice.expect("presence")
        # Two recipients each: three frames fit in a delivery budget of 6, the fourth not.
        for n in range(4):
            alice.send_json({"type": "message", "subtype": "room", "data": n, "id": n})
        error = yield alice.expect("error")
        self.assertEqual((error["status"], error["id"]), (429, 3))
        self.assertIn("Delivery budget exceeded", error["message"])
        yield self.settle(bob, carol)
        self.assertEqual([m["data"] for m in messages(bob, "room")], [0, 1, 2])
        self.assertEqual([m["data"] for m in messages(carol, "room")], [0, 1, 2])
        self.assertEqual(self.sample("symple_drops_total", reason="delivery_limit"), 1)


class ConnectionLimitTests(LimitTestCase):
    limits = {"max_connections": 2}

    @defer.inlineCallbacks
    def test_extra_connection_gets_503_and_4503_while_others_carry_on(self):
        alice, bob = yield self.pair()
        extra = yield self.connect()
        error = yield extra.expect("error")
        self.assertEqual(error["status"], 503)
        code, _ = yield extra.wait_closed()
        self.assertEqual(code, 4503)
        alice.send_json({"type": "message", "subtype": "still-here"})
        message = yield bob.expect("message")
        self.assertEqual(message["subtype"], "still-here")
        self.assertEqual(len(self.server.router.links), 2)
        self.assertEqual(self.sample("symple_disconnects_total", reason="capacity"), 1)
        for peer in (alice, bob):
            self.assertNotIn("presence", [f["type"] for f in peer.drain()])

    @defer.inlineCallbacks
    def test_a_freed_slot_admits_a_new_connection(self):
        alice, bob = yield self.pair()
        bob.send_json({"type": "close"})
        yield bob.wait_closed()
        yield eventually(lambda: len(self.server.router.links) == 1, what="slot freed")
        carol = yield self.peer("carol", rooms=["lobby"])
        self.assertEqual(carol.welcome["peer"]["user"], "carol")


class HeadReader(Protocol):
    """Sends a request and collects the response head."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.data = b""
        self.head: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if b"\r\n\r\n" in self.data and not self.head.called:
            self.head.callback(self.data)
            self.transport.loseConnection()


class HandshakeTestCase(LimitTestCase):
    @defer.inlineCallbacks
    def handshake(self, origin: str | None) -> bytes:
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
        origin_line = "" if origin is None else f"Origin: {origin}\r\n"
        request = (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   f"Sec-WebSocket-Version: 13\r\n{origin_line}\r\n").encode()
        reader = HeadReader(request)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), reader)
        head = yield with_timeout(reader.head, what="handshake response")
        return head


class OriginTests(HandshakeTestCase):
    limits = {"allowed_origins": ("https://good.example",)}

    @defer.inlineCallbacks
    def test_disallowed_origin_is_refused_with_403(self):
        head = yield self.handshake("https://evil.example")
        self.assertTrue(head.startswith(b"HTTP/1.1 403"), head[:80])
        self.assertEqual(self.server.router.links, set())
        self.assertEqual(self.sample("symple_drops_total", reason="origin"), 1)

    @defer.inlineCallbacks
    def test_allowed_origin_upgrades(self):
        head = yield self.handshake("https://good.example")
        self.assertTrue(head.startswith(b"HTTP/1.1 101"), head[:80])
        peer = yield self.connect(origin="https://good.example")
        welcome = yield peer.auth("alice")
        self.assertEqual(welcome["status"], 200)

    @defer.inlineCallbacks
    def test_native_client_without_origin_passes(self):
        head = yield self.handshake(None)
        self.assertTrue(head.startswith(b"HTTP/1.1 101"), head[:80])

    @defer.inlineCallbacks
    def test_null_origin_is_refused(self):
        """Sandboxed pages and file:// send the literal Origin "null"."""
        head = yield self.handshake("null")
        self.assertTrue(head.startswith(b"HTTP/1.1 403"), head[:80])

    @defer.inlineCallbacks
    def test_autobahn_client_with_bad_origin_fails_to_open(self):
        with self.assertRaises(ConnectionError):
            yield self.connect(origin="https://evil.example")


def queued_bytes(link) -> int:
    """Bytes the server holds for ``link``: Twisted's write buffer of its transport."""
    transport = link.transport
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


class SlowConsumerTests(LimitTestCase):
    limits = {"max_send_buffer": 256 * 1024, "max_message_size": 32 * 1024,
              "rate_limit": 10_000}
    frame_size = 16 * 1024
    batch = 8
    batches = 60  # 7.9 MB: far beyond what the kernel buffers for a stalled reader

    @defer.inlineCallbacks
    def stall_and_flood(self):
        """carol floods a room holding a stalled reader and a normal one (bob).

        carol sends in batches and waits for bob to receive each, as a sender
        throttled by its own network would, so only the stalled reader falls behind.
        """
        stalled = yield self.connect_small_window()
        yield stalled.auth("stalled", rooms=["lobby"])
        bob = yield self.peer("bob", rooms=["lobby"])
        carol = yield self.peer("carol", rooms=["lobby"])
        yield self.settle(stalled)
        link = self.server_link(stalled)
        peak = [0]

        def watch() -> None:
            peak[0] = max(peak[0], queued_bytes(link))
        watcher = LoopingCall(watch)
        watcher.start(0.005)
        self.addCleanup(lambda: watcher.running and watcher.stop())
        stalled.transport.pauseProducing()  # stops reading the socket
        padding = "p" * self.frame_size
        sent = 0
        for _ in range(self.batches):
            for _ in range(self.batch):
                carol.send_json({"type": "message", "subtype": "flood", "data": sent,
                                 "pad": padding})
                sent += 1
            yield eventually(lambda: len(messages(bob, "flood")) == sent,
                             what=f"bob receiving {sent} frames")
        self.assertEqual([m["data"] for m in messages(bob, "flood")], list(range(sent)))
        self.assertEqual(self.sample("symple_disconnects_total", reason="slow_consumer"), 1)
        self.assertIn(bob.session_id, self.server.router.sessions)
        watch()
        # Bounded: Twisted's 64 KiB write buffer plus the send limit, plus a frame and the close.
        bound = 64 * 1024 + 256 * 1024 + 2 * (self.frame_size + 256)
        self.assertLessEqual(peak[0], bound)
        self.assertLessEqual(link._queued_bytes, 256 * 1024 + self.frame_size + 256)
        return stalled, bob, link
    @defer.inlineCallbacks
    def test_stalled_reader_is_closed_with_4008_and_others_keep_receiving(self):
        stalled, bob, _ = yield self.stall_and_flood()
        stalled.transport.resumeProducing()  # it reads what was queued, then the close
        code, _ = yield stalled.wait_closed()
        self.assertEqual(code, 4008)
        self.assertLess(len(messages(stalled, "flood")), self.batch * self.batches)
        offline = yield bob.expect(lambda f: f.get("type") == "presence"
                                   and not f["data"]["online"], "offline presence")
        self.assertEqual(offline["from"], stalled.address)

    @defer.inlineCallbacks
    def test_reader_that_never_resumes_is_dropped(self):
        stalled, bob, link = yield self.stall_and_flood()
        offline = yield bob.expect(lambda f: f.get("type") == "presence"
                                   and not f["data"]["online"], "offline presence")
        self.assertEqual(offline["from"], stalled.address)
        self.assertNotIn(link, self.server.router.links)


class AnyOriginTests(HandshakeTestCase):
    @defer.inlineCallbacks
    def test_any_origin_passes_without_a_list(self):
        for origin in ("https://evil.example", "null", None):
            head = yield self.handshake(origin)
            self.assertTrue(head.startswith(b"HTTP/1.1 101"), (origin, head[:80]))

