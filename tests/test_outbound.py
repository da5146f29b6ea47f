"""Per-turn write queues (symple_tx.outbound) and the send bound of every byte a peer is sent."""

from __future__ import annotations

import errno
import socket

from twisted.internet import defer, reactor
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from zope.interface import implementer

from symple_tx.config import Settings
from symple_tx.outbound import FlushScheduler, Outbound
from tests.support import ServerTestCase, eventually

# -- unit tests, with a fake socket and transport --------------------------------------


class FakeSocket:
    """Takes at most ``room`` bytes per ``send``; raises ``error`` when set."""

    def __init__(self, room: int = 1 << 30) -> None:
        self.room = room
        self.sent: list[bytes] = []
        self.error: OSError | None = None

    def send(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        taken = bytes(data[:self.room])
        self.sent.append(taken)
        return len(taken)


class FakeTCPTransport:
    """The parts of ``twisted.internet.tcp.Connection`` that Outbound reads."""

    def __init__(self, sock: FakeSocket) -> None:
        self.socket = sock
        self.connected = 1
        self.disconnecting = 0
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataLen = 0
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self._tempDataLen += len(data)


def direct_outbound(sock: FakeSocket, scheduler: FlushScheduler) -> tuple[Outbound, FakeTCPTransport]:
    transport = FakeTCPTransport(sock)
    out = Outbound(transport, scheduler)
    out.direct = True  # the fake stands in for a plain TCP connection
    return out, transport


class OutboundUnitTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.scheduler = FlushScheduler(self.clock)

    def test_nothing_is_sent_before_the_turn_ends(self) -> None:
        sock = FakeSocket()
        out, transport = direct_outbound(sock, self.scheduler)
        out.write(b"one")
        out.write(b"two")
        self.assertEqual((sock.sent, transport.written), ([], []))
        self.assertEqual(out.size, 6)

    def test_one_send_per_connection_per_turn(self) -> None:
        """Frames queued in one turn leave in one system call, with no transport buffering."""
        sock = FakeSocket()
        out, transport = direct_outbound(sock, self.scheduler)
        for chunk in (b"a", b"bc", b"def"):
            out.write(chunk)
        self.clock.advance(0)
        self.assertEqual(sock.sent, [b"abcdef"])
        self.assertEqual(transport.written, [])
        self.assertEqual((out.size, out.chunks), (0, None))

    def test_one_timed_call_per_turn_for_every_dirty_connection(self) -> None:
        socks = [FakeSocket() for _ in range(3)]
        outs = [direct_outbound(s, self.scheduler)[0] for s in socks]
        for i, out in enumerate(outs):
            out.write(b"x%d" % i)
            out.write(b"y")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(self.scheduler.pending, 3)
        self.clock.advance(0)
        self.assertEqual([s.sent for s in socks], [[b"x0y"], [b"x1y"], [b"x2y"]])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_later_turn_sends_again(self) -> None:
        sock = FakeSocket()
        out, _ = direct_outbound(sock, self.scheduler)
        out.write(b"first")
        self.clock.advance(0)
        out.write(b"second")
        self.clock.advance(0)
        self.assertEqual(sock.sent, [b"first", b"second"])

    def test_what_the_kernel_does_not_take_goes_to_the_transport(self) -> None:
        sock = FakeSocket(room=4)
        out, transport = direct_outbound(sock, self.scheduler)
        out.write(b"0123456789")
        self.clock.advance(0)
        self.assertEqual(sock.sent, [b"0123"])
        self.assertEqual(transport.written, [b"456789"])
        self.assertEqual(out.transport_buffered(), 6)

    def test_a_full_kernel_buffer_hands_everything_to_the_transport(self) -> None:
        sock = FakeSocket()
        sock.error = BlockingIOError(errno.EAGAIN, "try again")
        out, transport = direct_outbound(sock, self.scheduler)
        out.write(b"frame")
        self.clock.advance(0)
        self.assertEqual(transport.written, [b"frame"])

    def test_a_socket_error_is_left_to_the_transport_to_report(self) -> None:
        sock = FakeSocket()
        sock.error = ConnectionResetError(errno.ECONNRESET, "reset")
        out, transport = direct_outbound(sock, self.scheduler)
        out.write(b"frame")
        self.clock.advance(0)
        self.assertEqual(transport.written, [b"frame"])

    def test_bytes_behind_older_buffered_bytes_keep_their_order(self) -> None:
        """While the transport holds unsent bytes, nothing may overtake them on the socket."""
        sock = FakeSocket()
        out, transport = direct_outbound(sock, self.scheduler)
        transport.dataBuffer, transport.offset = b"older", 2
        out.write(b"newer")
        self.clock.advance(0)
        self.assertEqual(sock.sent, [])
        self.assertEqual(transport.written, [b"newer"])
        transport.dataBuffer, transport._tempDataLen = b"", 3
        out.write(b"later")
        self.clock.advance(0)
        self.assertEqual(sock.sent, [])

    def test_a_closing_transport_is_not_written_around(self) -> None:
        sock = FakeSocket()
        out, transport = direct_outbound(sock, self.scheduler)
        transport.disconnecting = 1
        out.write(b"bye")
        self.clock.advance(0)
        self.assertEqual((sock.sent, transport.written), ([], [b"bye"]))

    def test_other_transports_are_written_through_their_own_buffer(self) -> None:
        """TLS and other wrappers see every byte (batched per turn all the same)."""
        transport = StringTransport()
        out = Outbound(transport, self.scheduler)
        self.assertFalse(out.direct)
        out.write(b"a")
        out.write(b"b")
        self.clock.advance(0)
        self.assertEqual(transport.value(), b"ab")
        self.assertEqual(out.transport_buffered(), 0)

    def test_plain_tcp_connections_are_written_directly(self) -> None:
        from twisted.internet import tcp
        transport = tcp.Connection.__new__(tcp.Connection)
        self.assertTrue(Outbound(transport, self.scheduler).direct)

    def test_discard_forgets_the_queue(self) -> None:
        sock = FakeSocket()
        out, transport = direct_outbound(sock, self.scheduler)
        out.write(b"never")
        out.discard()
        self.clock.advance(0)
        self.assertEqual((sock.sent, transport.written, out.size), ([], [], 0))


class PollingReactor(Clock):
    """A Clock with a ``doIteration`` that dispatches the given events, like a poll."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list = []
        self.polls = 0

    def doIteration(self, timeout) -> None:
        self.polls += 1
        events, self.events = self.events, []
        for event in events:
            event()


class TurnEndTests(unittest.TestCase):
    """On a reactor that polls, writes made during its events leave when the poll returns."""

    def setUp(self) -> None:
        self.reactor = PollingReactor()
        self.scheduler = FlushScheduler(self.reactor)

    def test_writes_during_the_poll_leave_after_it_without_a_timed_call(self) -> None:
        socks = [FakeSocket() for _ in range(2)]
        outs = [direct_outbound(s, self.scheduler)[0] for s in socks]
        self.reactor.events = [lambda: outs[0].write(b"a"), lambda: outs[1].write(b"b"),
                               lambda: outs[0].write(b"c")]
        self.reactor.doIteration(0)
        self.assertEqual([s.sent for s in socks], [[b"ac"], [b"b"]])
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.reactor.events = [lambda: outs[0].write(b"d")]
        self.reactor.doIteration(0)
        self.assertEqual(socks[0].sent, [b"ac", b"d"])

    def test_schedulers_of_one_reactor_share_its_turn_end(self) -> None:
        other = FlushScheduler(self.reactor)
        socks = [FakeSocket(), FakeSocket()]
        mine, theirs = direct_outbound(socks[0], self.scheduler)[0], \
            direct_outbound(socks[1], other)[0]
        self.reactor.events = [lambda: mine.write(b"m"), lambda: theirs.write(b"t")]
        self.reactor.doIteration(0)
        self.assertEqual([s.sent for s in socks], [[b"m"], [b"t"]])
        self.assertEqual(self.reactor.polls, 1)  # wrapped once, not once per scheduler

    def test_writes_outside_the_poll_still_get_a_timed_call(self) -> None:
        sock = FakeSocket()
        out = direct_outbound(sock, self.scheduler)[0]
        out.write(b"from a timer")
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        self.reactor.advance(0)
        self.assertEqual(sock.sent, [b"from a timer"])

    def test_a_failing_poll_still_flushes(self) -> None:
        sock = FakeSocket()
        out = direct_outbound(sock, self.scheduler)[0]

        def boom() -> None:
            out.write(b"before the error")
            raise OSError("poll failed")
        self.reactor.events = [boom]
        self.assertRaises(OSError, self.reactor.doIteration, 0)
        self.assertEqual(sock.sent, [b"before the error"])
        out.write(b"next")  # nothing is left marked pending: it gets its timed call
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        self.reactor.advance(0)
        self.assertEqual(sock.sent, [b"before the error", b"next"])


# -- real sockets: a peer that sends pings and never reads -------------------------------

PING = 125 * b"p"


def masked_ping() -> bytes:
    """A client ping frame with a 125-byte payload (the most a control frame holds)."""
    mask = b"\x01\x02\x03\x04"
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(PING))
    return bytes((0x89, 0x80 | len(PING))) + mask + body


@implementer(IPushProducer)
class PingPump:
    """Writes pings as fast as the client's transport drains, up to ``limit`` bytes."""

    chunk = masked_ping() * 500  # 65.5 KB

    def __init__(self, transport, limit: int) -> None:
        self.transport = transport
        self.limit = limit
        self.sent = 0
        self.paused = False
        self.stopped = False
        transport.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and not self.stopped and self.sent < self.limit:
            self.transport.write(self.chunk)
            self.sent += len(self.chunk)

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.stopped = True

    @property
    def done(self) -> bool:
        return self.sent >= self.limit


def shrink_buffers(sock: socket.socket, size: int = 8192) -> None:
    """Keep the kernel's share small, so the test reaches the server's own queue quickly."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


class UnreadPingTests(ServerTestCase):
    """Issue: pongs were written past the send bound and the peer was read regardless."""

    settings = Settings(rate_limit=10_000)
    #: Far beyond Twisted's 64 KiB buffer, the kernel's buffers and any bound below.
    flood = 16 * 1024 * 1024

    def held_for(self, link) -> int:
        """Bytes the server holds for ``link``: this turn's queue plus the transport's buffer."""
        return link._out.size + link._out.transport_buffered()

    @defer.inlineCallbacks
    def flood_with_unread_pings(self, authenticate: bool):
        peer = yield self.connect_small_window()
        if authenticate:
            yield peer.auth("pinger")
            link = self.server.router.sessions[peer.session_id].link
        else:
            [link] = self.server.router.links
        shrink_buffers(peer.transport.getHandle())
        shrink_buffers(link.transport.getHandle())
        peer.transport.pauseProducing()  # never reads a pong
        pump = PingPump(peer.transport, self.flood)
        self.addCleanup(pump.stopProducing)
        peak = [0]

        def stalled() -> bool:
            peak[0] = max(peak[0], self.held_for(link))
            not_read = link.transport not in reactor.getReaders()
            return pump.done or (link._paused and not_read and pump.paused)
        yield eventually(stalled, seconds=20, what="the server to stop reading the pinger")
        return peer, link, pump, peak[0]

    def assert_bounded(self, link, pump, peak: int) -> None:
        self.assertFalse(pump.done, "the server read every ping although none was answered")
        self.assertNotIn(link.transport, reactor.getReaders())
        # Twisted's 64 KiB buffer, plus the pongs for the rest of the read that filled it.
        bound = 3 * 64 * 1024
        self.assertLessEqual(peak, bound)
        self.assertLessEqual(self.held_for(link), bound)
        self.assertLessEqual(len(link.data), 2 * 64 * 1024)

    @defer.inlineCallbacks
    def test_unread_pings_before_auth_are_bounded(self):
        peer, link, pump, peak = yield self.flood_with_unread_pings(authenticate=False)
        self.assert_bounded(link, pump, peak)

    @defer.inlineCallbacks
    def test_unread_pings_after_auth_are_bounded_and_reading_resumes(self):
        peer, link, pump, peak = yield self.flood_with_unread_pings(authenticate=True)
        self.assert_bounded(link, pump, peak)
        sent_when_stalled = pump.sent
        pump.stopProducing()
        peer.transport.resumeProducing()  # the peer reads its pongs at last
        yield eventually(lambda: not link._paused and link.transport in reactor.getReaders(),
                         what="the server to read the pinger again")
        yield peer.round_trip()  # still connected, and answered in order
        self.assertGreaterEqual(pump.sent, sent_when_stalled)
        self.assertIn(peer.session_id, self.server.router.sessions)


class PongBoundTests(ServerTestCase):
    """Pongs count against ``max_send_buffer`` like every other byte: past it, 4008."""

    settings = Settings(rate_limit=10_000, max_send_buffer=8 * 1024)

    @defer.inlineCallbacks
    def test_pongs_past_the_send_bound_close_with_4008(self):
        peer = yield self.connect_small_window()
        yield peer.auth("pinger")
        link = self.server.router.sessions[peer.session_id].link
        shrink_buffers(peer.transport.getHandle())
        shrink_buffers(link.transport.getHandle())
        peer.transport.pauseProducing()
        pump = PingPump(peer.transport, 16 * 1024 * 1024)
        self.addCleanup(pump.stopProducing)
        yield eventually(lambda: self.sample("symple_disconnects_total", reason="slow_consumer"),
                         seconds=20, what="the pinger to be cut as a slow consumer")
        self.assertFalse(pump.done)
        yield eventually(lambda: link not in self.server.router.links, what="the link to close")
        self.assertNotIn(peer.session_id, self.server.router.sessions)
