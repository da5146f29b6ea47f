"""For backends: publish Symple frames through Redis and manage session tokens.

``Emitter`` publishes on ``symple:broadcast``, which every server node routes
to its local sessions (docs/spec.md §9); ``Sessions`` writes the
``symple:session:<token>`` keys the server reads when authentication is on.
Keys, channel and JSON are those of the Ruby gem (``Symple::Emitter``,
``Symple::Session``), so Ruby and Python backends can share one server.

Every method returns a Deferred; ``Emitter.from_url`` and
``Sessions.from_url`` open their own Redis connection, where a command waits
at most ``timeout`` seconds for Redis and then fails with
``RedisUnavailable`` (a backend must not hang because Redis is away).
"""

from __future__ import annotations

from typing import Any, Optional, Union

from twisted.internet.defer import Deferred

from . import wire
from .redis import connect
from .redis.address import RedisAddress
from .redis.connect import COMMAND_TIMEOUT, RedisUnavailable
from .redis.keys import Keys
from .redis.store import SESSION_PREFIX, RedisSessionStore

BROADCAST_CHANNEL = Keys().broadcast

#: A destination: ``user|id``, a room (a user's own room included) or rooms.
Target = Union[str, list[str], tuple[str, ...]]


__all__ = ["BROADCAST_CHANNEL", "COMMAND_TIMEOUT", "Emitter", "RedisUnavailable", "Sessions",
           "connect_redis"]


def connect_redis(url: str, ca_file: Optional[str] = None,
                  timeout: Optional[float] = COMMAND_TIMEOUT) -> Any:
    """A lazy, self-reconnecting txredisapi connection for a Redis URL.

    ``rediss://`` verifies the server's certificate against the system's CAs,
    or ``ca_file`` (or the URL's ``?ssl_ca_certs=``).  A command still
    unanswered after ``timeout`` seconds (None: no bound) is cancelled and
    fails with ``RedisUnavailable``, which names the address and the reason.
    """
    return connect.pool(RedisAddress.parse(url, ca_file), timeout=timeout)


class Sessions(RedisSessionStore):
    """Session tokens at ``symple:session:<token>``: the JSON object the server merges at auth."""

    @classmethod
    def from_url(cls, url: str, prefix: str = SESSION_PREFIX, ca_file: Optional[str] = None,
                 timeout: Optional[float] = COMMAND_TIMEOUT) -> "Sessions":
        return cls(connect_redis(url, ca_file, timeout), prefix)

    def set(self, token: str, session: dict, ttl: Optional[int] = None) -> Deferred:
        """Store a session (``user``, ``name``, ``rooms``, extra fields); expires after ``ttl`` s."""
        _check_token(token)
        if not isinstance(session, dict):
            raise TypeError(f"a session must be a dict, not {type(session).__name__}")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")
        value = wire.dumps(session).decode("utf-8")
        if ttl is None:
            return self.redis.set(self.prefix + token, value)
        return self.redis.set(self.prefix + token, value, expire=int(ttl))

    def get(self, token: str) -> Deferred:
        """Fires with the stored dict, or None when the token is unknown (or not a JSON object)."""
        _check_token(token)
        return super().get(token)

    def touch(self, token: str, ttl: int) -> Deferred:
        """Extend the expiry; fires with True when the token existed."""
        _check_token(token)
        return super().touch(token, int(ttl)).addCallback(bool)

    def exists(self, token: str) -> Deferred:
        _check_token(token)
        return self.redis.exists(self.prefix + token).addCallback(bool)

    def delete(self, token: str) -> Deferred:
        """Remove the token (log out); fires with True when it existed."""
        _check_token(token)
        return self.redis.delete(self.prefix + token).addCallback(bool)


def _check_token(token: Any) -> None:
    if not isinstance(token, str) or not token:
        raise ValueError("a session token must be a non-empty string")


