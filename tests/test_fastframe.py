"""The fast text-frame path (symple_tx.fastframe) against Autobahn's own parser.

Every stream is fed, in the same chunks, to two protocols that differ only in
``fast_frames``; what reaches the application, what the server writes back
(pongs, close frames) and how the connection ends must be the same.  Tests
also check that the common case really skips Autobahn's parser.
"""

from __future__ import annotations

import struct
from typing import Any, Optional

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from symple_tx.fastframe import FastTextFrames, parse_text_frame, server_text_frame, unmask

LIMIT = 1024
HANDSHAKE = (b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
             b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             b"Sec-WebSocket-Version: 13\r\n\r\n")
TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes = b"", fin: bool = True, mask: Optional[bytes] = b"\x0f\xa1\x33\xc4",
          rsv: int = 0, length: Optional[int] = None, wide: Optional[int] = None) -> bytes:
    """A client frame; ``length``/``wide`` force a declared length or its encoding (2 or 8)."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    masked = 0x80 if mask is not None else 0
    if wide is None:
        wide = 0 if n < 126 else 2 if n < 65536 else 8
    if wide == 0:
        head = bytes((first, masked | n))
    elif wide == 2:
        head = bytes((first, masked | 126)) + struct.pack("!H", n)
    else:
        head = bytes((first, masked | 127)) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


class Recorder(FastTextFrames, WebSocketServerProtocol):
    """Records what reaches the application; refuses messages over LIMIT like the server."""

    _fast_frame_limit = LIMIT

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple] = []
        self.parsed_by_autobahn = 0

    def processData(self) -> bool:
        self.parsed_by_autobahn += 1
        return super().processData()

    def onMessageFrameBegin(self, length: int) -> None:
        super().onMessageFrameBegin(length)
        if self.message_data_total_length > LIMIT:
            self.events.append(("too big", self.message_data_total_length))
            self.sendClose(4413, "too big")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.events.append(("message", payload, isBinary))

    def onPing(self, payload: bytes) -> None:
        self.events.append(("ping", payload))
        super().onPing(payload)

    def onPong(self, payload: bytes) -> None:
        self.events.append(("pong", payload))

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.events.append(("close", wasClean, code, reason))


class Transport(StringTransport):
    """Autobahn unregisters a producer on every drop, registered or not (as TCP allows)."""

    def unregisterProducer(self) -> None:
        self.producer = None


def open_protocol(fast: bool, utf8validate: bool = False) -> tuple[Recorder, StringTransport]:
    factory = WebSocketServerFactory("ws://localhost")
    factory.setProtocolOptions(failByDrop=False, utf8validateIncoming=utf8validate,
                               maxFramePayloadSize=0, maxMessagePayloadSize=0,
                               autoPingInterval=0, openHandshakeTimeout=0,
                               closeHandshakeTimeout=0)
    factory.protocol = Recorder
    protocol = factory.buildProtocol(None)
    protocol.fast_frames = fast
    transport = Transport()
    protocol.makeConnection(transport)
    protocol.dataReceived(HANDSHAKE)
    assert transport.value().startswith(b"HTTP/1.1 101"), transport.value()
    transport.clear()
    protocol.parsed_by_autobahn = 0
    return protocol, transport


def run(chunks: list[bytes], fast: bool, utf8validate: bool = False) -> dict[str, Any]:
    protocol, transport = open_protocol(fast, utf8validate)
    for chunk in chunks:
        if transport.disconnecting:
            break
        protocol.dataReceived(chunk)
    written = transport.value()
    if transport.disconnecting:
        protocol.connectionLost(Failure(ConnectionDone()))
    return {"events": protocol.events, "written": written, "state": protocol.state,
            "closed": bool(transport.disconnecting), "autobahn": protocol.parsed_by_autobahn}


def close_sent(written: bytes) -> Optional[int]:
    """The status code of the close frame the server wrote (unmasked, at the end), if any."""
    at = written.rfind(b"\x88")
    if at < 0 or len(written) < at + 4:
        return None
    return struct.unpack("!H", written[at + 2:at + 4])[0]


def chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(stream)})
    return [stream[a:b] for a, b in zip([0] + points, points + [len(stream)])]


class DifferentialTestCase(unittest.TestCase):
    def compare(self, chunks: list[bytes], utf8validate: bool = False) -> dict[str, Any]:
        """Both paths agree on everything observable; returns the fast run."""
        fast = run(chunks, True, utf8validate)
        slow = run(chunks, False, utf8validate)
        for key in ("events", "written", "state", "closed"):
            self.assertEqual(fast[key], slow[key], f"{key} differ for {chunks!r}")
        return fast


class CommonCaseTests(DifferentialTestCase):
    def test_whole_text_frames_skip_autobahns_parser(self):
        stream = b"".join(frame(TEXT, b'{"type":"message","n":%d}' % i) for i in range(3))
        result = self.compare([stream])
        self.assertEqual([e[1] for e in result["events"]], [b'{"type":"message","n":%d}' % i
                                                              for i in range(3)])
        self.assertEqual(result["autobahn"], 0)

    def test_16_bit_lengths_and_the_limit(self):
        for n in (125, 126, 1000, LIMIT):
            result = self.compare([frame(TEXT, b"x" * n)])
            self.assertEqual(result["events"], [("message", b"x" * n, False)])
            self.assertEqual(result["autobahn"], 0, n)

    def test_empty_text_frame(self):
        result = self.compare([frame(TEXT, b"")])
        self.assertEqual(result["events"], [("message", b"", False)])
        self.assertEqual(result["autobahn"], 0)

    def test_masks(self):
        payload = bytes(range(256)) * 3
        for mask in (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x01\x02\x03\x04",
                     b"\x80\x00\x00\x01"):
            result = self.compare([frame(TEXT, payload[:LIMIT], mask=mask)])
            self.assertEqual(result["events"], [("message", payload[:LIMIT], False)])

    def test_frames_split_over_reads_at_every_offset(self):
        stream = frame(TEXT, b"first") + frame(TEXT, b"s" * 300) + frame(TEXT, b"third")
        for cut in range(1, len(stream)):
            result = self.compare(chunked(stream, [cut]))
            self.assertEqual([e[1] for e in result["events"]], [b"first", b"s" * 300, b"third"])

    def test_a_read_after_a_split_frame_is_fast_again(self):
        split = frame(TEXT, b"split")
        protocol, _ = open_protocol(fast=True)
        protocol.dataReceived(split[:4])
        protocol.dataReceived(split[4:])
        before = protocol.parsed_by_autobahn
        protocol.dataReceived(frame(TEXT, b"whole"))
        self.assertEqual(protocol.parsed_by_autobahn, before)
        self.assertEqual([e[1] for e in protocol.events], [b"split", b"whole"])

    def test_invalid_utf8_passes_when_validation_is_off(self):
        """The server leaves UTF-8 to its JSON decoder (a clear 400), as Autobahn would here."""
        result = self.compare([frame(TEXT, b"\xff\xfe{}")])
        self.assertEqual(result["events"], [("message", b"\xff\xfe{}", False)])
        self.assertEqual(result["autobahn"], 0)


class AutobahnCaseTests(DifferentialTestCase):
    """What the fast path must leave to Autobahn, with Autobahn's outcome."""

    def test_invalid_utf8_with_validation_on_fails_the_connection_1007(self):
        result = self.compare([frame(TEXT, b"ok"), frame(TEXT, b"\xff\xfe")], utf8validate=True)
        self.assertEqual(result["events"][0], ("message", b"ok", False))
        self.assertEqual(close_sent(result["written"]), 1007)
        self.assertGreater(result["autobahn"], 0)

    def test_fragmented_message(self):
        stream = (frame(TEXT, b"frag", fin=False) + frame(CONT, b"men", fin=False)
                  + frame(CONT, b"ted") + frame(TEXT, b"after"))
        result = self.compare([stream])
        self.assertEqual(result["events"], [("message", b"fragmented", False),
                                            ("message", b"after", False)])

    def test_control_frames_between_fragments(self):
        stream = (frame(TEXT, b"a", fin=False) + frame(PING, b"p1") + frame(CONT, b"b", fin=False)
                  + frame(PONG, b"x") + frame(CONT, b"c") + frame(TEXT, b"whole"))
        for cuts in ([], [3], [9, 17], list(range(0, len(stream), 5))):
            result = self.compare(chunked(stream, cuts))
            self.assertEqual(result["events"], [("ping", b"p1"), ("pong", b"x"),
                                                ("message", b"abc", False),
                                                ("message", b"whole", False)])
            self.assertIn(b"\x8a\x02p1", result["written"])  # the pong, unmasked

    def test_ping_between_whole_text_frames(self):
        stream = frame(TEXT, b"one") + frame(PING, b"hi") + frame(TEXT, b"two")
        result = self.compare([stream])
        self.assertEqual(result["events"], [("message", b"one", False), ("ping", b"hi"),
                                            ("message", b"two", False)])
        self.assertEqual(result["written"], b"\x8a\x02hi")

    def test_text_frame_inside_a_fragmented_message_is_a_protocol_violation(self):
        stream = frame(TEXT, b"a", fin=False) + frame(TEXT, b"b")
        result = self.compare([stream])
        self.assertEqual(close_sent(result["written"]), 1002)

    def test_continuation_without_a_message_is_a_protocol_violation(self):
        result = self.compare([frame(TEXT, b"ok") + frame(CONT, b"stray")])
        self.assertEqual(result["events"][0], ("message", b"ok", False))
        self.assertEqual(close_sent(result["written"]), 1002)

    def test_unmasked_client_frame(self):
        result = self.compare([frame(TEXT, b"ok") + frame(TEXT, b"bare", mask=None)])
        self.assertEqual(result["events"][0], ("message", b"ok", False))
        self.assertEqual(close_sent(result["written"]), 1002)

    def test_reserved_bits_and_opcodes(self):
        for bad in (frame(TEXT, b"x", rsv=1), frame(TEXT, b"x", rsv=4), frame(0x3, b"x"),
                    frame(0xB, b"x")):
            result = self.compare([frame(TEXT, b"ok") + bad])
            self.assertEqual(result["events"][0], ("message", b"ok", False))
            self.assertEqual(close_sent(result["written"]), 1002, bad)

    def test_non_minimal_length_encodings(self):
        for bad in (frame(TEXT, b"short", wide=2), frame(TEXT, b"x" * 200, wide=8)):
            result = self.compare([bad])
            self.assertEqual(close_sent(result["written"]), 1002)

    def test_64_bit_length(self):
        result = self.compare([frame(TEXT, b"y" * 70000)])
        self.assertEqual(result["events"][0], ("too big", 70000))
        self.assertEqual(close_sent(result["written"]), 4413)

    def test_oversize_frames_meet_the_protocols_refusal(self):
        result = self.compare([frame(TEXT, b"ok") + frame(TEXT, b"z" * (LIMIT + 1))])
        self.assertEqual(result["events"][:2], [("message", b"ok", False),
                                                ("too big", LIMIT + 1)])
        self.assertEqual(close_sent(result["written"]), 4413)

    def test_oversize_fragmented_message(self):
        stream = frame(TEXT, b"a" * 600, fin=False) + frame(CONT, b"b" * 600)
        result = self.compare([stream])
        self.assertEqual(result["events"][0], ("too big", 1200))

    def test_binary_frames(self):
        result = self.compare([frame(BINARY, b"\x00\x01") + frame(TEXT, b"t")])
        self.assertEqual(result["events"], [("message", b"\x00\x01", True),
                                            ("message", b"t", False)])

    def test_close_codes(self):
        """Valid codes are answered with 1000; invalid ones (999, 1005, bad UTF-8, one byte) refused."""
        cases = {b"": 1000, struct.pack("!H", 1000): 1000, struct.pack("!H", 4000) + b"bye": 1000,
                 struct.pack("!H", 999): 1002, struct.pack("!H", 1005): 1002,
                 struct.pack("!H", 1000) + b"\xff": 1007, b"\x03": 1002}
        for payload, code in cases.items():
            result = self.compare([frame(TEXT, b"before") + frame(CLOSE, payload)
                                   + frame(TEXT, b"after close")])
            self.assertEqual(result["events"][0], ("message", b"before", False))
            self.assertNotIn(("message", b"after close", False), result["events"])
            self.assertEqual(close_sent(result["written"]) or 1000, code, payload)

    def test_oversize_control_frames(self):
        for bad in (frame(PING, b"p" * 126), frame(PING, b"p", fin=False)):
            result = self.compare([bad])
            self.assertEqual(close_sent(result["written"]), 1002)


