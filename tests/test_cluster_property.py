"""Property: the roster invariant and exactly-once delivery hold across processes.

The single-process state machine of ``tests/roster_model.py`` runs against
several routers, each with its own ``RedisBus``, joined by a simulated Redis
that keeps pub/sub's one guarantee (what one connection publishes reaches
each subscriber in order) and nothing more: Hypothesis decides when each
publisher's messages reach each process, so membership changes of different
processes interleave in every order.  Processes may also crash; the
survivors then forget them as the node timeout would.  Or a process loses
Redis for a while: what was on the way is lost, and it re-registers.

Subscriptions take effect when Redis gets to them, as Hypothesis decides,
and their confirmation reaches the process after everything Redis sent it
before: a process subscribes to a room's channel when its first session
enters the room, and must not count on that channel before it is confirmed.
Each process must mirror exactly the other processes' sessions that share a
room with one of its own; a second machine gives each process its own
overlapping subset of users and rooms, so that processes share only some.

Frames are routed after the simulated Redis has gone quiet, because a
process routes by what it has heard so far: with changes still on the way,
"eligible" has no single meaning to test against.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterator

import orjson
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import invariant, precondition, rule, run_state_machine_as_test
from twisted.internet.task import Clock
from twisted.trial import unittest

from symple_tx.cluster import RedisBus, codec
from symple_tx.redis import RedisAddress
from symple_tx.router import Router
from symple_tx.session import Session

from tests.fakes import connect, disconnect, make_router
from tests.roster_model import ROOMS, USERS, Client, RosterMachine, pick

NODES = 3


class _Confirmation:
    """A (un)subscribe Redis has carried out, told once what came before it is read."""

    def __init__(self, channel: bytes, subscribed: bool, queues: int) -> None:
        self.channel = channel
        self.subscribed = subscribed
        self.left = queues


class SimulatedRedis:
    """Pub/sub with one FIFO queue per (publisher, subscriber) pair.

    A process's (un)subscribe commands wait in ``commands`` until Redis
    carries them out (``process``); the confirmation is then queued behind
    every message already on its way to that process, from every publisher.
    """

    def __init__(self) -> None:
        self.buses: dict[str, "SimulatedBus"] = {}
        self.queues: dict[tuple[str, str], deque] = {}
        #: The channels Redis delivers to each process.
        self.subscribed: dict[str, set[str]] = {}
        self.commands: dict[str, deque] = {}

    def attach(self, bus: "SimulatedBus") -> None:
        self.buses[bus.node] = bus
        self.subscribed[bus.node] = {c.decode() for c in bus.subscriber.handlers}
        self.commands[bus.node] = deque()

    def publish(self, publisher: str, channel: str, message: bytes) -> None:
        for node in self.buses:
            if node != publisher and channel in self.subscribed[node]:
                self.queues.setdefault((publisher, node), deque()).append((channel, message))

    def pending(self) -> list[tuple[str, str]]:
        return [pair for pair, queue in self.queues.items() if queue]

    def waiting(self) -> list[str]:
        """Processes with (un)subscribe commands Redis has not carried out yet."""
        return [node for node, commands in self.commands.items() if commands]

    def process(self, node: str, count: int) -> None:
        commands = self.commands[node]
        for _ in range(min(count, len(commands))):
            command, channel = commands.popleft()
            subscribe = command == "SUBSCRIBE"
            if subscribe:
                self.subscribed[node].add(channel.decode())
            else:
                self.subscribed[node].discard(channel.decode())
            pairs = {pair for pair in self.queues if pair[1] == node}
            pairs |= {(other, node) for other in self.buses if other != node}
            confirmation = _Confirmation(channel, subscribe, len(pairs))
            if not pairs:
                self._confirm(node, confirmation)
            for pair in pairs:
                self.queues.setdefault(pair, deque()).append(("", confirmation))

    def _confirm(self, node: str, confirmation: _Confirmation) -> None:
        bus = self.buses.get(node)
        if bus is not None:
            bus.subscriber.confirmed(bus.wire, confirmation.channel, confirmation.subscribed)

    def _arrive(self, node: str, channel: str, message: Any) -> None:
        if isinstance(message, _Confirmation):
            message.left -= 1
            if message.left == 0:
                self._confirm(node, message)
            return
        bus = self.buses.get(node)
        if bus is not None:
            bus.subscriber.received(channel.encode(), message)

    def transmit(self, pair: tuple[str, str], count: int) -> None:
        queue = self.queues[pair]
        for _ in range(min(count, len(queue))):
            channel, message = queue.popleft()
            self._arrive(pair[1], channel, message)

    def drain(self) -> None:
        while True:
            waiting, pending = self.waiting(), self.pending()
            if not waiting and not pending:
                return
            for node in waiting:
                self.process(node, len(self.commands[node]))
            for pair in pending:
                self.transmit(pair, len(self.queues[pair]))

    def lose(self, node: str) -> list[bytes]:
        """Redis is out for ``node``: everything on the way from or to it is lost.

        Its subscriber then connects again and subscribes to all its channels
        at once, as ``Subscription`` does.
        """
        lost = []
        for pair in list(self.queues):
            if node in pair:
                for channel, message in self.queues.pop(pair):
                    if isinstance(message, _Confirmation):
                        if pair[1] != node:  # another process's, passed on
                            self._arrive(pair[1], channel, message)
                    else:
                        lost.append(message)
        bus = self.buses[node]
        subscription = bus.subscriber
        self.commands[node].clear()
        self.subscribed[node] = {c.decode() for c in subscription.handlers}
        subscription._outstanding = {}
        subscription._confirmed = set(subscription.handlers)
        waiting, subscription._confirming = subscription._confirming, {}
        bus.up = False  # the bus is not up before every channel is subscribed again
        for ds in waiting.values():
            for d in ds:
                d.callback(None)
        bus.up = True
        return lost

    def crash(self, node: str) -> None:
        """The process is gone: what it published still arrives, nothing reaches it."""
        self.buses.pop(node)
        self.commands.pop(node)
        self.subscribed.pop(node)
        for pair in list(self.queues):
            if pair[1] == node:
                del self.queues[pair]


class SimulatedWire:
    """The subscriber connection: its (un)subscribe commands go to ``SimulatedRedis``."""

    def __init__(self, bus: "SimulatedBus", redis: SimulatedRedis) -> None:
        self.bus = bus
        self.redis = redis
        self.transport = self
        bus.subscriber._wire = self
        bus.subscriber._confirmed = set(bus.subscriber.handlers)

    def _build_command(self, command: str, *channels: bytes) -> tuple:
        return command, channels

    def write(self, command: tuple) -> None:
        name, channels = command
        for channel in channels:
            self.redis.commands[self.bus.node].append((name, channel))


class SimulatedBus(RedisBus):
    """The real bus, publishing into ``SimulatedRedis`` instead of a connection.

    States of more than two sessions come in pages, so the interleavings and
    outages Hypothesis picks also hit a state being read page by page.
    """

    def __init__(self, router: Router, node: str, redis: SimulatedRedis) -> None:
        super().__init__(router, RedisAddress(), node_id=node, reactor=Clock())
        self.sync_page = 2
        self.redis = redis
        self.up = True
        self.wire = SimulatedWire(self, redis)
        redis.attach(self)

    def _publish(self, channel: str, message: bytes, kind: str) -> None:
        self.redis.publish(self.node, channel, message)


class Cluster:
    """Looks like the one router the single-process machine drives."""

    def __init__(self) -> None:
        self.redis = SimulatedRedis()
        self.routers: dict[str, Router] = {}
        for index in range(NODES):
            router = make_router()
            router.bus = SimulatedBus(router, f"n{index}", self.redis)
            self.routers[f"n{index}"] = router
        for router in self.routers.values():
            router.bus._sync(router.bus.channels.control, reply=True)
        self.redis.drain()

    def alive(self) -> list[Router]:
        return [self.routers[node] for node in self.redis.buses]

    def owner(self, session: Session) -> Router:
        return next(r for r in self.routers.values() if r.sessions.get(session.id) is session)

    # -- what RosterMachine calls on "the router" ---------------------------------

    def handle(self, session: Session, frame: dict) -> Any:
        return self.owner(session).handle(session, frame)

    def close_session(self, session: Session) -> None:
        self.owner(session).close_session(session)

    def link_closed(self, link: Any) -> None:
        for router in self.routers.values():
            if link in router.links:
                router.link_closed(link)

    @property
    def sessions(self) -> dict[str, Session]:
        return {i: s for r in self.alive() for i, s in r.sessions.items() if s.node is None}

    @property
    def rooms(self) -> "_Rooms":
        return _Rooms(self.alive())

    def user_rooms(self) -> dict[str, set[str]]:
        """User -> session ids, over every live process; each holds in its index
        exactly the sessions it holds (its own and those it mirrors)."""
        union: dict[str, set[str]] = {}
        for router in self.alive():
            indexed = set()
            for user, members in router.users.items():
                for session in members:
                    assert session.user == user and router.sessions.get(session.id) is session
                    indexed.add(session.id)
                union.setdefault(user, set()).update(s.id for s in members)
            assert indexed == set(router.sessions), \
                f"{router.bus.node}: user rooms {sorted(indexed)}, " \
                f"sessions {sorted(router.sessions)}"
        return union


class _Rooms:
    def __init__(self, routers: list[Router]) -> None:
        self.routers = routers

    def values(self) -> Iterator[set]:
        for router in self.routers:
            yield from router.rooms.values()


class ClusterRosterMachine(RosterMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cluster = Cluster()
        self.router = self.cluster  # type: ignore[assignment]
        self.home: dict[str, str] = {}

    def route(self, sender: Client, frame: dict) -> None:
        self.cluster.redis.drain()
        super().deliver()
        super().route(sender, frame)

    def quiet(self) -> bool:
        return not self.cluster.redis.pending() and not self.cluster.redis.waiting()

    def user_rooms(self) -> dict[str, set[str]]:
        return self.cluster.user_rooms()

    def check_sender(self, client: Client, frame: dict) -> None:
        """Processes hear of changes late, so a frame may be read after the
        rooms it was sent for changed, or after its sender left; but it never
        comes from a session that has not held a legitimate room the receiver
        has held (its user room, or a named room both joined)."""
        sender_id = self.sender_of(frame)
        if sender_id is None:
            return
        shared = self.held.get(sender_id, set()) & self.held[client.session.id]
        assert shared, \
            f"{client} got {frame['type']} from {self.labels.get(sender_id, sender_id)}, " \
            f"with whom it never shared a room: {frame}"

    def may_miss(self, label: str, mid: str) -> bool:
        """A presence routed by another process is dropped on arrival for a
        recipient that no longer sees its sender (a late "online" would
        contradict the "offline" it was already sent)."""
        if self.kinds[mid] != "presence":
            return False
        client = next(c for c in self.clients if c.label == label)
        sender = next((c for c in self.clients if c.session.id == self.senders[mid]), None)
        return sender is None or not client.sees(sender)

    # The invariants hold once Redis has handed everything over.
    @precondition(quiet)
    @invariant()
    def rosters_match_visibility(self) -> None:
        super().rosters_match_visibility()

    @precondition(quiet)
    @invariant()
    def frames_reach_exactly_their_recipients(self) -> None:
        super().frames_reach_exactly_their_recipients()

    @precondition(quiet)
    @invariant()
    def router_index_matches_model(self) -> None:
        super().router_index_matches_model()

    @precondition(quiet)
    @invariant()
    def each_process_mirrors_the_sessions_sharing_a_room_with_its_own(self) -> None:
        for name in self.cluster.redis.buses:
            router = self.cluster.routers[name]
            mine = [c for c in self.clients if self.home[c.session.id] == name]
            want = {c.session.id for c in self.clients if self.home[c.session.id] != name
                    and any(m.sees(c) for m in mine)}
            have = {i for i, s in router.sessions.items() if s.node is not None}
            label = self.labels.get
            assert have == want, \
                f"{name} (holding {sorted(map(str, mine))}) mirrors " \
                f"{sorted(label(i, i) for i in have)}, expected " \
                f"{sorted(label(i, i) for i in want)}"

    @rule()
    def settle(self) -> None:
        self.cluster.redis.drain()

    def place(self, name: str, user: str, rooms: set[str]) -> tuple[str, set[str]]:
        """The user and rooms a session on process ``name`` gets: as asked, here."""
        return user, rooms

    def connect(self, user: str, rooms: set[str], node: int = 0) -> None:
        alive = list(self.cluster.redis.buses)
        name = alive[node % len(alive)]
        user, rooms = self.place(name, user, rooms)
        quiet = self.quiet()
        session, link = connect(self.cluster.routers[name], user, sorted(rooms))
        label = f"{user}#{next(self.counter)}@{name}"
        self.labels[session.id] = label
        self.home[session.id] = name
        self.clients.append(Client(label, session, link, rooms))
        self.note_rooms(self.clients[-1])
        if quiet:  # with presence data on the way, the snapshot may not have it yet
            super().deliver()
            client = self.clients[-1]
            snapshot = {i: data.get("caps") for i, data in client.roster.items()}
            assert snapshot == {i: self.caps.get(i) for i in snapshot}, \
                f"{client}'s snapshot lacks the latest presence: {snapshot}"

    @rule(user=st.sampled_from(USERS), rooms=st.sets(st.sampled_from(ROOMS + USERS)), node=pick)
    def connect_somewhere(self, user: str, rooms: set[str], node: int) -> None:
        self.connect(user, rooms, node)

    @precondition(lambda self: self.cluster.redis.pending())
    @rule(which=pick, count=st.integers(1, 4))
    def transmit(self, which: int, count: int) -> None:
        """Let Redis hand over a few messages of one publisher to one subscriber."""
        pending = self.cluster.redis.pending()
        self.cluster.redis.transmit(pending[which % len(pending)], count)

    @precondition(lambda self: self.cluster.redis.waiting())
    @rule(which=pick, count=st.integers(1, 3))
    def carry_out(self, which: int, count: int) -> None:
        """Let Redis carry out a few (un)subscribe commands of one process."""
        waiting = self.cluster.redis.waiting()
        self.cluster.redis.process(waiting[which % len(waiting)], count)

    @precondition(lambda self: len(self.cluster.redis.buses) > 1)
    @rule(which=pick)
    def crash(self, which: int) -> None:
        """A process dies without goodbye; the others time it out."""
        alive = list(self.cluster.redis.buses)
        node = alive[which % len(alive)]
        self.settle()  # what it had published still arrives
        self.cluster.redis.crash(node)
        self.clients = [c for c in self.clients if self.home[c.session.id] != node]
        for router in self.cluster.alive():
            router.bus.membership.drop(node)
        if not self.clients:
            self.connect(USERS[0], set(), 0)

    @rule(which=pick, others_expire=st.booleans(), self_expires=st.booleans())
    def outage(self, which: int, others_expire: bool, self_expires: bool) -> None:
        """A process loses Redis for a while, then re-registers when it is back.

        What was on the way is lost (at-most-once); with a long outage the
        others time it out and it times them out.
        """
        alive = list(self.cluster.redis.buses)
        node = alive[which % len(alive)]
        for message in self.cluster.redis.lose(node):
            if isinstance(message, bytes) and message[:1] == b"d":
                _, session_ids, payload = codec.parse_delivery(message)
                mid = orjson.loads(payload).get("mid")
                for session_id in session_ids:
                    self.expected.get(mid, set()).discard(self.labels[session_id])
        bus = self.cluster.routers[node].bus
        for other in alive:
            if other != node:
                if others_expire:
                    self.cluster.routers[other].bus.membership.drop(node)
                if self_expires:
                    bus.membership.drop(other)
        bus._sync(bus.channels.control, reply=True)

    def teardown(self) -> None:
        self.settle()
        self.rosters_match_visibility()
        self.frames_reach_exactly_their_recipients()
        self.router_index_matches_model()
        self.each_process_mirrors_the_sessions_sharing_a_room_with_its_own()


#: Process -> the users and the rooms its sessions draw from.  Neighbours
#: share a user or a room, n0 and n2 nothing; n2's named room "ann" is not
#: ann's user room.
SUBSETS = {"n0": (("ann", "bob"), ("r1", "r2")),
           "n1": (("bob", "cat"), ("r2", "r3")),
           "n2": (("cat",), ("r3", "ann"))}


class PartlySharedRoomsMachine(ClusterRosterMachine):
    """Each process's sessions draw users and rooms from its own subset."""

    def place(self, name: str, user: str, rooms: set[str]) -> tuple[str, set[str]]:
        users, named = SUBSETS[name]
        everything = ROOMS + USERS
        return (users[USERS.index(user) % len(users)],
                {named[everything.index(room) % len(named)] for room in rooms})

    @precondition(lambda self: self.clients)
    @rule(index=pick, room=st.sampled_from(ROOMS + USERS))
    def join(self, index: int, room: str) -> None:
        _, named = SUBSETS[self.home[self.client(index).session.id]]
        super().join(index, named[(ROOMS + USERS).index(room) % len(named)])