class Emitter:
    """Publishes frames on ``symple:broadcast``; builders return new emitters.

    ``Emitter(redis).sender("bot|backend").to("team-a").send({"text": "hi"})``
    """

    def __init__(self, redis: Any, from_: Optional[str] = None,
                 rooms: Optional[Target] = None, channel: str = BROADCAST_CHANNEL,
                 sessions: Optional[Sessions] = None) -> None:
        self.redis = redis
        self.sender_address = from_
        self.target: Optional[Target] = _target(rooms) if rooms is not None else None
        self.channel = channel
        self.sessions = sessions or Sessions(redis)

    @classmethod
    def from_url(cls, url: str, ca_file: Optional[str] = None,
                 timeout: Optional[float] = COMMAND_TIMEOUT, **options: Any) -> "Emitter":
        return cls(connect_redis(url, ca_file, timeout), **options)

    # -- chained builders ------------------------------------------------------

    def _with(self, **changes: Any) -> "Emitter":
        clone = object.__new__(Emitter)
        clone.__dict__.update(self.__dict__, **changes)
        return clone

    def sender(self, address: str) -> "Emitter":
        """Frames carry this ``from`` (e.g. ``"bot|backend"``) unless they set one."""
        return self._with(sender_address=address)

    from_ = sender

    def to(self, target: Target) -> "Emitter":
        """Frames go to ``user|id``, a room, or a list of rooms unless they set ``to``."""
        return self._with(target=_target(target))

    def in_rooms(self, *rooms: str) -> "Emitter":
        return self.to(list(rooms))

    # -- publishing --------------------------------------------------------------

    def frame(self, frame: dict) -> dict:
        """The frame as it will be published: ``from`` and ``to`` filled in, validated."""
        if not isinstance(frame, dict):
            raise TypeError(f"a frame must be a dict, not {type(frame).__name__}")
        out = dict(frame)
        if self.sender_address is not None:
            out.setdefault("from", self.sender_address)
        if self.target is not None:
            out.setdefault("to", self.target)
        kind = out.get("type")
        if not isinstance(kind, str) or not kind:
            raise ValueError("a frame needs a non-empty string 'type'")
        if "to" not in out:
            raise ValueError("a frame needs 'to' (user|id, a room or a list of rooms): "
                             "use .to(...) or set it in the frame")
        _target(out["to"])
        return out

    def emit(self, frame: dict) -> Deferred:
        """Publish one frame; fires with the number of server nodes that received it."""
        return self.redis.publish(self.channel, wire.dumps(self.frame(frame)).decode("utf-8"))

    def send(self, data: Any, **fields: Any) -> Deferred:
        """A ``message`` carrying ``data``."""
        return self.emit({"type": "message", **fields, "data": data})

    send_message = send

    def send_presence(self, data: Optional[dict] = None, **fields: Any) -> Deferred:
        """A ``presence`` frame; keyword arguments become ``data`` fields."""
        return self.emit({"type": "presence", "data": {**(data or {}), **fields}})

    def send_event(self, name: str, data: Any = None, **fields: Any) -> Deferred:
        frame = {"type": "event", "name": name, **fields}
        if data is not None:
            frame["data"] = data
        return self.emit(frame)

    def send_command(self, node: str, data: Any = None, **fields: Any) -> Deferred:
        frame = {"type": "command", "node": node, **fields}
        if data is not None:
            frame["data"] = data
        return self.emit(frame)

    # -- sessions (as the Ruby emitter offers them) --------------------------------

    def create_session(self, token: str, session: dict, ttl: Optional[int] = None) -> Deferred:
        return self.sessions.set(token, session, ttl)

    def destroy_session(self, token: str) -> Deferred:
        return self.sessions.delete(token)


def _target(target: Any) -> Target:
    """Validate a destination; a tuple becomes a list (JSON array)."""
    if isinstance(target, tuple):
        target = list(target)
    if isinstance(target, str):
        user, bar, session_id = target.partition("|")
        if wire.valid_room(user) and (not bar or session_id):
            return target
    if isinstance(target, list) and target and all(wire.valid_room(r) for r in target):
        return target
    raise ValueError(f"invalid destination {target!r}: expected 'user|id', a room name "
                     f"or a non-empty list of room names")
