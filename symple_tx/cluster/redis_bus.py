"""The Redis bus: several server processes behave as one server.

Layout (docs/clustering.md explains the choice):

* ``<prefix>v2:control`` — every process: heartbeats, full-state syncs and
  goodbyes;
* ``<prefix>v2:room:<room>`` and ``<prefix>v2:user:<user>`` — the processes
  with a session in that named room or of that user: the changes of every
  session in it, each carrying the session's whole state, and requests for
  the room's members from a process whose first session just entered it; on
  a user's channel also frames for one of its sessions from a process that
  does not know that session (yet);
* ``<prefix>v2:node:<id>`` — one process: the routed frames that have
  recipients there (one publish per process, whatever the recipient count),
  states and room members addressed to it.

A process subscribes to a room's channel while one of its sessions is in the
room, so it mirrors only the sessions that share a room with one of its own
and hears only their changes.

The Ruby gem's ``<prefix>broadcast`` channel is subscribed on the same
connection (``subscribe``; ``symple_tx.broadcast`` delivers its frames to
this process's sessions), so it comes back with the bus after an outage and
the bus is up only once everything is subscribed again.

One publishing and one subscribed connection per process, so Redis keeps the
order of everything one process says, on every channel, for every listener.
"""

from __future__ import annotations

import functools
import secrets
from typing import Any, Callable, Optional

from prometheus_client import Counter, Gauge
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..bus import Bus
from ..config import Settings
from ..redis.address import RedisAddress
from ..redis.connect import Connection, Subscription
from ..redis.keys import Keys
from ..router import Router
from ..session import Session
from . import codec
from .membership import Membership

log = Logger()

#: Default seconds after which a silent process's sessions are announced offline
#: (docs/clustering.md, "Failures": why 4 s).
NODE_TIMEOUT = Settings.node_timeout


def heartbeat_interval(node_timeout: float) -> float:
    """Seconds between heartbeats: eight per node timeout, at least one a second.

    A process is declared dead only after missing about eight in a row, so an
    event loop that stalls for half the timeout (2 s of the default 4 s)
    raises no false alarm, while a dead process is noticed within the timeout.
    """
    return min(1.0, node_timeout / 8)


def reaper_interval(node_timeout: float) -> float:
    """Seconds between checks for silent processes: the detection's granularity."""
    return min(1.0, node_timeout / 15)
#: Seconds to wait for the goodbye to reach Redis when stopping.
BYE_TIMEOUT = 2.0
#: Publishes Redis has not acknowledged yet; beyond this, messages are dropped.
MAX_IN_FLIGHT = 100_000
#: Sessions per state message.  A process's state travels in pages the
#: receiver asks for one at a time: Redis disconnects a subscriber with more
#: than 32 MiB of pending output (``client-output-buffer-limit pubsub``), so
#: a whole state in one message (about 250 bytes per session) could never
#: reach anyone beyond ~115,000 sessions (docs/scaling.md).
SYNC_PAGE = 1000
#: Pages of one state a reader asks for ahead of the one it applies: a few
#: round trips in flight (a busy machine makes each one slow), at most this
#: many pages (~1 MB) waiting in Redis for the reader.
SYNC_WINDOW = 4
#: Seconds a paged state's list of sessions is kept after it was last asked for.
SNAPSHOT_TTL = 60.0


class BusMetrics:
    """Counters of the Redis bus, in the server's registry."""

    def __init__(self, registry: Any, nodes: Callable[[], float],
                 up: Callable[[], float], remote: Callable[[], float]) -> None:
        r = registry
        self.publishes = Counter("symple_bus_publishes", "Messages published to Redis, by kind",
                                 ["kind"], registry=r)
        self.receives = Counter("symple_bus_receives", "Messages received from Redis, by kind",
                                ["kind"], registry=r)
        self.reconnects = Counter("symple_bus_reconnects",
                                  "Times the bus came back after losing Redis", registry=r)
        self.lost = Counter("symple_bus_lost", "Messages not published because Redis was "
                            "unreachable, by kind", ["kind"], registry=r)
        self.invalid = Counter("symple_bus_invalid", "Unusable messages received", registry=r)
        self.nodes = Gauge("symple_bus_nodes", "Server processes known to be alive, this "
                           "one included", registry=r)
        self.nodes.set_function(nodes)
        self.up = Gauge("symple_bus_up", "1 while the bus is connected to Redis", registry=r)
        self.up.set_function(up)
        self.remote_sessions = Gauge("symple_bus_remote_sessions", "Sessions of other "
                                     "processes mirrored here", registry=r)
        self.remote_sessions.set_function(remote)
        self.sent = {kind: self.publishes.labels(kind) for kind in ("delivery", "control")}
        self.got = {kind: self.receives.labels(kind) for kind in ("delivery", "control")}


