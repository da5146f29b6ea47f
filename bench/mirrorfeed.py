"""Feeder for bench/mirror.py: simulated server processes that hold many sessions.

Each simulated process is a real ``Router`` with a real ``RedisBus`` (the
server's own cluster code): its sessions are ordinary local sessions whose
link discards what it is sent, so opening, joining, leaving, storing presence
and closing them publishes exactly the control events a server would, and
the bus answers syncs, heartbeats and goodbyes as a server does.  The server
processes under measurement cannot tell the feeder from real peers.

Driven by bench/mirror.py over stdin/stdout, one JSON object per line::

    {"op": "open", "count": N, "rate": R}     # N new sessions, R/s (0: at once)
    {"op": "join" | "leave" | "presence" | "close", "count": N, "rate": R}
    {"op": "sync_size"}                        # bytes of each process's sync message
    {"op": "quit"}

Session ``i`` is user ``u<i>`` in room ``r<i // room_size>``; ``join`` adds
room ``x<i // room_size>`` and ``leave`` removes it again.

With ``procs`` (a list of process indexes) an operation works on those
processes' own sessions instead, ``count`` steps in all, taken in turn::

    {"op": "open", "procs": [1, 2], "count": N, "rate": R,
     "room": "d{p}-", "room_size": 10, "extra": ["lobby"], "extra_first": 5}
    {"op": "join" | "leave" | "presence" | "churn", "procs": [1, 2], "count": N, "rate": R}

Process ``p``'s session ``j`` is user ``p<p>u<j>`` in room
``<room formatted with p><j // room_size>``, and the first ``extra_first``
of each process's new sessions are in the ``extra`` rooms too.  ``join``
adds room ``x-<its first room>``, ``leave`` removes it; ``churn`` cycles
join, presence, leave and reconnect (close, then open with the same rooms:
two events).  Such a run answers once Redis has acknowledged every publish,
with the events the routers reported and the control messages the buses
published (``published``, by kind), so a marker published afterwards on
another connection reaches every subscriber after all of them.
"""

from __future__ import annotations

import argparse
import random
import sys
from typing import Any

import orjson
from twisted.internet import reactor, stdio, task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.protocols.basic import LineReceiver

from symple_tx.cluster import RedisBus, codec
from symple_tx.config import Settings
from symple_tx.metrics import Metrics
from symple_tx.redis import Keys, RedisAddress
from symple_tx.router import Router
from symple_tx.session import Identity, Session


#: Sessions handled per reactor turn when no rate is given, so publishes flush.
BATCH = 500
#: Publishes Redis has not acknowledged yet before the feeder waits: the bus
#: drops beyond its own bound (100 000), and a lost event would skew the count.
MAX_UNACKNOWLEDGED = 5_000


class Discard:
    """The link of a simulated session: frames go nowhere."""

    def send(self, frame: Any) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        pass


DISCARD = Discard()