# -- random streams ----------------------------------------------------------------------

masks = st.binary(min_size=4, max_size=4)
text = st.binary(max_size=300)
frames = st.one_of(
    st.builds(lambda p, m: [frame(TEXT, p, mask=m)], text, masks),
    st.builds(lambda p, m: [frame(TEXT, p, mask=m)], st.binary(min_size=LIMIT - 2,
                                                               max_size=LIMIT + 2), masks),
    st.builds(lambda p, m: [frame(BINARY, p, mask=m)], text, masks),
    st.builds(lambda p, m: [frame(PING, p, mask=m)], st.binary(max_size=125), masks),
    st.builds(lambda p, m: [frame(PONG, p, mask=m)], st.binary(max_size=125), masks),
    st.builds(lambda a, b, p: [frame(TEXT, a, fin=False), frame(PING, p), frame(CONT, b)],
              text, text, st.binary(max_size=20)),
    st.builds(lambda p: [frame(TEXT, p, mask=None)], text),
    st.builds(lambda p: [frame(TEXT, p, rsv=2)], text),
)


def stream_and_cuts():
    return st.lists(frames, min_size=1, max_size=8).flatmap(
        lambda fs: st.tuples(st.just(b"".join(b for f in fs for b in f)),
                             st.lists(st.integers(0, sum(len(b) for f in fs for b in f)),
                                      max_size=6)))


