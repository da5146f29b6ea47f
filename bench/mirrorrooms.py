"""What one server process pays for the rest of the cluster, by who shares its rooms.

    python bench/mirrorrooms.py                        # K = 0, 1, 3, 6
    python bench/mirrorrooms.py --disjoint 0 3 --quick
    python bench/mirrorrooms.py --lobby 1000           # a room spread over every process

The measured process is a real server (``twistd symple --redis``) holding
its own sessions: real WebSocket clients (bench/wsload.py), users ``m<i>``,
in rooms ``shared-<n>``.  The rest of the cluster is simulated by
bench/mirrorfeed.py: real ``Router`` + ``RedisBus`` objects whose sessions
enter their rooms through the router, so what the bus publishes is what a
real process would.  Simulated process 0 holds sessions in the same
``shared-*`` rooms; processes 1..K hold sessions only in rooms of their own
(``d<k>-<n>``), which the measured process shares with none of them.

For each K (a fresh cluster each time) it reports, for the measured
process: the sessions it mirrors (``symple_bus_remote_sessions``), its RSS,
the messages it received (``symple_bus_receives_total`` by kind) and its CPU
while the K disjoint processes open their sessions as fast as they can (a
connect storm) and while they churn at a steady rate (join, presence, leave,
reconnect), next to the same figures for its idle heartbeats.  If the
process's cost follows its own rooms, these do not grow with K.

Each phase ends with a marker: once Redis has acknowledged every publish of
the phase, one unparsable message is published on the control channel
(found with ``PUBSUB CHANNELS``, so any version's name serves; counted as
``symple_bus_invalid_total``); the measured process has read everything of
the phase when its invalid count goes up.  Markers are subtracted from the
figures.

``--lobby N`` also puts the first N sessions of every disjoint process, and
one session of the measured process, in room ``lobby``: a room spread over
every process reaches all of them, whatever the rest of their rooms.

See docs/scaling.md for figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import wsload  # noqa: E402
from cluster import Redis  # noqa: E402
from mirror import Feed, mark, observer, rss_bytes, scrape, wait_for  # noqa: E402
from run import Workers, ask, raise_fd_limit, split  # noqa: E402
from serverproc import HOST, ServerProcess, cpu_seconds, machine  # noqa: E402

RECEIVES = "symple_bus_receives_total"


def by_kind(samples: dict[str, float], metric: str) -> dict[str, float]:
    """``metric{kind="x"}`` samples as {x: value}."""
    found = {}
    for name, value in samples.items():
        if name.startswith(metric + "{"):
            labels = dict(part.split("=", 1) for part in name[len(metric) + 1:-1].split(","))
            found[labels.get("kind", "").strip('"')] = value
    return found


class Point:
    """The measured process at one moment: CPU, RSS, metrics."""

    def __init__(self, server: ServerProcess, redis: Redis) -> None:
        self.time = time.monotonic()
        self.cpu = cpu_seconds(server.pid)
        self.redis_cpu = redis.cpu_seconds()
        self.rss = rss_bytes(server.pid)
        self.samples = scrape(server.port)
        self.received = by_kind(self.samples, RECEIVES)
        self.remote = self.samples.get("symple_bus_remote_sessions", 0)
        self.invalid = self.samples.get("symple_bus_invalid_total", 0)


def difference(start: Point, end: Point) -> dict:
    """What the measured process did between two points (minus the markers it read)."""
    markers = end.invalid - start.invalid
    elapsed = end.time - start.time
    received = {kind: end.received.get(kind, 0) - start.received.get(kind, 0)
                for kind in set(start.received) | set(end.received)}
    if "control" in received:
        received["control"] -= markers
    return {"elapsed": elapsed, "cpu_s": end.cpu - start.cpu,
            "cpu_share": (end.cpu - start.cpu) / elapsed,
            "redis_cpu_s": end.redis_cpu - start.redis_cpu,
            "received": received,
            "received_per_s": {k: v / elapsed for k, v in received.items()},
            "rss": end.rss, "rss_delta": end.rss - start.rss,
            "remote": end.remote, "remote_delta": end.remote - start.remote}


def measured_phase(server: ServerProcess, redis: Redis, feed: Feed,
                   command: dict) -> dict:
    """Run one feeder command; what it cost the measured process up to the marker."""
    start = Point(server, redis)
    fed = feed.ask(**command)
    mark(server, redis)
    result = difference(start, Point(server, redis))
    result["feed"] = fed
    return result


def idle(server: ServerProcess, redis: Redis, seconds: float) -> dict:
    """Heartbeats and metrics scrapes only: the floor the phases stand on."""
    start = Point(server, redis)
    time.sleep(seconds)
    mark(server, redis)
    return difference(start, Point(server, redis))


def own_members(count: int, rooms: int, lobby: bool) -> list[tuple[str, list[str]]]:
    """The measured process's sessions: ``m<i>`` in ``shared-<i * rooms // count>``."""
    members = []
    for i in range(count):
        joined = [f"shared-{i * rooms // count}"]
        if lobby and i == 0:
            joined.append("lobby")
        members.append((f"m{i}", joined))
    return members


