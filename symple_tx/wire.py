"""The Symple v4 wire format: decoding, validation and frame builders.

Pure functions and small value types only: no I/O and no Twisted, so every
rule here is unit-tested without sockets.  JSON goes through orjson, which is
about ten times faster than the standard library and rejects invalid UTF-8
and lone surrogates on its own.
"""

from __future__ import annotations

import secrets
from typing import Any, Iterable, TypeGuard

import orjson

PROTOCOL = "symple/4"
MAX_ROOM_NAME = 256
#: Deepest nesting a frame may have.  orjson re-encodes at most 255 levels, so
#: anything the server cannot serialize again is refused before it is routed
#: or stored as presence (where it would break every later snapshot).
MAX_DEPTH = 128
#: A payload this short cannot open (and close) more than MAX_DEPTH levels.
_SHALLOW = 2 * MAX_DEPTH + 1
ROUTED_TYPES = frozenset({"message", "presence", "command", "event"})
CONTROL_TYPES = frozenset({"auth", "join", "leave", "close"})
#: Keys of ``auth.data`` that may not become peer fields.
RESERVED_PEER_KEYS = frozenset({"id", "user", "name", "online", "type", "token", "host"})

dumps = orjson.dumps
loads = orjson.loads


class ProtocolError(Exception):
    """A refusal that is reported to the peer as an ``error`` frame.

    ``close`` says whether the connection ends after the error frame.
    """

    def __init__(self, status: int, message: str, *, close: bool = False,
                 frame_id: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close
        self.frame_id = frame_id

    @property
    def close_code(self) -> int:
        """Server-initiated closes after an error use ``4000 + status``."""
        return 4000 + self.status


def decode(payload: bytes) -> dict:
    """Parse one text frame into a Symple frame object or raise 400."""
    try:
        frame = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
        if "not valid UTF-8" in reason:
            # orjson blames "surrogates" for any bad byte; say what it is.
            reason = "the frame is not valid UTF-8 text"
        raise ProtocolError(400, f"Invalid JSON: {reason}") from None
    if not isinstance(frame, dict):
        raise ProtocolError(
            400, f"A frame must be a JSON object, not {json_type(frame)}")
    if len(payload) > _SHALLOW and too_deep(payload, frame):
        raise ProtocolError(
            400, f"Frame nested too deeply: at most {MAX_DEPTH} levels of arrays and objects")
    kind = frame.get("type")
    if not isinstance(kind, str) or not kind:
        raise ProtocolError(400, "Missing or invalid 'type' field",
                            frame_id=frame.get("id"))
    return frame


def too_deep(payload: bytes, value: Any) -> bool:
    """Whether ``value`` nests more than ``MAX_DEPTH`` levels.

    Counting brackets in the raw payload (C speed) clears almost every frame
    without walking it; the walk is iterative, so depth cannot hurt it.
    """
    if len(payload) <= _SHALLOW:
        return False
    if payload.count(b"[") + payload.count(b"{") <= MAX_DEPTH:
        return False
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)))
    return False


def json_type(value: Any) -> str:
    """Name a decoded JSON value's type the way JSON does."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def new_session_id() -> str:
    """128 random bits, URL-safe base64: unguessable and never contains ``|``."""
    return secrets.token_urlsafe(16)


def address(user: str, session_id: str) -> str:
    return f"{user}|{session_id}"


def valid_room(name: Any) -> TypeGuard[str]:
    return isinstance(name, str) and 0 < len(name) <= MAX_ROOM_NAME


def check_room(frame: dict) -> str:
    """The ``room`` of a join/leave frame, or a 400 naming the problem."""
    room = frame.get("room")
    if not valid_room(room):
        raise ProtocolError(
            400, f"Invalid room name: expected a non-empty string of at most "
                 f"{MAX_ROOM_NAME} characters", frame_id=frame.get("id"))
    return room


def check_rooms(rooms: Any, what: str = "rooms") -> list[str]:
    """A list of room names from untrusted input, or a 400."""
    if rooms is None:
        return []
    if not isinstance(rooms, list) or not all(valid_room(r) for r in rooms):
        raise ProtocolError(
            400, f"Invalid {what}: expected an array of non-empty strings of "
                 f"at most {MAX_ROOM_NAME} characters")
    return rooms


def strip_tokens(value: Any) -> None:
    """Remove every ``token`` key from nested objects, in place.

    Iterative, so a hostile 1000-level nesting cannot hit the recursion limit.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            item.pop("token", None)
            stack.extend(v for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, (dict, list)))


# -- frames the server builds ------------------------------------------------

def welcome(peer: dict, rooms: Iterable[str]) -> bytes:
    return dumps({"type": "welcome", "protocol": PROTOCOL, "status": 200,
                  "peer": peer, "rooms": list(rooms)})


def error(status: int, message: str, frame_id: Any = None) -> bytes:
    frame: dict[str, Any] = {"type": "error", "status": status, "message": message}
    if frame_id is not None:
        frame["id"] = frame_id
    return dumps(frame)


def presence(sender: str, data: dict) -> bytes:
    return dumps({"type": "presence", "from": sender, "data": data, "probe": False})


def room_ack(kind: str, room: str, frame_id: Any = None) -> bytes:
    frame: dict[str, Any] = {"type": kind, "room": room}
    if frame_id is not None:
        frame["id"] = frame_id
    return dumps(frame)


SHUTDOWN_EVENT = dumps({"type": "event", "name": "shutdown", "subtype": "shutdown",
                        "message": "Server shutting down"})
