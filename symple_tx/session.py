"""One authenticated peer as the router sees it: identity, rooms, presence, link."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from . import wire


class Link(Protocol):
    """What the router needs from a transport: the only way out of the router."""

    def send(self, frame: Any) -> None:
        """Queue one encoded frame (from ``Router.encode``) to the peer."""

    def close(self, code: int, reason: str) -> None:
        """Close the connection; the transport reports back via ``Router.close_session``."""

    def abort(self) -> None:
        """Drop the connection now, without a closing handshake (shutdown's last resort)."""


@dataclass
class Identity:
    """Who a peer is, as settled by authentication."""

    user: str
    name: str
    rooms: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    peer_type: Optional[str] = None


class Session:
    """A live peer.  ``presence`` holds its latest presence data."""

    __slots__ = ("id", "user", "name", "host", "peer_type", "address", "rooms",
                 "presence", "link", "_online_frame", "closed", "node", "budget")

    def __init__(self, link: Link, identity: Identity, host: str,
                 session_id: Optional[str] = None, node: Optional[str] = None) -> None:
        self.id = session_id or wire.new_session_id()
        #: The process that holds the connection; None for this process.
        self.node = node
        self.user = identity.user
        self.name = identity.name or identity.user
        self.host = host
        self.peer_type = identity.peer_type
        self.address = wire.address(self.user, self.id)
        #: Named rooms only: the user room is implied (``Router.users``).
        self.rooms: set[str] = set()
        self.link = link
        self.closed = False
        #: What its client may still cost (``ratelimit.Budget``); None: no limit
        #: (sessions of other processes, which their own process limits).
        self.budget: Optional[Any] = None
        self._online_frame: Optional[bytes] = None
        peer = dict(identity.extra)
        self.presence: dict[str, Any] = peer
        self._stamp(peer)
        peer["host"] = host

    def peer(self) -> dict[str, Any]:
        """The peer object of ``welcome``."""
        return dict(self.presence)

    def update_presence(self, data: dict[str, Any]) -> dict[str, Any]:
        """Store client presence data, rewritten so nobody can impersonate anyone."""
        wire.strip_tokens(data)
        self._stamp(data)
        data["host"] = self.host
        self.presence = data
        self._online_frame = None
        return data

    def _stamp(self, data: dict[str, Any]) -> None:
        data["id"] = self.id
        data["user"] = self.user
        data["name"] = self.name
        data["online"] = True
        if self.peer_type is None:
            data.pop("type", None)
        else:
            data["type"] = self.peer_type

    def online_frame(self) -> bytes:
        """The serialized online presence, cached until the data changes."""
        frame = self._online_frame
        if frame is None:
            # orjson hands back its 4 KiB working buffer; a cached frame keeps
            # an exact-size copy instead (a quarter of an idle peer's memory).
            frame = bytes(memoryview(wire.presence(self.address, self.presence)))
            self._online_frame = frame
        return frame

    def offline_frame(self) -> bytes:
        return wire.presence(self.address, {**self.presence, "online": False})

    def sees(self, other: "Session") -> bool:
        """Whether the two share a room: their user room, or a named one."""
        return self.user == other.user or not self.rooms.isdisjoint(other.rooms)

    def __repr__(self) -> str:
        return f"<Session {self.address}>"
