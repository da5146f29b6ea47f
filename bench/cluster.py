"""Cluster benchmark: two symple_tx processes over a private redis-server.

    python bench/cluster.py            # full run
    python bench/cluster.py --quick    # smaller

Figures:

* fan-out over 2 processes: one sender on process A, the room's receivers
  split evenly over A and B; delivered frames/s and CPU (A + B + Redis) per
  100k delivered frames, next to the same room on one process of the cluster;
* PUBLISH calls per routed frame (from Redis's own command statistics);
* cross-process echo latency: requester on A, responder on B, open loop,
  next to both on A;
* ``--workers 2``: how 1,000 authenticated connections to one port are spread
  over the two worker processes (their open sockets, read from /proc).

The load generators, the server processes and their stopping are those of
bench/run.py; everything runs on 127.0.0.1.

Run from a checkout after ``pip install -e .[bench]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import wsload  # noqa: E402
from run import Sizes, Workers, answers, ask, raise_fd_limit, split  # noqa: E402
from serverproc import HOST, ServerProcess, cpu_seconds, free_port, machine, symple_command  # noqa: E402,E501

QUICK = Sizes(receivers=300, messages=300, rtt_seconds=3.0, rtt_warmup=0.5)


class Redis:
    """A redis-server of our own, so its command statistics are ours alone."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="symple-bench-redis-")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if self.cli("PING").strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def cli(self, *args: str) -> str:
        result = subprocess.run(["redis-cli", "-p", str(self.port), *args],
                                capture_output=True, text=True, timeout=10)
        return result.stdout

    def publishes(self) -> int:
        for line in self.cli("INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_publish:"):
                return int(line.split("calls=")[1].split(",")[0])
        return 0

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def cluster_metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"))


def start_cluster(stack: ExitStack, redis: Redis, count: int,
                  server_path: Optional[str]) -> list[ServerProcess]:
    servers = []
    for _ in range(count):
        port = free_port()
        server = ServerProcess(symple_command(port, "--ping-interval", "0", "--redis", redis.url),
                               port, server_path)
        stack.enter_context(server)
        servers.append(server)
    deadline = time.monotonic() + 30
    while any(cluster_metric(s.port, "symple_bus_nodes") != count for s in servers):
        if time.monotonic() > deadline:
            raise RuntimeError("the processes did not find each other")
        time.sleep(0.1)
    return servers


def fanout(servers: list[ServerProcess], redis: Redis, sizes: Sizes, spread: bool) -> dict:
    """One sender on servers[0]; receivers on all servers (``spread``) or on servers[0]."""
    room = "fan"
    targets = servers if spread else servers[:1]
    with Workers() as workers:
        receivers = []
        slices = split(sizes.receivers - 1, sizes.receiver_procs * len(targets))
        for index, (first, count) in enumerate(slices):
            server = targets[index % len(targets)]
            receivers.append(workers.spawn(wsload.fanout_receiver_worker, HOST, server.port,
                                           first, count, room, 120.0, False))
        ask(receivers, ("connect",), 130)
        sender = workers.spawn(wsload.fanout_sender_worker, HOST, servers[0].port, room,
                               sizes.window, 120.0, False)
        size = ask([sender], ("connect",), 130)[0]["frame_size"]
        for server in servers:
            server.wait_idle()
        ask(receivers + [sender], ("reset",), 130)
        cpu_before = sum(s.cpu_seconds() for s in servers) + redis.cpu_seconds()
        publishes_before = redis.publishes()
        for pipe in receivers:
            pipe.send(("receive", sizes.messages * size))
        sent = ask([sender], ("send", sizes.messages), 130)[0]
        got = answers(receivers, "receive", 130)
        cpu = sum(s.cpu_seconds() for s in servers) + redis.cpu_seconds() - cpu_before
        publishes = redis.publishes() - publishes_before
    frames = sizes.messages * sizes.receivers
    elapsed = max([sent["end"]] + [r["end"] for r in got]) - sent["start"]
    return {"fps": frames / elapsed, "cpu_per_100k": cpu * 100000 / frames,
            "publish_per_frame": publishes / sizes.messages}


