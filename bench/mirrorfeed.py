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
"""

from __future__ import annotations

import argparse
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
        return {"op": op, "count": count, "elapsed": reactor.seconds() - start,
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
