"""The router: sessions, rooms, routing policy and presence visibility.

Pure logic.  It never touches bytes on a socket: it hands encoded frames to
each session's ``Link``.  A frame meant for many recipients is serialized and
encoded once and the same object is given to every link.

Visibility rule (docs/spec.md §5): two sessions see each other exactly
when they share a room.  Every operation that changes that relation sends the
presence frames that keep each client's roster equal to what it sees.

User rooms are private (docs/protocol.md, "Rooms"): the room named after a
user holds that user's sessions and nobody else.  They live in their own
index, ``users``, apart from the named rooms of ``rooms``, so a stranger who
joins ``"alice"`` joins a *named* room that never contains alice's sessions.
A session's ``rooms`` holds its named rooms only; its user room is implied.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Iterable, Optional

import orjson
from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.interfaces import IReactorTime

from . import wire
from .bus import Bus
from .config import Settings
from .hooks import HookRefused, call_hook
from .metrics import Metrics
from .session import Identity, Link, Session
from .wire import ProtocolError

_NOBODY: frozenset = frozenset()
_ABSENT = object()


class _Elsewhere(frozenset):
    """Nobody here: a ``user|id`` address no session of this router has."""


#: What ``recipients`` returns for such an address: another process may hold it.
_ELSEWHERE: frozenset = _Elsewhere()


def _identity(payload: bytes) -> Any:
    return payload


class Router:
    """Routes frames between the sessions of one process."""

    def __init__(self, settings: Optional[Settings] = None,
                 metrics: Optional[Metrics] = None,
                 encode: Callable[[bytes], Any] = _identity,
                 bus: Optional[Bus] = None, clock: Optional[IReactorTime] = None) -> None:
        """``encode`` turns serialized JSON into what ``Link.send`` takes; ``bus``
        reaches the other processes (none by default); ``clock`` times the hooks."""
        if clock is None:
            from twisted.internet import reactor as clock
        self.settings = settings or Settings()
        self.metrics = metrics or Metrics()
        self.clock: Any = clock
        self.sessions: dict[str, Session] = {}
        #: Named rooms (joined, or given at auth): name -> members.
        self.rooms: dict[str, set[Session]] = {}
        #: User rooms: user -> that user's sessions, and only theirs.
        self.users: dict[str, set[Session]] = {}
        #: Every open connection, authenticated or not.
        self.links: set[Link] = set()
        #: HTTP connections on the WebSocket port: they hold slots too.
        self.http_connections = 0
        #: Turns serialized JSON into what ``Link.send`` takes (a prepared
        #: WebSocket frame for the real transport); called once per fan-out.
        self.encode: Callable[[bytes], Any] = encode
        self.draining = False
        #: The seam to other processes; the default has none.
        self.bus: Bus = bus if bus is not None else Bus()
        self.bus.attach(self)
        self._idle: list[Deferred] = []
        self.metrics.track(lambda: len(self.links), self.local_sessions,
                           self.local_rooms)

    # -- connections ---------------------------------------------------------

    def at_capacity(self) -> bool:
        return len(self.links) + self.http_connections >= self.settings.max_connections

    def link_opened(self, link: Link) -> None:
        self.links.add(link)

    def link_closed(self, link: Link) -> None:
        self.links.discard(link)
        if not self.links:
            waiters, self._idle = self._idle, []
            for d in waiters:
                d.callback(None)

    def local_sessions(self) -> int:
        """Sessions of this process (``sessions`` also mirrors other processes')."""
        return len(self.sessions) - self.bus.remote_sessions()

    def room_count(self) -> int:
        """Rooms with at least one member on any process: named rooms and user rooms."""
        return len(self.rooms) + len(self.users)

    def local_rooms(self) -> int:
        """Rooms with at least one session of this process (``symple_rooms``, /healthz).

        ``rooms`` and ``users`` also hold the mirrored sessions of other
        processes; a room only they are in is not one of ours.
        """
        if not self.bus.remote_sessions():
            return len(self.rooms) + len(self.users)
        return sum(1 for index in (self.rooms, self.users) for members in index.values()
                   if any(member.node is None for member in members))

    def when_idle(self) -> Deferred:
        """Fires once no connection is open."""
        if not self.links:
            return succeed(None)
        d: Deferred = Deferred()
        self._idle.append(d)
        return d

    # -- sessions ------------------------------------------------------------

    def open_session(self, link: Link, identity: Identity, host: str) -> Session:
        """Admit an authenticated peer: welcome, snapshot, announce."""
        session = Session(link, identity, host)
        self.admit(session, identity.rooms)
        self.bus.opened(session)
        return session

    def admit(self, session: Session, rooms: Iterable[str]) -> None:
        """Add a session (local, or another process's) and send the presence it implies.

        ``rooms`` are its named rooms; it is always in its own user room, and
        its own user name among ``rooms`` means that room, never a named one.
        Frames for a session of another process are not sent here: its own
        process sends them.
        """
        self.sessions[session.id] = session
        user = session.user
        named = [room for room in dict.fromkeys(rooms) if room != user]
        mates = self.users.get(user)
        if mates is None:
            mates = self.users[user] = set()
        mates.add(session)
        for room in named:
            self._add(session, room)
        seen = self.visible(session)
        if session.node is None:
            self.send(session, wire.welcome(session.peer(), [user, *named]), "welcome")
            for peer in seen:
                self.send(session, peer.online_frame(), "presence")
        self._announce(seen, session)

    def _announce(self, recipients: set[Session], session: Session) -> None:
        """``session``'s online presence to the local sessions among ``recipients``.

        Other processes' sessions hear it from their own process, so with no
        local recipient the frame is neither built nor cached: a process
        mirroring sessions nobody here sees keeps no frame for them.
        """
        for peer in recipients:
            if peer.node is None:
                self.fanout(recipients, session.online_frame(), "presence")
                return

    def close_session(self, session: Session) -> None:
        """Forget a session and announce it offline, exactly once."""
        if session.closed:
            return
        session.closed = True
        seen = self.visible(session)
        for room in list(session.rooms):
            self._remove(session, room)
        mates = self.users.get(session.user)
        if mates is not None:
            mates.discard(session)
            if not mates:
                del self.users[session.user]
        del self.sessions[session.id]
        if session.node is None:
            self.bus.closed(session)
        if seen and not self.draining:
            self.fanout(seen, session.offline_frame(), "presence")

    def visible(self, session: Session) -> set[Session]:
        """The sessions that share at least one room with ``session``."""
        rooms = self.rooms
        seen: set[Session] = set(self.users.get(session.user, _NOBODY))
        for room in session.rooms:
            seen |= rooms[room]
        seen.discard(session)
        return seen

    def _add(self, session: Session, room: str) -> None:
        members = self.rooms.get(room)
        if members is None:
            members = self.rooms[room] = set()
        members.add(session)
        session.rooms.add(room)

    def _remove(self, session: Session, room: str) -> None:
        members = self.rooms.get(room)
        if members is not None:
            members.discard(session)
            if not members:
                del self.rooms[room]
        session.rooms.discard(room)

    # -- delivery ------------------------------------------------------------

    def send(self, session: Session, payload: bytes, kind: str) -> None:
        if session.node is not None:
            return  # its own process sends what it needs
        session.link.send(self.encode(payload))
        self.metrics.frames_out[kind].inc()

    def fanout(self, recipients: Iterable[Session], payload: bytes, kind: str,
               forward: bool = False) -> None:
        """Encode once, hand the same frame to every local recipient.

        With ``forward``, recipients on other processes get it through the
        bus (one publish per process); otherwise they are skipped, because
        their own process derives the same frame from the same event.
        """
        if not recipients:
            return
        frame = self.encode(payload)
        count = 0
        remote: Optional[dict[str, list[str]]] = None
        for session in recipients:
            node = session.node
            if node is None:
                session.link.send(frame)
                count += 1
            elif forward:
                if remote is None:
                    remote = {}
                ids = remote.get(node)
                if ids is None:
                    ids = remote[node] = []
                ids.append(session.id)
        if count:
            self.metrics.frames_out[kind].inc(count)
        if remote:
            self.bus.forward(remote, payload, kind)

    def deliver_forwarded(self, session_ids: Iterable[str], payload: bytes, kind: str) -> None:
        """Deliver a frame another process routed to some of our sessions."""
        sessions = self.sessions
        recipients = []
        for session_id in session_ids:
            session = sessions.get(session_id)
            if session is not None and session.node is None:
                recipients.append(session)
            else:
                self.metrics.drops["gone"].inc()
        if kind == "presence" and recipients:
            recipients = self._still_seeing(recipients, payload)
        self.fanout(recipients, payload, kind)

    def deliver_direct(self, session_id: str, user: str, sender_user: str,
                       sender_rooms: Collection[str], payload: bytes, kind: str) -> None:
        """Deliver a frame another process forwarded to ``user|session_id`` unrouted.

        Its process did not know the session (``Bus.forward_direct``), so the
        check is made here, against the sender's user and named rooms as its
        process sent them: delivered only to a session of ours that shares a
        room with the sender (docs/spec.md §4).  A session of another process
        is left to that process, which hears the same frame.
        """
        target = self.sessions.get(session_id)
        if target is None or target.user != user:
            self.metrics.drops["gone"].inc()
            return
        if target.node is not None:
            return  # its own process delivers it
        if user != sender_user and target.rooms.isdisjoint(sender_rooms):
            self.metrics.drops["permission"].inc()
            return
        self.fanout((target,), payload, kind)

    def _still_seeing(self, recipients: list[Session], payload: bytes) -> list[Session]:
        """Drop the recipients of a forwarded presence that no longer see its sender.

        Its process routed it while they shared a room; if one of them left
        that room meanwhile it was already told the sender is offline, and a
        late "online" would put the sender back into its roster for good.
        """
        try:
            sender_address = wire.loads(payload).get("from")
        except (ValueError, AttributeError):
            sender_address = None
        sender = self._session_at(sender_address) if isinstance(sender_address, str) else None
        kept = [r for r in recipients if sender is not None and r.sees(sender)]
        if len(kept) < len(recipients):
            self.metrics.drops["stale_presence"].inc(len(recipients) - len(kept))
        return kept

    # -- frames from peers ---------------------------------------------------

    def handle(self, session: Session, frame: dict) -> Optional[Deferred]:
        """Act on one decoded frame of an authenticated session.

        Raises ``ProtocolError`` (or returns a Deferred failing with one) for
        refusals; the transport turns it into an ``error`` frame.
        """
        kind = frame["type"]
        if kind in wire.ROUTED_TYPES:
            self.metrics.frames_in[kind].inc()
            self.route(session, frame)
            return None
        if kind == "join":
            self.metrics.frames_in[kind].inc()
            return self.join(session, frame)
        if kind == "leave":
            self.metrics.frames_in[kind].inc()
            self.leave(session, frame)
            return None
        if kind == "close":
            self.metrics.frames_in[kind].inc()
            session.link.close(1000, "Closed by client")
            return None
        self.metrics.frames_in["other"].inc()
        if kind == "auth":
            raise ProtocolError(400, "Already authenticated")
        raise ProtocolError(400, f"Unknown frame type {kind[:64]!r}")

    def route(self, session: Session, frame: dict) -> None:
        """Deliver a message/presence/command/event per the routing table."""
        frame["from"] = session.address
        frame.pop("token", None)
        recipients = self.recipients(session, frame.get("to", _ABSENT))
        kind = frame["type"]
        if recipients:
            self.charge(session, len(recipients))
        elif recipients is _ELSEWHERE:
            if kind != "presence" and self._forward_direct(session, frame):
                return
            self.metrics.drops["no_recipient"].inc()
        if kind == "presence":
            data = frame.get("data")
            if data is None:
                frame["data"] = session.presence
            elif isinstance(data, dict):
                size = len(orjson.dumps(data))
                if size > self.settings.max_presence_size:
                    raise ProtocolError(413, f"Presence data too large: {size} bytes, at most "
                                             f"{self.settings.max_presence_size}")
                session.update_presence(data)
                self.bus.presence(session)
            else:
                raise ProtocolError(400, "Presence 'data' must be an object")
            if frame.pop("probe", False) is True:
                for peer in recipients:
                    self.send(session, peer.online_frame(), "presence")
        if recipients:  # a frame for nobody is not serialized
            self.fanout(recipients, wire.dumps(frame), kind, forward=True)

    def _forward_direct(self, session: Session, frame: dict) -> bool:
        """Hand a frame for a ``user|id`` this process does not know to the bus.

        Another process may hold that session and share a room with the
        sender although nothing here knows it yet: this process learns of a
        room's other members a round trip after its first member entered the
        room (docs/clustering.md).  The holder checks the shared room.
        Presence is not forwarded: its online/offline bookkeeping needs the
        recipient known here.
        """
        user, _, session_id = frame["to"].partition("|")
        if not user or not session_id:
            return False
        return self.bus.forward_direct(session, user, session_id, wire.dumps(frame),
                                       frame["type"])

    def charge(self, session: Session, deliveries: int) -> None:
        """Spend ``deliveries`` from the session's budget, or refuse the frame (429)."""
        budget = session.budget
        if budget is not None and not budget.deliver(deliveries):
            self.metrics.drops["delivery_limit"].inc()
            raise ProtocolError(
                429, f"Delivery budget exceeded ({self.settings.delivery_limit} recipients "
                     f"per {self.settings.rate_period:g} s; this frame has {deliveries}): "
                     f"frame dropped")

    def recipients(self, session: Session, to: Any) -> Collection[Session]:
        """Who receives a frame from ``session`` addressed ``to``.

        ``_ELSEWHERE`` (empty) for a ``user|id`` no session here has.
        """
        if to is _ABSENT:
            return self.visible(session)
        if isinstance(to, str):
            target = self._session_at(to)
            if target is not None:
                if session.sees(target):
                    return (target,)
                self.metrics.drops["permission"].inc()
                return _NOBODY
            if "|" in to:
                # An address, never a room: whoever joined a room named after a
                # departed peer's address must not receive that peer's traffic.
                # ``route`` asks the other processes, or counts no recipient.
                return _ELSEWHERE
            return self._room_members(session, to)
        if isinstance(to, list):
            if not all(wire.valid_room(room) for room in to):
                raise ProtocolError(400, "Invalid 'to': an array must hold room names")
            result: set[Session] = set()
            for room in to:
                if room == session.user:
                    result |= self.users[room]
                elif room in session.rooms:
                    result |= self.rooms[room]
                else:
                    self.metrics.drops["permission"].inc()
            result.discard(session)
            return result
        raise ProtocolError(
            400, f"Invalid 'to': expected an address, a room name or an array of "
                 f"rooms, not {wire.json_type(to)}")

    def deliver_trusted(self, frame: dict) -> int:
        """Deliver a frame a backend published on ``<prefix>broadcast`` (docs/spec.md §9).

        Trusted: no shared-room check and the publisher's ``from`` is kept.
        ``to`` is ``user|id``, a room name or an array of them; a name
        reaches that user's sessions *and* the members of a named room of
        that name (a backend cannot say which it means: docs/protocol.md).
        Each local recipient gets the frame once.  Returns how many (every
        process of a cluster receives the frame and serves its own).
        """
        kind = frame.get("type")
        if not isinstance(kind, str) or not kind:
            self.metrics.drops["invalid"].inc()
            return 0
        to = frame.get("to")
        recipients: set[Session] = set()
        if isinstance(to, str) and "|" in to:
            target = self._session_at(to)
            if target is not None:
                recipients.add(target)
        elif isinstance(to, str):
            recipients |= self.users.get(to, _NOBODY)
            recipients |= self.rooms.get(to, _NOBODY)
        elif isinstance(to, list):
            for room in to:
                if wire.valid_room(room):
                    recipients |= self.users.get(room, _NOBODY)
                    recipients |= self.rooms.get(room, _NOBODY)
        recipients = {s for s in recipients if s.node is None}
        if not recipients:
            self.metrics.drops["no_recipient"].inc()
            return 0
        frame.pop("token", None)
        self.fanout(recipients, wire.dumps(frame), kind if kind in wire.ROUTED_TYPES else "other")
        return len(recipients)

    def _session_at(self, to: str) -> Optional[Session]:
        """The session named by ``user|id`` or by a bare live session id."""
        user, bar, session_id = to.partition("|")
        if not bar:
            return self.sessions.get(to)
        target = self.sessions.get(session_id)
        if target is not None and target.user == user:
            return target
        return None

    def _room_members(self, session: Session, room: str) -> Collection[Session]:
        """The sessions ``to: room`` reaches: those of user ``room`` and the
        members of named room ``room``, each only if ``session`` sees it."""
        if not wire.valid_room(room):
            raise ProtocolError(400, "Invalid 'to': empty or over-long room name")
        users = self.users.get(room, _NOBODY)
        members = self.rooms.get(room, _NOBODY)
        if not users and not members:
            self.metrics.drops["no_recipient"].inc()
            return _NOBODY
        if room == session.user:
            result = set(users)  # its own user room; no named room has this name for it
            result |= {m for m in members if session.sees(m)}
        elif room in session.rooms:
            result = set(members)
            result |= {m for m in users if session.sees(m)}
        else:
            result = {m for m in users if session.sees(m)}
            result |= {m for m in members if session.sees(m)}
        if len(result) < len(users) + len(members):
            self.metrics.drops["permission"].inc()
        result.discard(session)
        return result

    # -- rooms ---------------------------------------------------------------

    def join(self, session: Session, frame: dict) -> Optional[Deferred]:
        room = wire.check_room(frame)  # 400 before 403 (docs/spec.md §6)
        if not self.settings.dynamic_rooms:
            raise ProtocolError(403, "Dynamic rooms are disabled on this server")
        frame_id = frame.get("id")
        hook = self.settings.join_hook
        if room in session.rooms or room == session.user:
            self._join(session, room, frame_id)
            return None
        self._check_room_limit(session)  # before asking the hook
        if hook is None:
            self._join(session, room, frame_id)
            return None
        d = call_hook(hook, session.peer(), room)
        timeout = self.settings.hook_timeout
        if timeout > 0:
            d.addTimeout(timeout, self.clock)

        def decided(allowed: Any) -> None:
            if not allowed:
                raise ProtocolError(403, f"Joining room {room!r} was refused")
            if not session.closed:
                self._check_room_limit(session)
                self._join(session, room, frame_id)

        def refused(failure: Any) -> None:
            if failure.check(TimeoutError):
                self.metrics.drops["hook_timeout"].inc()
                raise ProtocolError(504, f"Joining room {room!r} timed out: the join hook "
                                         f"did not answer within {timeout:g} s")
            failure.trap(HookRefused)
            raise ProtocolError(403, str(failure.value) or f"Joining room {room!r} was refused")

        return d.addCallbacks(decided, refused)

    def _check_room_limit(self, session: Session) -> None:
        """A session in ``max_rooms`` named rooms joins no more (memory per peer is bounded)."""
        limit = self.settings.max_rooms
        if len(session.rooms) >= limit:
            raise ProtocolError(403, f"Room limit reached: a session may be in at most "
                                     f"{limit} rooms; leave one first")

    def _join(self, session: Session, room: str, frame_id: Any) -> None:
        if room not in session.rooms and room != session.user:
            # Joining announces the joiner to every member: one delivery each.
            members = len(self.rooms.get(room, ()))
            if members:
                try:
                    self.charge(session, members)
                except ProtocolError as exc:
                    exc.frame_id = frame_id
                    raise
            self.send(session, wire.room_ack("join:ok", room, frame_id), "join:ok")
            self.enter(session, room)
            self.bus.joined(session, room)
        else:
            self.send(session, wire.room_ack("join:ok", room, frame_id), "join:ok")

    def enter(self, session: Session, room: str) -> None:
        """Add ``session`` to named ``room``; it and the members it newly sees exchange presence."""
        if room == session.user:
            return  # its own name is its user room, which it is always in
        before = self.visible(session)
        self._add(session, room)
        newcomers = self.rooms[room] - before
        newcomers.discard(session)
        if session.node is None:
            for peer in newcomers:
                self.send(session, peer.online_frame(), "presence")
        self._announce(newcomers, session)

    def leave(self, session: Session, frame: dict) -> None:
        room = wire.check_room(frame)
        if not self.settings.dynamic_rooms:
            raise ProtocolError(403, "Dynamic rooms are disabled on this server")
        if room == session.user:
            raise ProtocolError(403, "A session cannot leave its own user room")
        self.send(session, wire.room_ack("leave:ok", room, frame.get("id")), "leave:ok")
        if room in session.rooms:
            self.depart(session, room)
            self.bus.left(session, room)

    def depart(self, session: Session, room: str) -> None:
        """Remove ``session`` from named ``room``; pairs that no longer meet exchange offline presence."""
        if room not in session.rooms:
            return
        self._remove(session, room)
        lost = [m for m in self.rooms.get(room, ()) if not session.sees(m)]
        if lost:
            self.fanout(lost, session.offline_frame(), "presence")
        if session.node is None:
            for peer in lost:
                self.send(session, peer.offline_frame(), "presence")

    # -- shutdown ------------------------------------------------------------

    def shutdown(self) -> Deferred:
        """Tell every connection the server is going and close it with 1001."""
        self.draining = True
        event = self.encode(wire.SHUTDOWN_EVENT)
        for link in list(self.links):
            link.send(event)
            link.close(1001, "Server shutting down")
        return self.when_idle()

    def abort_links(self) -> int:
        """Drop every connection still open (the drain timeout passed); how many."""
        links = list(self.links)
        for link in links:
            link.abort()
        return len(links)