def one_cluster(args: argparse.Namespace, k: int) -> dict:
    """A fresh cluster with K disjoint simulated processes, measured throughout."""
    result: dict[str, Any] = {"k": k}
    with ExitStack() as stack:
        redis = Redis()
        stack.callback(redis.stop)
        server = observer(stack, redis, args.server_path)
        feed = Feed(redis.url, 1 + k, 10, args.server_path)
        stack.callback(feed.stop)
        wait_for(lambda: scrape(server.port).get("symple_bus_nodes") == k + 2, 60,
                 "the processes to meet")
        workers = stack.enter_context(Workers())
        members = own_members(args.own, args.shared_rooms, args.lobby > 0)
        pipes = [workers.spawn(wsload.resident_worker, HOST, server.port,
                               members[first:first + count], 32, 120.0)
                 for first, count in split(len(members), 2)]
        ask(pipes, ("connect",), 150)
        server.wait_idle()
        result["rss_own"] = rss_bytes(server.pid)
        # the sessions it shares rooms with: process 0, in the same shared-* rooms
        result["shared_open"] = measured_phase(server, redis, feed, {
            "op": "open", "procs": [0], "count": args.shared, "rate": 0,
            "room": "shared-", "room_size": max(1, args.shared // args.shared_rooms)})
        server.wait_idle()
        result["idle"] = idle(server, redis, args.idle_seconds)
        disjoint = list(range(1, k + 1))
        if disjoint:
            lobby = {"extra": ["lobby"], "extra_first": args.lobby} if args.lobby else {}
            result["storm"] = measured_phase(server, redis, feed, {
                "op": "open", "procs": disjoint, "count": k * args.per_process, "rate": 0,
                "room": "d{p}-", "room_size": args.room_size, **lobby})
            server.wait_idle()
            steps = int(k * args.churn_rate * args.churn_seconds)
            result["churn"] = measured_phase(server, redis, feed, {
                "op": "churn", "procs": disjoint, "count": steps,
                "rate": k * args.churn_rate})
            server.wait_idle()
        steps = int(args.churn_rate * args.churn_seconds)
        result["shared_churn"] = measured_phase(server, redis, feed, {
            "op": "churn", "procs": [0], "count": steps, "rate": args.churn_rate})
        result["client_bytes"] = sum(r["bytes"] for r in ask(pipes, ("bytes",), 30))
        end = Point(server, redis)
        result["final"] = {"remote": end.remote, "rss": end.rss,
                           "nodes": end.samples.get("symple_bus_nodes"),
                           "reconnects": end.samples.get("symple_bus_reconnects_total", 0)}
    result["loadavg_end"] = list(os.getloadavg())
    return result


def control(phase: dict) -> float:
    """Messages received other than routed frames (control, and any per-room kind)."""
    return sum(v for kind, v in phase["received"].items() if kind != "delivery")


def kinds(phase: dict) -> str:
    return ", ".join(f"{kind} {v:,.0f}" for kind, v in sorted(phase["received"].items()) if v)


def report(args: argparse.Namespace, results: list[dict]) -> None:
    print(f"\nmeasured process: {args.own:,} own sessions in {args.shared_rooms} shared rooms; "
          f"simulated process 0: {args.shared:,} sessions in the same rooms; K disjoint "
          f"processes: {args.per_process:,} sessions each in rooms of {args.room_size}"
          + (f", the first {args.lobby:,} of each also in 'lobby' (with one own session)"
             if args.lobby else "") + "\n")
    print("| K | mirrored after the storm | RSS after the storm | RSS growth in the storm "
          "| storm: control msgs published (simulated) | storm: msgs received (by kind) "
          "| storm: CPU-s (share) | churn: control msgs/s published | churn: msgs/s received "
          "| churn: CPU share | idle: msgs/s, CPU share |\n" + "|---" * 11 + "|")
    for r in results:
        idle_ = r["idle"]
        beats = control(idle_) / idle_["elapsed"]
        storm, churn = r.get("storm"), r.get("churn")
        row = [str(r["k"]), f"{(storm or r['shared_open'])['remote']:,.0f}"]
        if storm is None:
            row += [f"{r['final']['rss'] / 1e6:.1f} MB", "-", "-", "-", "-", "-", "-", "-"]
        else:
            published = sum(v for kind, v in storm["feed"]["published"].items()
                            if kind != "delivery")
            row += [f"{storm['rss'] / 1e6:.1f} MB", f"{storm['rss_delta'] / 1e6:+.1f} MB",
                    f"{published:,.0f}",
                    f"{control(storm):,.0f} ({kinds(storm)})",
                    f"{storm['cpu_s']:.2f} ({storm['cpu_share']:.0%} over "
                    f"{storm['elapsed']:.1f} s)"]
            churn_published = sum(v for kind, v in churn["feed"]["published"].items()
                                  if kind != "delivery")
            row += [f"{churn_published / churn['elapsed']:,.0f}",
                    f"{control(churn) / churn['elapsed']:,.0f}",
                    f"{churn['cpu_share']:.1%}"]
        row.append(f"{beats:,.1f}, {idle_['cpu_share']:.1%}")
        print("| " + " | ".join(row) + " |")
    print("\n| K | shared open: mirrored, CPU µs per open, RSS growth per session "
          "| shared churn: msgs/s received, CPU share | bytes to own clients "
          "| processes known, bus reconnects | load average at the end |\n|---|---|---|---|---|---|")
    for r in results:
        so, sc = r["shared_open"], r["shared_churn"]
        per = max(1, args.shared)
        print(f"| {r['k']} | {so['remote']:,.0f}, {so['cpu_s'] * 1e6 / per:.1f}, "
              f"{so['rss_delta'] / per / 1024:.2f} KiB "
              f"| {control(sc) / sc['elapsed']:,.0f}, {sc['cpu_share']:.1%} "
              f"| {r['client_bytes']:,} | {r['final']['nodes']:.0f}, "
              f"{r['final']['reconnects']:.0f} "
              f"| {' '.join(f'{x:.2f}' for x in r['loadavg_end'])} |")


def main() -> int:
    parser = argparse.ArgumentParser(description="per-process cost of the cluster, by rooms")
    parser.add_argument("--disjoint", type=int, nargs="+", default=[0, 1, 3, 6],
                        help="numbers K of simulated processes in rooms of their own")
    parser.add_argument("--own", type=int, default=1000,
                        help="the measured process's own sessions (WebSocket clients)")
    parser.add_argument("--shared", type=int, default=1000,
                        help="sessions of simulated process 0, in the shared rooms")
    parser.add_argument("--shared-rooms", type=int, default=100, help="rooms shared-*")
    parser.add_argument("--per-process", type=int, default=10_000,
                        help="sessions of each disjoint simulated process")
    parser.add_argument("--room-size", type=int, default=10,
                        help="sessions per room of a disjoint process")
    parser.add_argument("--churn-rate", type=float, default=500,
                        help="churn steps per second of each churning simulated process")
    parser.add_argument("--churn-seconds", type=float, default=10)
    parser.add_argument("--idle-seconds", type=float, default=3)
    parser.add_argument("--lobby", type=int, default=0, metavar="N",
                        help="put the first N sessions of each disjoint process in 'lobby'")
    parser.add_argument("--quick", action="store_true",
                        help="smaller: 300 own, 300 shared, 2,000 per disjoint process")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--server-path", metavar="DIR",
                        help="put DIR first on the servers' (and the feeder's) PYTHONPATH")
    args = parser.parse_args()
    if args.quick:
        args.own, args.shared, args.per_process = 300, 300, 2000
        args.churn_seconds, args.idle_seconds = 3, 1
    raise_fd_limit()
    info = machine()
    print(f"machine: {info['nproc']} CPUs, {info['cpu']}, load average "
          f"{' '.join(f'{x:.2f}' for x in info['loadavg'])}")
    results = []
    for k in args.disjoint:
        results.append(one_cluster(args, k))
        print(f"K={k}: done, load average "
              f"{' '.join(f'{x:.2f}' for x in results[-1]['loadavg_end'])}", flush=True)
    report(args, results)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "args": vars(args) | {
            "json": str(args.json), "server_path": args.server_path},
            "results": results}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