class SubscriptionRaceTests(unittest.TestCase):
    """A room's channel counts only once Redis has confirmed it."""

    def test_a_session_heard_through_a_room_not_yet_subscribed_is_not_kept(self):
        cluster = Cluster()
        here, there = cluster.routers["n0"], cluster.routers["n1"]
        lee, _ = connect(here, "lee", ["b"])
        sam, _ = connect(there, "sam", ["a", "b"])
        cluster.redis.drain()
        self.assertIn(sam.id, here.sessions)
        here.handle(lee, {"type": "join", "room": "a"})  # SUBSCRIBE a: not carried out yet
        there.handle(sam, {"type": "leave", "room": "b"})
        cluster.redis.transmit(("n1", "n0"), 10)  # the leave, heard on b only
        self.assertNotIn(sam.id, here.sessions)
        disconnect(there, sam)  # told on a, which Redis does not deliver to n0 yet
        cluster.redis.drain()
        self.assertNotIn(sam.id, here.sessions)
        self.assertEqual(here.bus.remote_sessions(), 0)

    def test_a_room_entered_on_two_processes_at_once(self):
        """Each process's first member of a room is told to the other, whichever
        request the other missed."""
        cluster = Cluster()
        one, two = cluster.routers["n0"], cluster.routers["n1"]
        for first, second in (("n0", "n1"), ("n1", "n0")):
            ann, _ = connect(one, "ann", [f"room-{first}"])
            bob, _ = connect(two, "bob", [f"room-{first}"])
            # one side's SUBSCRIBE is carried out and confirmed, and it asks,
            # before Redis gets to the other side's
            cluster.redis.process(first, 10)
            for pair in cluster.redis.pending():
                if pair[1] == first:
                    cluster.redis.transmit(pair, 100)
            self.assertEqual(cluster.redis.waiting(), [second])
            cluster.redis.drain()
            self.assertIn(bob.id, one.sessions)
            self.assertIn(ann.id, two.sessions)
            disconnect(one, ann)
            disconnect(two, bob)
            cluster.redis.drain()


class ClusterPropertyTests(unittest.TestCase):
    def test_rosters_and_delivery_across_processes(self):
        run_state_machine_as_test(ClusterRosterMachine, settings=settings(
            max_examples=150, stateful_step_count=40, deadline=None,
            suppress_health_check=[HealthCheck.too_slow]))

    def test_processes_sharing_only_some_rooms_mirror_only_those(self):
        run_state_machine_as_test(PartlySharedRoomsMachine, settings=settings(
            max_examples=150, stateful_step_count=40, deadline=None,
            suppress_health_check=[HealthCheck.too_slow]))
