"""Authentication: turn an ``auth`` frame into an ``Identity`` or a 401.

Three sources, applied in order: the frame itself (anonymous mode), the
Redis session store (``symple:session:<token>``) when authentication is on,
and the application's auth hook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import orjson
from twisted.internet.defer import Deferred, TimeoutError, inlineCallbacks
from twisted.internet.interfaces import IReactorTime

from . import wire
from .config import Settings
from .hooks import AuthRejected, call_hook
from .redis.store import StoreUnavailable
from .session import Identity
from .wire import ProtocolError


class SessionStore(Protocol):
    """Looks up stored sessions by token (see ``symple_tx.redis.store``)."""

    def get(self, token: str) -> Deferred:
        """Fires with the stored session object, or None when unknown."""

    def touch(self, token: str, ttl: int) -> Deferred:
        """Extend the stored session's expiry."""


@dataclass
class AuthRequest:
    """What an auth hook is given; ``session`` is the stored session, if any."""

    user: str
    name: str
    token: str
    rooms: list[str]
    data: dict[str, Any]
    host: str
    session: Optional[dict[str, Any]] = None
    frame: dict[str, Any] = field(default_factory=dict)


def _refuse(message: str, status: int = 401) -> ProtocolError:
    return ProtocolError(status, message, close=True)


def parse_auth(frame: dict, host: str) -> AuthRequest:
    """Validate the client's ``auth`` frame (the JS client's empty strings included)."""
    user = frame.get("user")
    if not isinstance(user, str) or not user:
        raise _refuse("Missing user field")
    if "|" in user or len(user) > wire.MAX_ROOM_NAME:
        raise _refuse(f"Invalid user field: it must not contain '|' and be at most "
                      f"{wire.MAX_ROOM_NAME} characters")
    name = frame.get("name")
    if name is not None and not isinstance(name, str):
        raise _refuse("Invalid name field: expected a string")
    token = frame.get("token")
    if token is not None and not isinstance(token, str):
        raise _refuse("Invalid token field: expected a string")
    data = frame.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        raise _refuse("Invalid data field: expected an object")
    try:
        rooms = wire.check_rooms(frame.get("rooms"))
    except ProtocolError as exc:
        raise _refuse(exc.message, 400) from None
    return AuthRequest(user=user, name=name or user, token=token or "", rooms=rooms,
                       data=data, host=host, frame=frame)


def _extra(fields: dict) -> dict:
    extra = {k: v for k, v in fields.items() if k not in wire.RESERVED_PEER_KEYS}
    wire.strip_tokens(extra)
    return extra


class Authenticator:
    """Applies the configured authentication policy to ``auth`` frames."""

    def __init__(self, settings: Settings, store: Optional[SessionStore] = None,
                 clock: Optional[IReactorTime] = None) -> None:
        if settings.authentication and store is None and settings.auth_hook is None:
            raise ValueError("authentication needs a session store (--redis) or an --auth-hook")
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[no-redef]
        self.settings = settings
        self.store = store
        self.clock: Any = clock

    @inlineCallbacks
    def authenticate(self, frame: dict, host: str):
        """Fires with an ``Identity``; fails with a closing ``ProtocolError``."""
        request = parse_auth(frame, host)
        settings = self.settings
        identity = Identity(user=request.user, name=frame.get("name") or "",
                            rooms=[] if settings.authentication else request.rooms,
                            extra=_extra(request.data))
        # Whether a trusted source chose the user: always in anonymous mode (the
        # client's choice by design), else the stored session or the hook.
        vouched = not settings.authentication or self.store is None
        if settings.authentication:
            if not request.token:
                raise _refuse("Authentication failed: missing token")
            if self.store is not None:
                try:
                    stored = yield self.store.get(request.token)
                except StoreUnavailable:
                    raise _refuse("Authentication unavailable: the session store (Redis) "
                                  "is unreachable; try again shortly", 503) from None
                if not isinstance(stored, dict):
                    raise _refuse("Authentication failed: unknown token")
                request.session = stored
                self._merge(identity, stored)
                vouched = "user" in stored
                if settings.session_ttl > 0:
                    yield self.store.touch(request.token, settings.session_ttl)
        if settings.auth_hook is not None:
            decision = call_hook(settings.auth_hook, request)
            if settings.hook_timeout > 0:
                decision.addTimeout(settings.hook_timeout, self.clock)
            try:
                verdict = yield decision
            except AuthRejected as exc:
                raise _refuse(str(exc) or "Authentication rejected") from None
            except TimeoutError:
                raise _refuse(f"Authentication timed out: the auth hook did not answer "
                              f"within {settings.hook_timeout:g} s", 504) from None
            if not verdict:
                raise _refuse("Authentication rejected")
            if isinstance(verdict, dict):
                self._merge(identity, verdict)
                vouched = vouched or "user" in verdict
        if not vouched:
            # Never the client's choice: a stored session must name its user.
            raise _refuse("Authentication failed: the session names no user")
        self._check_holdings(identity)
        return identity

    def _check_holdings(self, identity: Identity) -> None:
        """What the session would hold stays within the per-session limits."""
        limit = self.settings.max_rooms
        rooms = set(identity.rooms)
        rooms.discard(identity.user)  # the user room is always held, and not counted
        if len(rooms) > limit:
            raise _refuse(f"Too many rooms: {len(rooms)} given, a session may be in at "
                          f"most {limit}", 400)
        size = len(orjson.dumps(identity.extra))
        if size > self.settings.max_presence_size:
            raise _refuse(f"Presence data too large: {size} bytes, at most "
                          f"{self.settings.max_presence_size}", 413)

    @staticmethod
    def _merge(identity: Identity, fields: dict) -> None:
        """Trusted fields (stored session, hook result) win over the frame's."""
        if "user" in fields:
            user = fields["user"]
            # A malformed trusted user must not fall back to the client's choice.
            if (not isinstance(user, str) or not user or "|" in user
                    or len(user) > wire.MAX_ROOM_NAME):
                raise _refuse("Authentication failed: the session's user is not a valid name")
            identity.user = user
        name = fields.get("name")
        if isinstance(name, str) and name:
            identity.name = name
        if "rooms" in fields:
            try:
                identity.rooms = wire.check_rooms(fields["rooms"], "stored rooms")
            except ProtocolError as exc:
                raise _refuse(exc.message, 400) from None
        peer_type = fields.get("type")
        if isinstance(peer_type, str):
            identity.peer_type = peer_type
        extra = fields.get("data") if isinstance(fields.get("data"), dict) else {}
        identity.extra.update(_extra({**fields, **extra}))
        identity.extra.pop("rooms", None)
        identity.extra.pop("data", None)