def rtt(servers: list[ServerProcess], sizes: Sizes, across: bool) -> dict:
    with Workers() as workers:
        responder = servers[1].port if across else None
        pipe = workers.spawn(wsload.rtt_worker, HOST, servers[0].port, 30.0, False, responder)
        ask([pipe], ("connect",), 40)
        r = ask([pipe], ("run", sizes.rtt_rate, sizes.rtt_seconds, sizes.rtt_warmup),
                sizes.rtt_seconds + sizes.rtt_warmup + 60)[0]
    return {"p50_ms": 1000 * r["p50"], "p99_ms": 1000 * r["p99"], "rate": r["rate"]}


def sockets_of(pid: int) -> int:
    """Open sockets of a process (the listening ones included)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def worker_pids(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found.extend(int(p) for p in f.read().split())
    return found


def workers_spread(redis: Redis, connections: int, server_path: Optional[str]) -> dict:
    """Connections per worker of ``--workers 2`` behind one port."""
    port = free_port()
    command = symple_command(port, "--ping-interval", "0", "--redis", redis.url,
                             "--workers", "2")
    with ServerProcess(command, port, server_path) as supervisor, Workers() as workers:
        deadline = time.monotonic() + 30
        while len(worker_pids(supervisor.pid)) < 2 or \
                cluster_metric(port, "symple_bus_nodes") < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start")
            time.sleep(0.1)
        pids = worker_pids(supervisor.pid)
        before = [sockets_of(pid) for pid in pids]
        pipes = [workers.spawn(wsload.connect_worker, HOST, port, first, count, 16, 60.0, False)
                 for first, count in split(connections, 2)]
        ask(pipes, ("connect",), 90)
        held = [sockets_of(pid) - base for pid, base in zip(pids, before)]
        ask(pipes, ("close",), 30)
    return {"connections": connections, "per_worker": held}


def main() -> int:
    parser = argparse.ArgumentParser(description="symple_tx cluster benchmark")
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--server-path", metavar="DIR",
                        help="put DIR first on the servers' PYTHONPATH")
    args = parser.parse_args()
    sizes = QUICK if args.quick else Sizes(receivers=500, messages=1000)
    raise_fd_limit()
    info = machine()
    print(f"machine: {info['nproc']} CPUs, {info['cpu']}, load average "
          f"{' '.join(f'{x:.2f}' for x in info['loadavg'])}")
    results: dict[str, dict] = {}
    with ExitStack() as stack:
        redis = Redis()
        stack.callback(redis.stop)
        servers = start_cluster(stack, redis, 2, args.server_path)
        results["fanout_one_process"] = fanout(servers, redis, sizes, spread=False)
        results["fanout_two_processes"] = fanout(servers, redis, sizes, spread=True)
        results["rtt_same_process"] = rtt(servers, sizes, across=False)
        results["rtt_across_processes"] = rtt(servers, sizes, across=True)
        results["workers"] = workers_spread(redis, 1000, args.server_path)
    one, two = results["fanout_one_process"], results["fanout_two_processes"]
    same, across = results["rtt_same_process"], results["rtt_across_processes"]
    print(f"\n{sizes.receivers} receivers, {sizes.messages} messages; "
          f"{sizes.rtt_rate:.0f} requests/s for {sizes.rtt_seconds:.0f} s\n")
    rows = [
        ("fan-out delivered frames/s", f"{one['fps']:,.0f}", f"{two['fps']:,.0f}"),
        ("CPU-s per 100k frames (servers + Redis)", f"{one['cpu_per_100k']:.3f}",
         f"{two['cpu_per_100k']:.3f}"),
        ("PUBLISH calls per routed frame", f"{one['publish_per_frame']:.2f}",
         f"{two['publish_per_frame']:.2f}"),
        ("echo RTT p50 (ms)", f"{same['p50_ms']:.3f}", f"{across['p50_ms']:.3f}"),
        ("echo RTT p99 (ms)", f"{same['p99_ms']:.3f}", f"{across['p99_ms']:.3f}"),
    ]
    print("| metric | one process | across two processes |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    spread = results["workers"]
    print(f"\n--workers 2, {spread['connections']} connections to one port: "
          + " / ".join(str(n) for n in spread["per_worker"]) + " per worker")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