class RandomStreamTests(DifferentialTestCase):
    @settings(max_examples=300, deadline=None)
    @given(stream_and_cuts())
    def test_random_frame_sequences_and_chunkings_agree(self, case):
        stream, cuts = case
        self.compare(chunked(stream, cuts))


# -- the helpers themselves ---------------------------------------------------------------


class HelperTests(unittest.TestCase):
    def test_unmask_matches_the_rfc_for_every_length_class(self):
        mask = b"\x37\xfa\x21\x3d"
        for n in (0, 1, 3, 4, 5, 127, 2048, 2049, 5000):
            payload = bytes((i * 7) & 0xFF for i in range(n))
            expected = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            self.assertEqual(unmask(payload, mask), expected, n)

    def test_parse_text_frame_declines_what_is_not_the_common_case(self):
        self.assertEqual(parse_text_frame(frame(TEXT, b"hello"), 0, LIMIT), (b"hello", 11))
        whole = frame(TEXT, b"hello")
        for declined in (whole[:-1], frame(BINARY, b"x"), frame(TEXT, b"x", fin=False),
                         frame(TEXT, b"x", mask=None), frame(PING, b"x"),
                         frame(TEXT, b"x" * 130, wide=8), frame(TEXT, b"x", wide=2),
                         frame(TEXT, b"x" * (LIMIT + 1))):
            self.assertIsNone(parse_text_frame(declined, 0, LIMIT), declined[:4])

    def test_parse_text_frame_at_an_offset(self):
        stream = frame(TEXT, b"one") + frame(TEXT, b"two" * 50)
        payload, end = parse_text_frame(stream, 0, LIMIT)
        self.assertEqual(parse_text_frame(stream, end, LIMIT), (b"two" * 50, len(stream)))


class ServerTextFrameTests(unittest.TestCase):
    """The frames the server sends are byte for byte Autobahn's prepared frames."""

    def test_every_length_encoding(self):
        for n in (0, 1, 125, 126, 127, 65535, 65536, 70000):
            payload = bytes(i % 251 for i in range(n))
            self.assertEqual(server_text_frame(payload),
                             PreparedMessage(payload, False, False, True).payloadHybi, n)