class Feeder:
    """Several simulated processes; session ``i`` lives on process ``i % len(nodes)``."""

    def __init__(self, address: RedisAddress, processes: int, keys: Keys,
                 room_size: int) -> None:
        self.room_size = room_size
        self.routers: list[Router] = []
        for index in range(processes):
            router = Router(Settings(), Metrics())
            router.bus = RedisBus(router, address, keys, node_id=f"feed{index}")
            router.bus.start()
            self.routers.append(router)
        self.sessions: list[Session] = []
        self.joined = 0
        self.left = 0
        self.presences = 0
        self.closed = 0
        self.groups = [Group(router, index) for index, router in enumerate(self.routers)]

    def ready(self) -> bool:
        return all(r.bus.up for r in self.routers)

    def _open(self, i: int) -> None:
        router = self.routers[i % len(self.routers)]
        user = f"u{i}"
        identity = Identity(user=user, name=user, rooms=[f"r{i // self.room_size}"])
        self.sessions.append(router.open_session(DISCARD, identity, "127.0.0.1"))

    def _router(self, session: Session) -> Router:
        return self.routers[int(session.user[1:]) % len(self.routers)]

    def step(self, op: str, i: int) -> None:
        if op == "open":
            self._open(len(self.sessions))
            return
        if op == "close":
            session = self.sessions[self.closed]
            self.closed += 1
            self._router(session).close_session(session)
            return
        if op == "join":
            session = self.sessions[self.joined % len(self.sessions)]
            self.joined += 1
            room = f"x{int(session.user[1:]) // self.room_size}"
            self._router(session).handle(session, {"type": "join", "room": room})
            return
        if op == "leave":
            session = self.sessions[self.left % len(self.sessions)]
            self.left += 1
            room = f"x{int(session.user[1:]) // self.room_size}"
            self._router(session).handle(session, {"type": "leave", "room": room})
            return
        if op == "presence":
            session = self.sessions[self.presences % len(self.sessions)]
            self.presences += 1
            self._router(session).handle(session, {
                "type": "presence", "to": session.address,
                "data": {"status": "away", "n": self.presences}})
            return
        raise ValueError(f"unknown op {op!r}")

    @inlineCallbacks
    def run_procs(self, command: dict):
        """``count`` steps of ``op`` over the processes ``procs``' own sessions, in turn."""
        op, count = command["op"], int(command["count"])
        rate = float(command.get("rate", 0))
        groups = [self.groups[int(p)] for p in command["procs"]]
        if op == "open":
            for group in groups:
                group.layout(command)
        before = self.published()
        start = reactor.seconds()
        done = events = 0
        while done < count:
            if rate > 0:
                due = min(count, int((reactor.seconds() - start) * rate) + 1)
            else:
                due = min(count, done + BATCH)
            while done < due:
                events += groups[done % len(groups)].step(op)
                done += 1
            yield task.deferLater(reactor, 0.001 if rate > 0 else 0, lambda: None)
            while self.unacknowledged() > MAX_UNACKNOWLEDGED:
                yield task.deferLater(reactor, 0.001, lambda: None)
        elapsed = reactor.seconds() - start
        while self.unacknowledged():
            yield task.deferLater(reactor, 0.001, lambda: None)
        after = self.published()
        return {"op": op, "count": count, "events": events, "elapsed": elapsed,
                "acknowledged": reactor.seconds() - start,
                "published": {k: after.get(k, 0) - before.get(k, 0) for k in after},
                "sessions": [len(g.sessions) for g in groups],
                "reconnects": [r.bus.metrics.reconnects._value.get() for r in self.routers]}

    def published(self) -> dict[str, float]:
        """Messages all simulated buses published so far, by kind (from their registries)."""
        totals: dict[str, float] = {}
        for router in self.routers:
            for family in router.metrics.registry.collect():
                if family.name != "symple_bus_publishes":
                    continue
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        kind = sample.labels.get("kind", "")
                        totals[kind] = totals.get(kind, 0) + sample.value
        return totals

    @inlineCallbacks
    def run(self, op: str, count: int, rate: float):
        """``count`` steps of ``op``; at ``rate`` per second, or in batches as fast as we can."""
        start = reactor.seconds()
        done = 0
        while done < count:
            if rate > 0:
                due = min(count, int((reactor.seconds() - start) * rate) + 1)
            else:
                due = min(count, done + BATCH)
            while done < due:
                self.step(op, done)
                done += 1
            yield task.deferLater(reactor, 0.001 if rate > 0 else 0, lambda: None)
            while self.unacknowledged() > MAX_UNACKNOWLEDGED:
                yield task.deferLater(reactor, 0.001, lambda: None)
        elapsed = reactor.seconds() - start
        while self.unacknowledged():  # so a marker published next comes after all of it
            yield task.deferLater(reactor, 0.001, lambda: None)
        return {"op": op, "count": count, "elapsed": elapsed,
                "reconnects": [r.bus.metrics.reconnects._value.get() for r in self.routers]}

    def unacknowledged(self) -> int:
        return max(len(r.bus.publisher.protocol.replyQueue.waiting)
                   if r.bus.publisher.protocol is not None else 0 for r in self.routers)

    def sync_sizes(self) -> list[list[int]]:
        """Per process: bytes of its whole state as one message, and of its largest page."""
        sizes = []
        for router in self.routers:
            bus = router.bus
            states = [codec.session_state(s) for s in router.sessions.values()
                      if s.node is None]
            page = getattr(bus, "sync_page", len(states)) or len(states)
            sizes.append([len(codec.event("sync", bus.node, sessions=states, reply=False)),
                          len(codec.event("state", bus.node, snap="00000000", page=0,
                                          sessions=states[:page], more=True,
                                          reply=False))])
        return sizes


