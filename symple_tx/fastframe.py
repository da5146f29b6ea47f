"""A cheaper decode for the frame a signalling server receives most: one whole text frame.

Autobahn parses every frame through a general state machine: a ``FrameHeader``
and a native masker object per frame, slicing the buffer once per step, and
five or six callbacks (``onFrameBegin``, ``onMessageBegin``,
``onMessageFrameBegin``, ``onMessageFrameData``, ``onMessageFrameEnd``,
``onMessageEnd``) before the message reaches ``onMessage``.  Nearly every
frame a Symple peer sends is a single, unfragmented, masked text frame that
arrives whole in one read; for those, ``FastTextFrames`` reads the header,
unmasks the payload and calls ``onMessage`` directly.

Everything else takes Autobahn's own path, unchanged: control frames (ping,
pong, close), fragments and continuation frames, binary frames, reserved bits
or opcodes, unmasked client frames, 64-bit lengths and non-minimal length
encodings, frames larger than the protocol's own limit (``_fast_frame_limit``),
frames split over reads, any connection not in the open state, and any
connection whose options ask Autobahn to look at each frame (UTF-8
validation, compression, frame/octet logging, timings).  The fast path is
taken only while Autobahn holds no partial frame, so the two never see the
same bytes.

This relies on Autobahn's protocol attributes (``state``, ``data``,
``current_frame``, ``inside_message``, ``failedByMe``, ``_perMessageCompress``,
the auto-ping fields); setup.cfg pins the Autobahn versions it was checked
against, and tests/test_fastframe.py compares both paths frame by frame.
"""

from __future__ import annotations

from typing import Any, Optional

from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.xormasker import create_xor_masker

__all__ = ["FastTextFrames", "parse_text_frame", "server_text_frame", "unmask"]

_OPEN = WebSocketProtocol.STATE_OPEN
#: FIN set, no reserved bits, opcode 1 (text).
_FIN_TEXT = 0x81
#: Up to this size Python's big-integer XOR beats creating a native masker.
_INT_UNMASK_MAX = 2048


#: Headers of unmasked FIN text frames with a 7-bit length, by length.
_SHORT_HEADS = tuple(bytes((_FIN_TEXT, n)) for n in range(126))


def server_text_frame(payload: bytes) -> bytes:
    """``payload`` as one unmasked FIN text frame, the bytes a server sends.

    The same bytes as Autobahn's ``PreparedMessage(payload, False, False,
    True).payloadHybi``, without building an object (and a list to join) per
    routed message.
    """
    n = len(payload)
    if n < 126:
        return _SHORT_HEADS[n] + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


def unmask(payload: bytes, mask: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``mask`` (RFC 6455 section 5.3)."""
    n = len(payload)
    if n > _INT_UNMASK_MAX:
        return create_xor_masker(mask, n).process(payload)
    if not n:
        return b""
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def parse_text_frame(data: bytes, pos: int, limit: int) -> Optional[tuple[bytes, int]]:
    """The payload and end of the complete masked FIN text frame at ``pos``, or None.

    None means "not the common case": anything else at ``pos`` (or too little
    data) is for Autobahn to parse.  Payloads over ``limit`` bytes are left to
    Autobahn too, so the protocol's own size refusal applies unchanged.
    """
    available = len(data) - pos
    if available < 6 or data[pos] != _FIN_TEXT:
        return None
    length = data[pos + 1]
    if not length & 0x80:  # unmasked: a protocol violation, reported by Autobahn
        return None
    length &= 0x7F
    if length < 126:
        start = pos + 6
    elif length == 126:
        if available < 8:
            return None
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 126:  # not the minimal encoding: a protocol violation
            return None
        start = pos + 8
    else:  # 64-bit lengths: beyond any limit this server sets
        return None
    end = start + length
    if length > limit or end > len(data):
        return None
    return unmask(data[start:end], data[start - 4:start]), end


class FastTextFrames:
    """Mixin for an Autobahn ``WebSocketProtocol``: whole text frames skip the state machine.

    ``_fast_frame_limit`` is the largest payload taken on the fast path (the
    protocol's message size limit, so larger frames meet its refusal).
    """

    _fast_frame_limit = 0
    #: False turns the fast path off (the tests compare both paths).
    fast_frames = True

    def _fast_frames_allowed(self: Any) -> bool:
        """Whether these options leave nothing for Autobahn to do per frame."""
        return bool(self.fast_frames and not self.utf8validateIncoming and not self.logFrames
                    and not self.logOctets and not self.trackedTimings and self.applyMask)

    def dataReceived(self: Any, data: bytes) -> None:
        # (Autobahn's own dataReceived also formats a debug line's arguments on every read.)
        if (self.state == _OPEN and self.current_frame is None and not self.data
                and not self.inside_message and not self.failedByMe
                and self._perMessageCompress is None and self.websocket_version
                and self._fast_frames_allowed()):
            pos, limit = 0, self._fast_frame_limit
            while True:
                frame = parse_text_frame(data, pos, limit)
                if frame is None:
                    break
                payload, pos = frame
                # What Autobahn's onFrameEnd does for a data frame: traffic
                # counts as a sign of life while a ping is unanswered.
                if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
                    self._cancelAutoPingTimeoutCall()
                self.onMessage(payload, False)
                if self.state != _OPEN:  # closing: Autobahn handles what follows
                    break
            if pos:
                if pos == len(data):
                    return
                data = data[pos:]
        self._dataReceived(data)
