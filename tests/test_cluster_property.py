"""Property: the roster invariant and exactly-once delivery hold across processes.

The single-process state machine of ``tests/roster_model.py`` runs against
several routers, each with its own ``RedisBus``, joined by a simulated Redis
that keeps pub/sub's one guarantee (what one connection publishes reaches
each subscriber in order) and nothing more: Hypothesis decides when each
publisher's messages reach each process, so membership changes of different
processes interleave in every order.  Processes may also crash; the
survivors then forget them as the node timeout would.  Or a process loses
Redis for a while: what was on the way is lost, and it re-registers.

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

from tests.fakes import connect, make_router
from tests.roster_model import ROOMS, USERS, Client, RosterMachine, pick

NODES = 3


class SimulatedRedis:
    """Pub/sub with one FIFO queue per (publisher, subscriber) pair."""

    def __init__(self) -> None:
        self.buses: dict[str, "SimulatedBus"] = {}
        self.queues: dict[tuple[str, str], deque] = {}

    def attach(self, bus: "SimulatedBus") -> None:
        self.buses[bus.node] = bus

    def publish(self, publisher: str, channel: str, message: bytes) -> None:
        for node, bus in self.buses.items():
            if node != publisher and channel.encode() in bus.subscriber.handlers:
                self.queues.setdefault((publisher, node), deque()).append((channel, message))

    def pending(self) -> list[tuple[str, str]]:
        return [pair for pair, queue in self.queues.items() if queue]

    def transmit(self, pair: tuple[str, str], count: int) -> None:
        queue = self.queues[pair]
        for _ in range(min(count, len(queue))):
            channel, message = queue.popleft()
            subscriber = self.buses.get(pair[1])
            if subscriber is not None:
                subscriber.received(channel.encode(), message)

    def drain(self) -> None:
        while True:
            pending = self.pending()
            if not pending:
                return
            for pair in pending:
                self.transmit(pair, len(self.queues[pair]))

    def lose(self, node: str) -> list[bytes]:
        """Redis is out for ``node``: everything on the way from or to it is lost."""
        lost = []
        for pair in list(self.queues):
            if node in pair:
                lost.extend(message for _, message in self.queues.pop(pair))
        return lost

    def crash(self, node: str) -> None:
        """The process is gone: what it published still arrives, nothing reaches it."""
        self.buses.pop(node)
        for pair in list(self.queues):
            if pair[1] == node:
                del self.queues[pair]


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
        """User -> session ids; every live process must hold the same index."""
        views = [{user: {s.id for s in members} for user, members in r.users.items()}
                 for r in self.alive()]
        assert all(view == views[0] for view in views), f"user rooms differ: {views}"
        return views[0]


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
        return not self.cluster.redis.pending()

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
    def every_process_mirrors_every_session(self) -> None:
        live = {c.session.id for c in self.clients}
        for router in self.cluster.alive():
            assert set(router.sessions) == live, \
                f"{router.bus.node} mirrors {sorted(router.sessions)}, expected {sorted(live)}"

    @rule()
    def settle(self) -> None:
        self.cluster.redis.drain()

    def connect(self, user: str, rooms: set[str], node: int = 0) -> None:
        alive = list(self.cluster.redis.buses)
        name = alive[node % len(alive)]
        quiet = not self.cluster.redis.pending()
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
            if message[:1] == b"d":
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
        self.every_process_mirrors_every_session()


class ClusterPropertyTests(unittest.TestCase):
    def test_rosters_and_delivery_across_processes(self):
        run_state_machine_as_test(ClusterRosterMachine, settings=settings(
            max_examples=150, stateful_step_count=40, deadline=None,
            suppress_health_check=[HealthCheck.too_slow]))
