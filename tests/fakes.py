"""Socket-free stand-ins for the router's and authenticator's collaborators."""

from __future__ import annotations

from typing import Any, Iterable, Optional

import orjson
from twisted.internet.defer import Deferred, succeed

from symple_tx.config import Settings
from symple_tx.router import Router
from symple_tx.session import Identity, Session


class FakeLink:
    """A ``Link`` that records what the router hands it.

    With ``Router.encode`` left as the identity, every sent object is the
    serialized JSON, so tests can decode and inspect it.
    """

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.sent: list[Any] = []
        self.closed: Optional[tuple[int, str]] = None
        self.aborted = False

    def send(self, frame: Any) -> None:
        self.sent.append(frame)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def abort(self) -> None:
        self.aborted = True

    def frames(self) -> list[dict]:
        """Every frame sent so far, decoded."""
        return [orjson.loads(payload) for payload in self.sent]

    def take(self) -> list[dict]:
        """The frames sent since the last ``take``, decoded."""
        frames = self.frames()
        self.sent.clear()
        return frames

    def __repr__(self) -> str:
        return f"<FakeLink {self.name}>"


def make_router(**settings: Any) -> Router:
    """A router with a fresh registry and the identity encoder."""
    return Router(Settings(**settings))


def connect(router: Router, user: str, rooms: Iterable[str] = (),
            name: str = "", extra: Optional[dict] = None,
            peer_type: Optional[str] = None,
            host: str = "192.0.2.1") -> tuple[Session, FakeLink]:
    """Open an authenticated session on ``router`` over a fresh ``FakeLink``."""
    link = FakeLink(user)
    router.link_opened(link)
    identity = Identity(user=user, name=name, rooms=list(rooms),
                        extra=dict(extra or {}), peer_type=peer_type)
    return router.open_session(link, identity, host), link


def disconnect(router: Router, session: Session) -> None:
    """What the transport does when a connection ends."""
    router.close_session(session)
    router.link_closed(session.link)


class FakeStore:
    """A ``SessionStore`` over a dict, recording ``touch`` calls."""

    def __init__(self, sessions: Optional[dict[str, Any]] = None) -> None:
        self.sessions = dict(sessions or {})
        self.touched: list[tuple[str, int]] = []
        self.looked_up: list[str] = []

    def get(self, token: str) -> Deferred:
        self.looked_up.append(token)
        return succeed(self.sessions.get(token))

    def touch(self, token: str, ttl: int) -> Deferred:
        self.touched.append((token, ttl))
        return succeed(None)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class InstantWire:
    """A subscribed Redis connection that confirms each (un)subscribe at once.

    Given to a ``Subscription`` that is never started, so a bus in a unit test
    is subscribed to a room's channel as soon as it asks.
    """

    def __init__(self, subscription: Any) -> None:
        self.subscription = subscription
        self.transport = self
        subscription._wire = self
        subscription._confirmed = set(subscription.handlers)

    def _build_command(self, command: str, *channels: bytes) -> tuple:
        return command, channels

    def write(self, command: tuple) -> None:
        name, channels = command
        for channel in channels:
            self.subscription.confirmed(self, channel, name == "SUBSCRIBE")

    def loseConnection(self) -> None:
        pass
