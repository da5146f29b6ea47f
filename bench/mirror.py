"""What mirroring the cluster costs one server process.

    python bench/mirror.py                    # 100,000 sessions
    python bench/mirror.py --sessions 20000   # quicker

Every process of a cluster mirrors every session of the others and applies
every membership change they report (docs/clustering.md).  This benchmark
measures that cost on real server processes (``twistd symple --redis``)
over a private redis-server.  The other processes of the cluster are
simulated by bench/mirrorfeed.py: real ``Router`` + ``RedisBus`` objects
(the server's own cluster code) whose sessions have no socket, so the
processes under measurement receive exactly what real peers would send.

Reported per measured process (the "observers", which hold no sessions of
their own, so everything they spend is the mirror):

* memory per mirrored remote session (RSS growth / sessions);
* CPU per applied event, for open, join, presence, leave and close
  (process CPU time / events, from /proc);
* control-channel messages/s received during a connect storm (the feeder
  opening sessions as fast as it can) and the observer's CPU share meanwhile;
* rejoin: time for a freshly started process to mirror the cluster's M
  sessions, and the size of the sync message each simulated process sends it.

A phase ends when each observer has read a marker published after Redis
acknowledged the feeder's last publish, and a rejoin when the new process
mirrors every session or, having read every page of the states it was
sent, has gone idle.  So the same script measures a bus that mirrors only
the sessions sharing a room with a process's own: the observers then
mirror nothing, and what is left is what sharing no room costs (the
messages still received, the states read at a rejoin).  bench/mirrorrooms.py
measures processes that hold sessions of their own.

See docs/scaling.md for figures and the projection built on them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster import Redis, cluster_metric  # noqa: E402
from serverproc import HOST, ServerProcess, cpu_seconds, free_port, machine, symple_command  # noqa: E402,E501

BENCH_DIR = Path(__file__).resolve().parent
PREFIX = "symple:"
CLUSTER = PREFIX + "cluster:"
#: Published on the control channel after a phase: unparsable, so each process
#: counts it in ``symple_bus_invalid_total`` and does nothing else.
MARKER = "bench-marker"


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class Feed:
    """bench/mirrorfeed.py as a child process, spoken to one JSON line at a time."""

    def __init__(self, redis_url: str, processes: int, room_size: int,
                 server_path: Optional[str]) -> None:
        import os
        env = dict(os.environ)
        if server_path:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (server_path, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH_DIR / "mirrorfeed.py"), "--redis", redis_url,
             "--processes", str(processes), "--prefix", PREFIX,
             "--room-size", str(room_size)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.nodes = self.read()["ready"]

    def read(self) -> Any:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the feeder stopped")
        return json.loads(line)

    def ask(self, **command: Any) -> Any:
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self) -> None:
        try:
            self.proc.stdin.write(b'{"op": "quit"}\n')
            self.proc.stdin.flush()
            self.proc.wait(10)
        except Exception:
            self.proc.kill()
            self.proc.wait()


def observer(stack: ExitStack, redis: Redis, server_path: Optional[str]) -> ServerProcess:
    port = free_port()
    server = ServerProcess(symple_command(port, "--ping-interval", "0", "--redis", redis.url,
                                          "--node-timeout", "60"), port, server_path)
    stack.enter_context(server)
    return server


def wait_for(condition: Callable[[], bool], timeout: float, what: str,
             interval: float = 0.1) -> float:
    """Poll ``condition``; the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(interval)
    return time.monotonic()