class RedisBus(Bus):
    """Connects this process's router to the others through Redis pub/sub."""

    def __init__(self, router: Optional[Router], address: RedisAddress, keys: Keys = Keys(),
                 node_timeout: float = NODE_TIMEOUT, reactor: Any = None,
                 node_id: Optional[str] = None) -> None:
        """Opens nothing: ``start`` connects.  ``router`` may be None and given by
        ``Router(..., bus=this)`` instead."""
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.router: Any = None
        self.node = node_id or secrets.token_hex(6)
        self.channels = keys
        self.inbox = keys.node(self.node)
        #: How our own events begin after their ``op`` (``codec.event`` puts
        #: ``op`` then ``node`` first): Redis hands them back to us on every
        #: channel of our rooms, and they are dropped unread.
        self._own = codec.own_marker(self.node)
        self._own_direct = codec.own_direct_marker(self.node)
        self._control = keys.control
        self.node_timeout = node_timeout
        self.sync_page = SYNC_PAGE
        #: Paged states being read by other processes: snapshot id -> (session
        #: ids at the time, last asked for, whether they are a room's members).
        self._snapshots: dict[str, tuple[list[str], float, bool]] = {}
        #: Whether the address finds the master afresh on each connection
        #: (Sentinel): then a server that turns out to be a replica is left.
        self._follows_master = getattr(address, "follows_master", False)
        self.publisher = Connection(address, reactor, listeners=[self])
        self.subscriber = Subscription(address, reactor, listeners=[self])
        for channel in (self._control, self.inbox):
            self.subscriber.add(channel, functools.partial(self.received, channel.encode()))
        #: Local session id -> the channels of its rooms (its user room first).
        self._local: dict[str, list[str]] = {}
        #: Channel of a room with local sessions -> (kind, name) and how many.
        self._rooms: dict[str, tuple[str, str]] = {}
        self._members: dict[str, int] = {}
        self.up = False
        self._was_up = False
        self._leaving = False
        self._beat = LoopingCall(self._heartbeat)
        self._beat.clock = reactor
        self._reaper = LoopingCall(self._expire)
        self._reaper.clock = reactor
        if router is not None:
            self.attach(router)

    def attach(self, router: Router) -> None:
        if self.router is router:
            return
        self.router = router
        self.membership = Membership(router, self.reactor.seconds, self.shares)
        self.metrics = BusMetrics(router.metrics.registry,
                                  lambda: len(self.membership.nodes) + 1,
                                  lambda: 1 if self.up else 0,
                                  self.membership.remote_sessions)

    # -- lifecycle ---------------------------------------------------------------

    def subscribe(self, channel: str, handler: Callable[[bytes], Any]) -> None:
        """Receive ``channel`` too (the broadcast channel); the bus is up only once it is."""
        self.subscriber.add(channel, handler)

    def start(self) -> None:
        self.publisher.start()
        self.subscriber.start()
        self._beat.start(heartbeat_interval(self.node_timeout), now=False)
        self._reaper.start(reaper_interval(self.node_timeout), now=False)

    def stop(self) -> Deferred:
        """Say goodbye, so the others announce our sessions offline now, then disconnect."""
        if self._leaving:
            return succeed(None)
        self._leaving = True
        for loop in (self._beat, self._reaper):
            if loop.running:
                loop.stop()
        d = self._say_goodbye()
        d.addBoth(lambda _: self._disconnect())
        return d

    def _say_goodbye(self) -> Deferred:
        protocol = self.publisher.protocol
        if protocol is None:
            return succeed(None)
        d = protocol.publish(self._control, codec.event("bye", self.node))
        d.addCallback(lambda _: protocol.delete(self.channels.alive(self.node)))
        timer = self.reactor.callLater(BYE_TIMEOUT, d.cancel)

        def done(_: Any) -> None:  # said or not, we are going
            if timer.active():
                timer.cancel()
        return d.addBoth(done)

    def _disconnect(self) -> Deferred:
        self.up = False
        return gatherResults([self.publisher.stop(), self.subscriber.stop()],
                             consumeErrors=True).addErrback(lambda _: None)

    def remote_sessions(self) -> int:
        return self.membership.remote_sessions()

    def problem(self) -> Optional[str]:
        return None if self.up else "redis unreachable (cluster bus)"

    # -- connection state (``redis.connect.Listener``; the server's ``Outage`` logs it) --

    def ready(self, connection: Connection, protocol: Any) -> None:
        self._check_up()

    def lost(self, connection: Connection, protocol: Any) -> None:
        self.up = False

    def failed(self, connection: Connection, why: str) -> None:
        pass

    def _check_up(self) -> None:
        if self.up or self._leaving:
            return
        if self.publisher.protocol is None or self.subscriber.protocol is None:
            return
        self.up = True
        if self._was_up:
            self.metrics.reconnects.inc()
        self._was_up = True
        # Everyone mirrors our full state and answers with theirs: this
        # repairs whatever was lost while we were away.
        self._sync(self._control, reply=True)
        self._heartbeat()

    # -- outgoing ----------------------------------------------------------------

    def _publish(self, channel: str, message: bytes, kind: str) -> Optional[Deferred]:
        """PUBLISH, unless Redis is out of reach; fires with the number of listeners."""
        protocol = self.publisher.protocol
        if protocol is None or self._leaving:
            if not self._leaving:
                self.metrics.lost.labels(kind).inc()
            return None
        if len(protocol.replyQueue.waiting) >= MAX_IN_FLIGHT:
            # Redis stopped answering: drop rather than queue without bound.
            self.metrics.lost.labels(kind).inc()
            return None
        self.metrics.sent[kind].inc()
        return protocol.publish(channel, message).addErrback(self._publish_failed, kind)

    def _publish_failed(self, failure: Any, kind: str) -> None:
        self.metrics.lost.labels(kind).inc()

    def _tell(self, op: str, **fields: Any) -> None:
        self._publish(self._control, codec.event(op, self.node, **fields), "control")

    def _tell_rooms(self, channels: list[str], message: bytes) -> None:
        for channel in channels:
            self._publish(channel, message, "control")

    def _channels_of(self, session: Session) -> list[str]:
        keys = self.channels
        return [keys.user(session.user), *(keys.room(r) for r in sorted(session.rooms))]

    def shares(self, user: str, rooms: Any) -> bool:
        """Whether a session of ``user`` in ``rooms`` shares a room with a local session.

        Only rooms whose subscription Redis has confirmed count: from then on
        every change of that session is heard here, so it can be mirrored.
        While the bus is down, every room of a local session counts: nothing
        is heard then, and the sync that follows Redis's return repairs the
        mirror whatever it holds.
        """
        keys = self.channels
        hears = self.subscriber.is_subscribed if self.up else self._members.__contains__
        return hears(keys.user(user)) or any(hears(keys.room(r)) for r in rooms if r != user)

    def opened(self, session: Session) -> None:
        channels = self._local[session.id] = self._channels_of(session)
        user = session.user
        for channel in channels:
            self._enter(channel, ("user", user) if channel == channels[0]
                        else ("room", channel[len(self.channels.room("")):]))
        self._tell_rooms(channels, codec.event("open", self.node,
                                               s=codec.session_state(session)))

    def closed(self, session: Session) -> None:
        # The router has taken it out of its rooms already: ours are remembered.
        channels = self._local.pop(session.id, None)
        if channels is None:
            return
        self._tell_rooms(channels, codec.event("close", self.node, id=session.id))
        for channel in channels:
            self._exit(channel)

    def joined(self, session: Session, room: str) -> None:
        channel = self.channels.room(room)
        channels = self._local.get(session.id)
        if channels is None:
            return
        if channel not in channels:
            channels.append(channel)
            self._enter(channel, ("room", room))
        self._tell_rooms(channels, codec.event("join", self.node,
                                               s=codec.session_state(session)))

    def left(self, session: Session, room: str) -> None:
        channel = self.channels.room(room)
        channels = self._local.get(session.id)
        if channels is None:
            return
        # Told in the room left too: its other members' processes stop seeing it.
        self._tell_rooms(channels, codec.event("leave", self.node,
                                               s=codec.session_state(session)))
        if channel in channels:
            channels.remove(channel)
            self._exit(channel)

    def presence(self, session: Session) -> None:
        self._tell_rooms(self._local.get(session.id, ()),  # type: ignore[arg-type]
                         codec.event("presence", self.node, s=codec.session_state(session)))

    # -- the rooms this process watches -------------------------------------------

    def _enter(self, channel: str, scope: tuple[str, str]) -> None:
        """One more local session in a room: its first subscribes to the room's channel."""
        count = self._members.get(channel, 0)
        self._members[channel] = count + 1
        if count:
            return
        self._rooms[channel] = scope
        handler = functools.partial(self.received, channel.encode())
        self.subscriber.add(channel, handler).addCallback(self._watching)

    def _exit(self, channel: str) -> None:
        """One local session fewer in a room: after its last, forget the room's members."""
        count = self._members.get(channel, 0) - 1
        if count > 0:
            self._members[channel] = count
            return
        self._members.pop(channel, None)
        scope = self._rooms.pop(channel, None)
        self.subscriber.remove(channel)
        if scope is not None:
            self.membership.forget_unshared(
                [s for s in self._index(scope).get(scope[1], ()) if s.node is not None])

    def _index(self, scope: tuple[str, str]) -> dict:
        return self.router.users if scope[0] == "user" else self.router.rooms

    def _local_members(self, scope: tuple[str, str]) -> list[Session]:
        return [s for s in self._index(scope).get(scope[1], ()) if s.node is None]

    def _watching(self, channel: str) -> None:
        """Redis confirmed a room's channel: ask its members' processes for them.

        The request carries our own members of the room, for a process that
        entered the room at the same moment and missed their changes; each
        process with members there answers on our node channel.  Everything
        its process says after that answer reaches us too, in order.
        """
        scope = self._rooms.get(channel)
        if scope is None or not self.up:
            return  # left meanwhile; or Redis is back and the sync repairs everything
        local = self._local_members(scope)
        page = self.sync_page
        for start in range(0, max(len(local), 1), page):
            states = [codec.session_state(s) for s in local[start:start + page]]
            self._publish(channel, codec.event("members", self.node, kind=scope[0],
                                               name=scope[1], sessions=states,
                                               ask=start == 0), "control")

    def _serve_members(self, requester: str, event: dict) -> None:
        """Another process's first session entered a room we have members in."""
        kind, name = event.get("kind"), event.get("name")
        if kind not in ("room", "user") or not isinstance(name, str):
            raise ValueError("members request without a room")
        node = self.membership.nodes.get(requester)
        if node is not None:
            for state in event.get("sessions") or ():
                if isinstance(state, dict):
                    self.membership.open(node, state)
        if event.get("ask") is True:
            local = self._local_members((kind, name))
            if local:
                self._send_states(self.channels.node(requester), local, reply=False,
                                  add=True)

    def forward(self, recipients: dict[str, list[str]], payload: bytes, kind: str) -> None:
        node_channel = self.channels.node
        for node, session_ids in recipients.items():
            self._publish(node_channel(node), codec.delivery(kind, session_ids, payload),
                          "delivery")

    def forward_direct(self, sender: Session, user: str, session_id: str, payload: bytes,
                       kind: str) -> bool:
        """Publish a frame for ``user|session_id`` on that user's channel.

        Every process with a session of ``user`` listens there while it has
        one, whether or not we share a room with it yet; only the holder of
        the session delivers, after checking the sender's rooms carried here.
        One delivery is charged, as for any direct frame.  A PUBLISH that
        reached no other process means no session of ``user`` is anywhere:
        counted as no recipient, as on one process.
        """
        self.router.charge(sender, 1)
        channel = self.channels.user(user)
        message = codec.direct(self.node, user, session_id, kind, sender, payload)
        published = self._publish(channel, message, "delivery")
        if published is not None:
            # We hear it back ourselves while we have a session of ``user``.
            published.addCallback(self._direct_heard, 1 if channel in self._members else 0)
        return True

    def _direct_heard(self, listeners: Any, ours: int) -> None:
        if isinstance(listeners, int) and listeners <= ours:
            self.router.metrics.drops["no_recipient"].inc()

    def _sync(self, channel: str, reply: bool) -> None:
        """Our full state on ``channel``: one ``sync``, or the first page of a ``state``."""
        local = [s for s in self.router.sessions.values() if s.node is None]
        self._send_states(channel, local, reply)

    def _send_states(self, channel: str, local: list[Session], reply: bool,
                     add: bool = False) -> None:
        """The states of ``local`` on ``channel``, in pages beyond ``sync_page``.

        With more than a page of sessions, the rest is kept as a list of ids
        (a snapshot, shared by every reader of this state); each receiver asks
        for the following pages (``want``, ``SYNC_WINDOW`` ahead), so no
        message is larger than a page and the pace is the reader's.  ``add``
        marks a room's members: the receiver mirrors them, and takes no
        difference against what it mirrors of us.
        """
        page = self.sync_page
        if len(local) <= page and not add:
            states = [codec.session_state(s) for s in local]
            self._publish(channel, codec.event("sync", self.node, sessions=states,
                                               reply=reply), "control")
            return
        snap = secrets.token_hex(4)
        rest = [s.id for s in local[page:]]
        if rest:
            self._forget_snapshots()
            self._snapshots[snap] = (rest, self.reactor.seconds(), add)
        states = [codec.session_state(s) for s in local[:page]]
        marks = {"add": True} if add else {}
        self._publish(channel, codec.event("state", self.node, snap=snap, page=0,
                                           pages=self._pages(rest), sessions=states,
                                           more=bool(rest), reply=reply, **marks), "control")

    def _pages(self, rest: list[str]) -> int:
        """Pages of a state whose first page is sent and ``rest`` is still to come."""
        return 1 + -(-len(rest) // self.sync_page)

    def _serve_page(self, requester: str, snap: Any, page: Any) -> None:
        """Page ``page`` (from 1) of snapshot ``snap``: those of its sessions still here."""
        kept = self._snapshots.get(snap) if isinstance(snap, str) else None
        if kept is None or not isinstance(page, int) or page < 1:
            # Forgotten (or never ours): start that process's reading afresh.
            self._sync(self.channels.node(requester), reply=False)
            return
        ids, _, add = kept
        size = self.sync_page
        chunk = ids[(page - 1) * size:page * size]
        self._snapshots[snap] = (ids, self.reactor.seconds(), add)  # others may read it too
        sessions = self.router.sessions
        states = [codec.session_state(sessions[i]) for i in chunk
                  if i in sessions and sessions[i].node is None]
        marks = {"add": True} if add else {}
        self._publish(self.channels.node(requester),
                      codec.event("state", self.node, snap=snap, page=page,
                                  pages=self._pages(ids), sessions=states,
                                  more=page * size < len(ids), **marks), "control")

    def _forget_snapshots(self) -> None:
        deadline = self.reactor.seconds() - SNAPSHOT_TTL
        for snap in [k for k, (_, used, _) in self._snapshots.items() if used < deadline]:
            del self._snapshots[snap]

    def _heartbeat(self) -> None:
        protocol = self.publisher.protocol
        if protocol is None or not self.up:
            return
        self._tell("beat")
        ttl = max(1, int(self.node_timeout * 1000))
        protocol.set(self.channels.alive(self.node), "1", expire=None,
                     pexpire=ttl).addErrback(self._beat_failed, protocol)

    def _beat_failed(self, failure: Any, protocol: Any) -> None:
        """A heartbeat refused as READONLY: the master was demoted under us.

        A replica still relays PUBLISH to its own subscribers, so without this
        a process would go on talking to the processes left on the old master
        while backends and the others meet on the new one.  Through Sentinel,
        both connections are closed and made again to the master it names now.
        """
        if not self._follows_master or "READONLY" not in failure.getErrorMessage():
            return
        if self.publisher.protocol is not protocol:
            return  # already replaced
        log.warn("Redis became a replica: reconnecting to the master Sentinel names")
        for connection in (self.publisher, self.subscriber):
            current = connection.protocol
            if current is not None and current.transport is not None:
                current.transport.loseConnection()

    def _on_state(self, node: Any, event: dict) -> None:
        """A page of another process's paged state; ask for those ``SYNC_WINDOW`` ahead.

        The owner answers requests in order over one connection, so the
        pages arrive in order and the one with ``more`` false is the last.
        """
        snap, page, pages = event.get("snap"), event.get("page"), event.get("pages")
        if not isinstance(snap, str) or not isinstance(page, int) \
                or not isinstance(pages, int):
            raise ValueError("state without snapshot, page or page count")
        states = event.get("sessions") or ()
        more = event.get("more") is True
        if event.get("add") is True:  # a room's members: mirrored, no difference taken
            for state in states:
                if isinstance(state, dict):
                    self.membership.open(node, state)
            wanted = (range(1, min(1 + SYNC_WINDOW, pages)) if page == 0
                      else range(page + SYNC_WINDOW, pages)[:1]) if more else range(0)
        elif page == 0:
            self.membership.begin_sync(node, snap, states, complete=not more)
            if event.get("reply"):
                self._sync(self.channels.node(node.id), reply=False)
            wanted = range(1, min(1 + SYNC_WINDOW, pages)) if more else range(0)
        elif not self.membership.continue_sync(node, snap, states, complete=not more):
            return  # a page of a reading since started afresh
        else:
            wanted = range(page + SYNC_WINDOW, pages)[:1]
        for number in wanted:
            self._publish(self.channels.node(node.id),
                          codec.event("want", self.node, snap=snap, page=number), "control")

    def _expire(self) -> None:
        # Checked every reaper interval: expiring that much early keeps the
        # announcement within the node timeout.
        limit = self.node_timeout - reaper_interval(self.node_timeout)
        self.membership.expire(limit)

    # -- incoming ----------------------------------------------------------------

    def received(self, channel: bytes, message: bytes) -> None:
        """A message on one of the bus's own channels."""
        try:
            self._on_message(message)
        except Exception:
            self.metrics.invalid.inc()
            log.failure("Unusable message on {channel}", channel=channel)

    def _on_message(self, message: bytes) -> None:
        if message[:1] == b"d":
            self.metrics.got["delivery"].inc()
            kind, session_ids, payload = codec.parse_delivery(message)
            self.router.deliver_forwarded(session_ids, payload, kind)
            return
        if message[:1] == b"u":
            self.metrics.got["delivery"].inc()
            if message.startswith(self._own_direct):
                return  # ours, back on a user channel we listen to: not for us
            session_id, user, kind, sender, rooms, payload = codec.parse_direct(message)
            self.router.deliver_direct(session_id, user, sender, rooms, payload, kind)
            return
        self.metrics.got["control"].inc()
        if codec.is_from(message, self._own):
            return
        event = codec.parse_event(message)
        if event is None:
            self.metrics.invalid.inc()
            return
        origin = event["node"]
        if origin == self.node or self._leaving:
            return
        op = event["op"]
        membership = self.membership
        if op == "bye":
            membership.drop(origin)
            return
        node, new = membership.heard(origin)
        if op == "sync":
            membership.sync(node, event.get("sessions") or ())
            if event.get("reply"):
                self._sync(self.channels.node(origin), reply=False)
            return
        if op == "state":
            self._on_state(node, event)
            return
        if op == "want":
            self._serve_page(origin, event.get("snap"), event.get("page"))
            if not new:
                return
        if op == "members":
            self._serve_members(origin, event)
            if not new:
                return
        if new:
            # A process we do not mirror (new, or forgotten while silent):
            # ask for its full state instead of applying a partial change.
            self._sync(self.channels.node(origin), reply=True)
            return
        if op in ("open", "join", "leave", "presence"):
            membership.open(node, event.get("s") or {})
        elif op == "close":
            membership.close(node, event.get("id"))
