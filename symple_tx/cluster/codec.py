"""The messages processes exchange over Redis, and the channel names.

Three shapes, told apart by their first byte:

* a **delivery** (``d``), on the receiving process's own channel: a routed
  frame and the ids of that process's sessions that receive it, as
  ``d<TAB>kind<TAB>id id id<TAB>payload``.  The payload is the frame's JSON,
  serialized once by the sending process and passed through untouched.
* a **direct delivery** (``u``), on the addressed user's channel: a frame
  for a ``user|id`` its sender's process did not know, as
  ``u<header><TAB>payload``; the header is a JSON object (which holds no
  raw tab) starting with the sending ``node``, then the target session
  ``id`` and ``user``, the frame's ``kind``, and the sender's ``from`` user
  and named ``rooms``, so the holder can check the shared room.
* a **control event** (``{``): a JSON object with ``op`` and the sending
  ``node``.  On a room's channel: ``open``, ``join``, ``leave``,
  ``presence`` (each with the session's whole state, ``s``), ``close``
  (``id``) and ``members``; on the control channel: ``beat``, ``sync``,
  ``state``, ``bye``; on a node's channel: ``sync``, ``state``, ``want``.
  See docs/clustering.md.

Channel names are ``symple_tx.redis.keys.Keys``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Optional

import orjson

if TYPE_CHECKING:
    from ..session import Session

DELIVERY = ord("d")


def delivery(kind: str, session_ids: Iterable[str], payload: bytes) -> bytes:
    return b"d\t%s\t%s\t%s" % (kind.encode(), " ".join(session_ids).encode(), payload)


def parse_delivery(message: bytes) -> tuple[str, list[str], bytes]:
    """Raise ValueError when the message is not a delivery."""
    tag, kind, ids, payload = message.split(b"\t", 3)
    if tag != b"d":
        raise ValueError("not a delivery")
    return kind.decode(), ids.decode().split(), payload


def direct(node: str, user: str, session_id: str, kind: str, sender: "Session",
           payload: bytes) -> bytes:
    header = orjson.dumps({"node": node, "id": session_id, "user": user, "kind": kind,
                           "from": sender.user, "rooms": sorted(sender.rooms)})
    return b"u%s\t%s" % (header, payload)


def own_direct_marker(node: str) -> bytes:
    """How every direct delivery ``node`` sends begins (Redis hands them back to
    it when it has a session of the addressed user too)."""
    return b'u{"node":' + orjson.dumps(node) + b","


def parse_direct(message: bytes) -> tuple[str, str, str, str, list[str], bytes]:
    """(session id, user, kind, sender's user, sender's rooms, payload);
    ValueError when the message is not a direct delivery."""
    if message[:1] != b"u":
        raise ValueError("not a direct delivery")
    header, tab, payload = message[1:].partition(b"\t")
    if not tab:
        raise ValueError("direct delivery without a payload")
    fields = orjson.loads(header)
    if not isinstance(fields, dict):
        raise ValueError("direct delivery without a header")
    # Any: each is checked to be a string (and the rooms a list of them) below.
    values: list[Any] = [fields.get(key) for key in ("id", "user", "kind", "from")]
    rooms: Any = fields.get("rooms")
    if not all(isinstance(v, str) for v in values) or not isinstance(rooms, list) \
            or not all(isinstance(r, str) for r in rooms):
        raise ValueError("direct delivery with an invalid header")
    session_id, user, kind, sender = values
    return session_id, user, kind, sender, rooms, payload


def event(op: str, node: str, **fields: Any) -> bytes:
    return orjson.dumps({"op": op, "node": node, **fields})


def own_marker(node: str) -> bytes:
    """What follows the ``op`` in every event ``node`` sends (see ``is_from``)."""
    return b'","node":' + orjson.dumps(node)


def is_from(message: bytes, marker: bytes) -> bool:
    """Whether ``message`` is an event sent with ``marker`` (``own_marker``), unparsed.

    ``event`` writes ``op`` then ``node`` first, so the node is found right
    after the op's short name; a process's own events come back to it on
    each of its rooms' channels and are dropped this way, without parsing.
    """
    if not message.startswith(b'{"op":"'):
        return False
    end = message.find(b'"', 7, 40)
    return end > 0 and message.startswith(marker, end)


def parse_event(message: bytes) -> Optional[dict]:
    """The control event, or None when the message is not one."""
    try:
        value = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("op"), str) \
            or not isinstance(value.get("node"), str):
        return None
    return value


def session_state(session: "Session") -> dict:
    """What another process needs to mirror a session."""
    return {"id": session.id, "user": session.user, "name": session.name,
            "host": session.host, "type": session.peer_type,
            "rooms": sorted(session.rooms), "presence": session.presence}