def scrape(port: int) -> dict[str, float]:
    """Every sample of the process's /metrics, by its name with labels."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def control_channels(redis: Redis) -> list[str]:
    """The cluster's control channel(s) with subscribers, whatever their version's name."""
    found = redis.cli("PUBSUB", "CHANNELS", CLUSTER + "*control").split()
    return [c for c in found
            if not any(part in ("room", "user", "node") for part in
                       c[len(CLUSTER):].split(":")[:-1])]


def mark(server: ServerProcess, redis: Redis, timeout: float = 300) -> None:
    """Publish the marker; return once the measured process has read it."""
    before = scrape(server.port).get("symple_bus_invalid_total", 0)
    channels = control_channels(redis)
    if not channels:
        raise RuntimeError("no control channel has subscribers")
    for channel in channels:
        redis.cli("PUBLISH", channel, MARKER)
    wait_for(lambda: scrape(server.port).get("symple_bus_invalid_total", 0) > before,
             timeout, "the marker to reach the measured process", interval=0.05)


def control_received(server: ServerProcess) -> float:
    return cluster_metric(server.port, 'symple_bus_receives_total{kind="control"}')


def remote(server: ServerProcess) -> float:
    return cluster_metric(server.port, "symple_bus_remote_sessions")


def busy_metric(server: ServerProcess, name: str) -> float:
    """A metric of a process that may be too busy to answer within the timeout: -1 then."""
    try:
        return cluster_metric(server.port, name)
    except OSError:  # urllib's timeouts and refusals
        return -1


def phase(feed: Feed, redis: Redis, observers: list[ServerProcess], op: str, count: int,
          rate: float = 0) -> dict:
    """Run one kind of event ``count`` times; what it cost each observer (and Redis).

    The phase ends for an observer when it has read the marker published
    after Redis acknowledged the feeder's last publish: an observer that
    mirrors everything has then applied all ``count`` events, one that
    mirrors only what shares its rooms has read whatever concerned it.
    """
    before = [(cpu_seconds(s.pid), rss_bytes(s.pid), control_received(s),
               busy_metric(s, "symple_bus_invalid_total")) for s in observers]
    redis_cpu = redis.cpu_seconds()
    start = time.monotonic()
    fed = feed.ask(op=op, count=count, rate=rate)
    ends = []
    for server in observers:
        mark(server, redis)
        ends.append(time.monotonic())
    results = []
    for server, (cpu, rss, got, invalid), end in zip(observers, before, ends):
        used = cpu_seconds(server.pid) - cpu
        elapsed = end - start
        markers = busy_metric(server, "symple_bus_invalid_total") - invalid
        received = control_received(server) - got - markers
        results.append({"cpu_us_per_event": used * 1e6 / count, "received": received,
                        "rss_delta": rss_bytes(server.pid) - rss,
                        "control_per_s": received / elapsed,
                        "cpu_share": used / elapsed, "elapsed": elapsed})
    # every process subscribes to the control channel, the simulated ones too
    subscribers = len(observers) + len(feed.nodes)
    return {"op": op, "count": count, "feed_elapsed": fed["elapsed"], "observers": results,
            "feed_reconnects": fed["reconnects"],
            "redis_us_per_delivery": (redis.cpu_seconds() - redis_cpu) * 1e6
            / (count * subscribers)}


#: Sessions per page of a state (the bus's ``SYNC_PAGE``): a new process has
#: read a state of N sessions once it has received at least N / this messages.
STATE_PAGE = 1000
#: Seconds without CPU use after which a process has done what it was sent.
QUIET = 0.5


def rejoin(stack: ExitStack, redis: Redis, feed: Feed, sessions: int, timeout: float,
           server_path: Optional[str]) -> dict:
    """Start a new process; how long until it mirrors all ``sessions``.

    It is stopped afterwards (saying goodbye), so the next trial meets the
    same cluster.
    """
    feed_cpu = cpu_seconds(feed.proc.pid)
    with ExitStack() as own:
        start = time.monotonic()
        late = observer(own, redis, server_path)
        up = wait_for(lambda: cluster_metric(late.port, "symple_bus_up") == 1, 120,
                      "the new process to reach Redis", interval=0.02)
        pages = -(-sessions // STATE_PAGE)
        try:
            full = wait_for(lambda: busy_metric(late, "symple_bus_remote_sessions") >= sessions
                            or control_received(late) >= pages,
                            timeout, "the new process to mirror everyone", interval=0.02)
            if busy_metric(late, "symple_bus_remote_sessions") < sessions:
                # It keeps only what shares its rooms: done once it stops working
                # on what it was sent (watched in /proc, not by asking it).
                late.wait_idle(QUIET, timeout)
                full = time.monotonic() - QUIET
        except RuntimeError:
            return {"completed": False, "timeout_s": timeout,
                    "mirrored": busy_metric(late, "symple_bus_remote_sessions"),
                    "reconnects": busy_metric(late, "symple_bus_reconnects_total"),
                    "cpu_s": cpu_seconds(late.pid),
                    "feed_cpu_s": cpu_seconds(feed.proc.pid) - feed_cpu}
        return {"completed": True, "from_start_s": full - start, "from_bus_up_s": full - up,
                "mirrored": busy_metric(late, "symple_bus_remote_sessions"),
                "received": control_received(late),
                "cpu_s": cpu_seconds(late.pid), "rss": rss_bytes(late.pid),
                "feed_cpu_s": cpu_seconds(feed.proc.pid) - feed_cpu,
                "reconnects": cluster_metric(late.port, "symple_bus_reconnects_total")}


def main() -> int:
    parser = argparse.ArgumentParser(description="cost of the cluster mirror per process")
    parser.add_argument("--sessions", type=int, default=100_000, help="sessions to mirror")
    parser.add_argument("--feed-processes", type=int, default=1,
                        help="simulated processes holding them")
    parser.add_argument("--observers", type=int, default=1, help="measured server processes")
    parser.add_argument("--room-size", type=int, default=10, help="sessions per room")
    parser.add_argument("--open-rate", type=float, default=0,
                        help="sessions opened per second (default: as fast as the feeder can)")
    parser.add_argument("--events", type=int, default=0,
                        help="events per join/presence/leave phase (default: --sessions)")
    parser.add_argument("--rejoins", type=int, default=3, help="rejoin trials")
    parser.add_argument("--rejoin-timeout", type=float, default=120.0,
                        help="seconds a rejoin may take before it counts as failed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--server-path", metavar="DIR",
                        help="put DIR first on the servers' PYTHONPATH")
    args = parser.parse_args()
    sessions, events = args.sessions, args.events or args.sessions
    info = machine()
    print(f"machine: {info['nproc']} CPUs, {info['cpu']}, load average "
          f"{' '.join(f'{x:.2f}' for x in info['loadavg'])}")
    results: dict[str, Any] = {"sessions": sessions, "feed_processes": args.feed_processes,
                               "room_size": args.room_size}
    with ExitStack() as stack:
        redis = Redis()
        stack.callback(redis.stop)
        observers = [observer(stack, redis, args.server_path) for _ in range(args.observers)]
        feed = Feed(redis.url, args.feed_processes, args.room_size, args.server_path)
        stack.callback(feed.stop)
        nodes = args.observers + args.feed_processes
        wait_for(lambda: all(cluster_metric(s.port, "symple_bus_nodes") == nodes
                             for s in observers), 60, "the processes to meet")
        time.sleep(1)  # let start-up settle before the baseline
        base_rss = [rss_bytes(s.pid) for s in observers]
        phases = [phase(feed, redis, observers, "open", sessions, args.open_rate)]
        mirrored = [remote(s) for s in observers]
        for op in ("join", "presence", "leave"):
            phases.append(phase(feed, redis, observers, op, events))
        results["sync_bytes"] = feed.ask(op="sync_size")["sync_size"]
        # rejoin: a new process meets a cluster of ``sessions`` sessions
        results["rejoins"] = [rejoin(stack, redis, feed, sessions, args.rejoin_timeout,
                                     args.server_path) for _ in range(args.rejoins)]
        phases.append(phase(feed, redis, observers, "close", sessions))
        results["phases"] = phases
        # a process that lost its subscription (Redis's output-buffer limit) re-syncs
        results["observer_reconnects"] = [
            cluster_metric(s.port, "symple_bus_reconnects_total") for s in observers]
        results["mirrored"] = mirrored
        results["rss_per_session"] = [
            (p["rss_delta"]) / sessions for p in phases[0]["observers"]]
        results["base_rss"] = base_rss
    print(f"\n{sessions:,} sessions on {args.feed_processes} simulated process(es), rooms "
          f"of {args.room_size}; {args.observers} measured process(es)\n")
    print("| event | count | CPU µs per applied event | control msgs/s received "
          "| observer CPU share | Redis CPU µs per delivered message |\n|---|---|---|---|---|---|")
    for p in phases:
        o = p["observers"]
        print(f"| {p['op']} | {p['count']:,} | "
              + " / ".join(f"{x['cpu_us_per_event']:.1f}" for x in o) + " | "
              + " / ".join(f"{x['control_per_s']:,.0f}" for x in o) + " | "
              + " / ".join(f"{x['cpu_share']:.0%}" for x in o)
              + f" | {p['redis_us_per_delivery']:.2f} |")
    print("\nmemory per mirrored session (RSS growth during open): "
          + " / ".join(f"{b / 1024:.2f} KiB" for b in results["rss_per_session"]))
    print("control messages received per phase: " + "; ".join(
        f"{p['op']} " + " / ".join(f"{x['received']:,.0f}" for x in p["observers"])
        for p in phases))
    print(f"mirrored sessions after open: {mirrored}; bus reconnects of the measured "
          f"processes: {results['observer_reconnects']}")
    whole = [w for w, _ in results["sync_bytes"]]
    print("state per simulated process: "
          + ", ".join(f"{w / 1e6:.1f} MB" for w in whole)
          + f" ({sum(whole) / sessions:.0f} bytes per session); largest message: "
          + ", ".join(f"{p / 1e6:.2f} MB" for _, p in results["sync_bytes"]))
    for r in results["rejoins"]:
        if not r["completed"]:
            print(f"rejoin of {sessions:,} sessions: NOT complete after {r['timeout_s']:.0f} s "
                  f"({r['mirrored']:,.0f} mirrored, {r['reconnects']:.0f} bus reconnects, "
                  f"its CPU {r['cpu_s']:.1f} s, the simulated processes' "
                  f"{r['feed_cpu_s']:.1f} s)")
            continue
        print(f"rejoin of {sessions:,} sessions: {r['mirrored']:,.0f} mirrored, "
              f"{r['received']:,.0f} control messages read; "
              f"{r['from_start_s']:.2f} s from process start, "
              f"{r['from_bus_up_s']:.2f} s from reaching Redis; its CPU {r['cpu_s']:.2f} s, "
              f"RSS {r['rss'] / 1e6:.0f} MB; the simulated processes' CPU meanwhile "
              f"{r['feed_cpu_s']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
