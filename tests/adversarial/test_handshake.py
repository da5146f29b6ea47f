"""Request heads are bounded in size and time, and parsed in linear time.

Row: a WebSocket upgrade head that never ends (``X-Pad:`` and endless bytes)
from four sockets took 100% CPU for 10 s and +63-88 MB: past 16 KiB Autobahn
buffered the head without a cap and rescanned it on every read.
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from symple_tx.config import Settings
from symple_tx.web import MAX_HEAD
from tests.adversarial.support import UPGRADE, RawTestCase
from tests.support import with_timeout


class HeadSizeTests(RawTestCase):
    # Long enough that only a refusal, not the deadline, can end these connections.
    settings = Settings(auth_timeout=30)

    @defer.inlineCallbacks
    def test_endless_upgrade_heads_get_431_at_the_limit(self):
        clients = []
        for _ in range(4):
            client = yield self.raw(UPGRADE + b"X-Pad: ")
            clients.append(client)
        for _ in range(8):  # 64 KiB each, in reads of 8 KiB
            for client in clients:
                if not client.lost.called:
                    client.transport.write(b"p" * 8192)
            yield deferLater(reactor, 0, lambda: None)
        for client in clients:
            received = yield with_timeout(client.lost, what="431 and close")
            self.assertEqual(client.status, 431, received[:80])
        self.assertEqual(self.sample("symple_disconnects_total", reason="head_too_large"), 4)

    @defer.inlineCallbacks
    def test_endless_plain_head_gets_431(self):
        client = yield self.raw(b"GET / HTTP/1.1\r\nX-Pad: " + b"x" * 40_000)
        yield with_timeout(client.lost, what="431 and close")
        self.assertEqual(client.status, 431)

    @defer.inlineCallbacks
    def test_head_just_under_the_limit_is_served(self):
        pad = b"X-Pad: " + b"p" * (MAX_HEAD - len(UPGRADE) - 20) + b"\r\n\r\n"
        head = UPGRADE + pad
        self.assertLessEqual(len(head), MAX_HEAD)
        client = yield self.raw(head)
        received = yield with_timeout(client.until(b"\r\n\r\n"), what="the 101")
        self.assertEqual(client.status, 101, received[:80])

    @defer.inlineCallbacks
    def test_head_split_across_reads_at_its_end(self):
        """The end of the head is found even when ``\\r\\n\\r\\n`` spans two reads."""
        client = yield self.raw(UPGRADE + b"\r")
        for piece in (b"\n", b"\r", b"\n"):
            yield deferLater(reactor, 0.01, lambda: None)
            client.transport.write(piece)
        yield with_timeout(client.until(b"\r\n\r\n"), what="the 101")
        self.assertEqual(client.status, 101)


class HeadDeadlineTests(RawTestCase):
    settings = Settings(auth_timeout=0.5)

    @defer.inlineCallbacks
    def test_a_trickled_upgrade_head_is_dropped_at_the_deadline(self):
        client = yield self.raw(UPGRADE)
        started = reactor.seconds()
        for _ in range(30):
            if client.lost.called:
                break
            client.transport.write(b"X-More: 1\r\n")
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertTrue(client.lost.called, "a trickled head kept its connection open")
        self.assertLess(client.lost_at - started, 2.0)
