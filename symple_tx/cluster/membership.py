"""This process's mirror of the sessions of other processes that share a room with ours.

A session of another process lives in the router like a local one (same
room index, same routing and permission code), marked with its ``node`` and
given a link that sends nothing.  Each change reported by its owner carries
the session's whole state and is applied as an upsert through the router's
own operations (``admit``, ``enter``, ``depart``, ``close_session``), which
send presence to the *local* sessions whose view changed; the owner does the
same for its own sessions.  Each process thus keeps its own clients' rosters
right, with no coordination.

Only sessions that share a room (named or user room) with a local session
are kept: ``shares`` says whether a state does, counting only the rooms whose
channel this process is subscribed to for certain, so that every later change
of a kept session is sure to be heard.  A state that shares none is dropped
from the mirror; no local session saw it, so nobody is told.

``sync`` carries a process's full state and is applied as a difference, so
the same code serves a newcomer, a process back from a Redis outage, and any
event lost on the way.  A larger state comes in pages (``begin_sync``,
``continue_sync``): the difference is taken once the last page is in, and
the owner's live events, which Redis delivers in order with its pages, keep
it exact meanwhile.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

from twisted.logger import Logger

from ..router import Router
from ..session import Identity, Session
from ..wire import check_rooms

log = Logger()


class _NoLink:
    """The link of a session held by another process: its owner does the sending."""

    def send(self, frame: Any) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        pass

    def abort(self) -> None:
        pass


NO_LINK = _NoLink()


class Node:
    """Another process: when it was last heard of, and its sessions."""

    __slots__ = ("id", "last_seen", "sessions", "reading", "unconfirmed")

    def __init__(self, node_id: str, now: float) -> None:
        self.id = node_id
        self.last_seen = now
        self.sessions: dict[str, Session] = {}
        #: The snapshot of a paged state being read, and the mirrored sessions
        #: it has not confirmed yet (closed once the last page is in).
        self.reading: Optional[str] = None
        self.unconfirmed: set[str] = set()


class Membership:
    """Applies other processes' events to the router; forgets silent processes."""

    def __init__(self, router: Router, clock: Callable[[], float],
                 shares: Callable[[str, Iterable[str]], bool] = lambda user, rooms: True
                 ) -> None:
        """``shares(user, rooms)``: whether a session of ``user`` in named
        ``rooms`` shares a room with a local session (and is to be mirrored)."""
        self.router = router
        self.clock = clock
        self.shares = shares
        self.nodes: dict[str, Node] = {}

    def remote_sessions(self) -> int:
        return sum(len(node.sessions) for node in self.nodes.values())

    def heard(self, node_id: str) -> tuple[Node, bool]:
        """Note that ``node_id`` is alive; the flag says whether it is new to us."""
        node = self.nodes.get(node_id)
        if node is None:
            node = self.nodes[node_id] = Node(node_id, self.clock())
            return node, True
        node.last_seen = self.clock()
        return node, False

    # -- events ------------------------------------------------------------------

    def open(self, node: Node, state: dict) -> None:
        """Mirror ``state`` (new or changed) if it shares a room with us, else forget it."""
        session_id = state.get("id")
        if not isinstance(session_id, str):
            raise ValueError("session state without an id")
        node.unconfirmed.discard(session_id)
        known = node.sessions.get(session_id)
        if known is None and session_id in self.router.sessions:
            raise ValueError(f"session id {session_id!r} is already in use")
        user = known.user if known is not None else _text(state, "user")
        if "|" in user:
            raise ValueError(f"invalid user {user!r}")
        rooms = check_rooms(state.get("rooms"))
        if not self.shares(user, rooms):
            if known is not None:
                self.close(node, session_id)
            return
        if known is not None:
            self._update(known, rooms, state)
            return
        peer_type = state.get("type")
        identity = Identity(user=user, name=_text(state, "name"),
                            peer_type=peer_type if isinstance(peer_type, str) else None)
        session = Session(NO_LINK, identity, _text(state, "host"), session_id, node.id)
        session.presence = _presence(state, session)
        node.sessions[session_id] = session
        self.router.admit(session, rooms)

    def close(self, node: Node, session_id: Any) -> None:
        node.unconfirmed.discard(session_id)
        session = node.sessions.pop(session_id, None) if isinstance(session_id, str) else None
        if session is not None:
            self.router.close_session(session)

    def forget_unshared(self, sessions: Iterable[Session]) -> int:
        """Drop those of ``sessions`` (mirrored ones) that share no room with us any more."""
        dropped = 0
        for session in list(sessions):
            node = self.nodes.get(session.node) if session.node is not None else None
            if node is None or node.sessions.get(session.id) is not session:
                continue
            if not self.shares(session.user, session.rooms):
                self.close(node, session.id)
                dropped += 1
        return dropped

    def sync(self, node: Node, states: Iterable[dict]) -> None:
        """Make our mirror of ``node`` equal its full state."""
        node.reading = None
        node.unconfirmed = set()
        states = [s for s in states if isinstance(s, dict)]
        alive = {s.get("id") for s in states}
        for session_id in [i for i in node.sessions if i not in alive]:
            self.close(node, session_id)
        for state in states:
            self.open(node, state)

    def begin_sync(self, node: Node, snap: str, states: Iterable[dict],
                   complete: bool) -> None:
        """The first page of ``node``'s paged state: mirror it, hold back the difference."""
        if complete:
            self.sync(node, states)
            return
        states = [s for s in states if isinstance(s, dict)]
        node.reading = snap
        node.unconfirmed = set(node.sessions)
        for state in states:
            self.open(node, state)

    def continue_sync(self, node: Node, snap: str, states: Iterable[dict],
                      complete: bool) -> bool:
        """A further page; False (and nothing done) for a reading since replaced."""
        if node.reading != snap:
            return False
        for state in states:
            if isinstance(state, dict):
                self.open(node, state)
        if complete:
            gone, node.unconfirmed, node.reading = node.unconfirmed, set(), None
            for session_id in [i for i in node.sessions if i in gone]:
                self.close(node, session_id)
        return True

    def drop(self, node_id: str) -> int:
        """Forget a process that said goodbye or went silent; its sessions go offline."""
        node = self.nodes.pop(node_id, None)
        if node is None:
            return 0
        for session_id in list(node.sessions):
            self.close(node, session_id)
        return 1

    def expire(self, limit: float) -> list[str]:
        """Drop every process not heard of for ``limit`` seconds; their ids."""
        deadline = self.clock() - limit
        gone = [n.id for n in self.nodes.values() if n.last_seen < deadline]
        for node_id in gone:
            log.warn("Process {node} went silent: announcing its sessions offline",
                     node=node_id)
            self.drop(node_id)
        return gone

    # -- helpers -----------------------------------------------------------------

    def _update(self, session: Session, rooms: Iterable[str], state: dict) -> None:
        """Bring a known session's rooms and presence to ``state``."""
        wanted = set(rooms)
        wanted.discard(session.user)  # its user room is implied, never a named room
        for room in sorted(session.rooms - wanted):
            self.router.depart(session, room)
        for room in sorted(wanted - session.rooms):
            self.router.enter(session, room)
        session.presence = _presence(state, session)
        session._online_frame = None


def _text(state: dict, key: str) -> str:
    value = state.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"session state without a valid {key!r}")
    return value


def _presence(state: dict, session: Session) -> dict:
    presence = state.get("presence")
    if not isinstance(presence, dict):
        return session.presence
    presence.update(id=session.id, user=session.user, name=session.name, online=True)
    return presence