class Group:
    """One simulated process's own sessions, laid out in rooms by ``open``."""

    CHURN = ("join", "presence", "leave", "reopen")

    def __init__(self, router: Router, index: int) -> None:
        self.router = router
        self.index = index
        self.sessions: list[Session] = []
        #: Each session's first room (``join`` and ``leave`` use ``x-<it>``).
        self.primary: list[str] = []
        self.opened = 0
        self.room = f"p{index}-"
        self.room_size = 10
        self.extra: list[str] = []
        self.extra_first = 0
        self.cursor = {op: 0 for op in ("join", "presence", "leave", "churn")}
        #: The order steps visit the sessions in: shuffled, so the first ones
        #: (those in the ``extra`` rooms) get their share of the changes, no more.
        self.order: list[int] = []

    def layout(self, command: dict) -> None:
        self.room = str(command.get("room", self.room)).format(p=self.index)
        self.room_size = int(command.get("room_size", self.room_size))
        self.extra = [str(r) for r in command.get("extra", ())]
        self.extra_first = self.opened + int(command.get("extra_first", 0))

    def rooms_of(self, j: int) -> list[str]:
        rooms = [f"{self.room}{j // self.room_size}"]
        return rooms + self.extra if j < self.extra_first else rooms

    def _open(self, rooms: list[str], user: str = "") -> Session:
        j = self.opened
        self.opened += 1
        user = user or f"p{self.index}u{j}"
        identity = Identity(user=user, name=user, rooms=rooms)
        return self.router.open_session(DISCARD, identity, "127.0.0.1")

    def _next(self, op: str) -> int:
        n = self.cursor[op]
        self.cursor[op] = n + 1
        return n

    def _slot(self, n: int) -> int:
        if len(self.order) != len(self.sessions):
            self.order = list(range(len(self.sessions)))
            random.Random(self.index).shuffle(self.order)
        return self.order[n % len(self.order)]

    def step(self, op: str) -> int:
        """One step of ``op``; the number of membership events it caused."""
        if op == "open":
            rooms = self.rooms_of(self.opened)
            self.sessions.append(self._open(rooms))
            self.primary.append(rooms[0])
            return 1
        if op == "churn":
            n = self._next("churn")
            op = self.CHURN[n % len(self.CHURN)]
            slot = self._slot(n // len(self.CHURN))
        else:
            slot = self._slot(self._next(op))
        session = self.sessions[slot]
        first = self.primary[slot]
        if op == "join":
            self.router.handle(session, {"type": "join", "room": f"x-{first}"})
        elif op == "leave":
            self.router.handle(session, {"type": "leave", "room": f"x-{first}"})
        elif op == "presence":
            self.router.handle(session, {"type": "presence", "to": session.address,
                                         "data": {"status": "away", "n": slot}})
        elif op == "reopen":
            rooms = sorted(session.rooms)
            self.router.close_session(session)
            self.sessions[slot] = self._open(rooms, session.user)
            return 2
        else:
            raise ValueError(f"unknown op {op!r}")
        return 1


class Control(LineReceiver):
    delimiter = b"\n"

    def __init__(self, feeder: Feeder) -> None:
        self.feeder = feeder
        self.busy: Deferred = task.deferLater(reactor, 0, lambda: None)

    def connectionMade(self) -> None:
        self._when_ready()

    def _when_ready(self) -> None:
        if self.feeder.ready():
            self.reply({"ready": [r.bus.node for r in self.feeder.routers]})
        else:
            reactor.callLater(0.05, self._when_ready)

    def reply(self, value: Any) -> None:
        self.sendLine(orjson.dumps(value))

    def lineReceived(self, line: bytes) -> None:
        command = orjson.loads(line)
        self.busy.addCallback(lambda _: self.execute(command))

    def execute(self, command: dict) -> Any:
        op = command["op"]
        if op == "quit":
            d = Deferred()
            stops = [r.bus.stop() for r in self.feeder.routers]
            task.deferLater(reactor, 0, lambda: None).addCallback(
                lambda _: [s.addBoth(lambda _: None) for s in stops])
            reactor.callLater(0.5, reactor.stop)
            d.callback(None)
            return d
        if op == "sync_size":
            self.reply({"sync_size": self.feeder.sync_sizes()})
            return None
        if "procs" in command:
            return self.feeder.run_procs(command).addCallback(self.reply)
        d = self.feeder.run(op, int(command["count"]), float(command.get("rate", 0)))
        return d.addCallback(self.reply)

    def connectionLost(self, reason: Any) -> None:
        if reactor.running:
            reactor.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True, help="redis:// URL")
    parser.add_argument("--processes", type=int, default=1, help="simulated processes")
    parser.add_argument("--prefix", default="symple:", help="key prefix of the cluster")
    parser.add_argument("--room-size", type=int, default=10, help="sessions per room")
    args = parser.parse_args()
    feeder = Feeder(RedisAddress.parse(args.redis), args.processes, Keys(args.prefix),
                    args.room_size)
    stdio.StandardIO(Control(feeder))
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
