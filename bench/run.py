"""Single-process benchmark of symple_tx, compared with a bare Autobahn server.

    python bench/run.py            # full run, best of 3
    python bench/run.py --quick    # smaller, one pass
    python bench/run.py --only fanout --profile out/

Each measurement starts a fresh server process on 127.0.0.1, drives it from
separate load-generator processes (bench/wsload.py) and reads the server's
CPU time and RSS from /proc.  Everything is stopped at the end, also on errors.

Run from a checkout after ``pip install -e .[bench]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson  # noqa: E402

import wsload  # noqa: E402
from serverproc import (HOST, ServerProcess, cpu_seconds, die_with_parent,  # noqa: E402
                        echo_command, free_port, machine, symple_command)

CTX = multiprocessing.get_context("fork")


@dataclass
class Sizes:
    connections: int = 2000
    connect_procs: int = 2
    concurrency: int = 64
    receivers: int = 500
    receiver_procs: int = 2
    messages: int = 1000
    window: int = 16
    rtt_rate: float = 2000.0
    rtt_seconds: float = 10.0
    rtt_warmup: float = 1.0
    repeat: int = 3


QUICK = Sizes(connections=500, messages=300, rtt_seconds=3.0, rtt_warmup=0.5, repeat=1)

TARGETS = {
    "connect_rate": (">=", 2000.0),
    "rss_per_conn_kb": ("<=", 12.0),
    "fanout_cpu_per_100k": ("<=", 0.35),
    "rtt_p99_ms": ("<=", 1.0),
}


# -- load-generator processes --------------------------------------------------


class Workers:
    """Load-generator processes, each driven over a pipe; always terminated."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, Any]] = []

    def spawn(self, target: Callable[..., None], *args: Any) -> Any:
        parent, child = CTX.Pipe()
        proc = CTX.Process(target=_worker, args=(target, parent, child, *args), daemon=True)
        proc.start()
        child.close()
        self.items.append((proc, parent))
        return parent

    def cpu_seconds(self) -> float:
        """CPU time used so far by the live load-generator processes."""
        total = 0.0
        for proc, _ in self.items:
            try:
                total += cpu_seconds(proc.pid)
            except OSError:
                pass
        return total

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc: object) -> None:
        for proc, pipe in self.items:
            try:
                pipe.send(("quit",))
            except (OSError, BrokenPipeError):
                pass
        for proc, _ in self.items:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()


def _worker(target: Callable[..., None], parent: Any, child: Any, *args: Any) -> None:
    """A load-generator process: it ends with the controller, however that ends."""
    die_with_parent()
    parent.close()
    target(child, *args)


def ask(pipes: list[Any], command: tuple, timeout: float) -> list[dict]:
    """Send one command to every worker, then collect every answer."""
    for pipe in pipes:
        pipe.send(command)
    return answers(pipes, command[0], timeout)


def answers(pipes: list[Any], step: str, timeout: float) -> list[dict]:
    """Collect one answer from every worker; a worker's error fails the run."""
    results = []
    deadline = time.monotonic() + timeout
    for pipe in pipes:
        if not pipe.poll(max(0.0, deadline - time.monotonic())):
            raise RuntimeError(f"load generator gave no answer to {step!r} in {timeout}s")
        result = pipe.recv()
        if "error" in result:
            raise RuntimeError(f"load generator failed at {step!r}: {result['error']}")
        results.append(result)
    return results


def split(total: int, parts: int) -> list[tuple[int, int]]:
    """(first, count) slices of ``range(total)`` for ``parts`` workers."""
    base, extra = divmod(total, parts)
    slices, first = [], 0
    for i in range(parts):
        count = base + (1 if i < extra else 0)
        slices.append((first, count))
        first += count
    return slices


# -- profiling -------------------------------------------------------------------


class Profiler:
    """``py-spy record`` attached to the server while a measurement runs."""

    def __init__(self, directory: Optional[Path], name: str) -> None:
        self.directory = directory
        self.name = name
        self.proc: Optional[subprocess.Popen] = None

    def start(self, pid: int) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        py_spy = Path(sys.executable).with_name("py-spy")
        self.output = self.directory / f"{self.name}.txt"
        self.proc = subprocess.Popen(
            [str(py_spy) if py_spy.exists() else "py-spy", "record", "--pid", str(pid),
             "--rate", "500", "--format", "raw", "--output", str(self.output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # let it attach

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        print(f"\nprofile of the server during {self.name} ({self.output}):")
        print(summarize_profile(self.output))


def _function(frame: str) -> str:
    """``name (path/to/file.py:123)`` -> ``name (file.py)``: samples add up per function."""
    name, _, where = frame.partition(" (")
    if not where:
        return frame
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0].rstrip(')')})"


def summarize_profile(path: Path, top: int = 15) -> str:
    """Top functions of a py-spy raw profile, by own samples and by inclusive samples."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_function(f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
    if not total:
        return "  (no samples)"
    lines = [f"  {total} samples; own time:"]
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * n / total:5.1f}%  {name}")
    lines.append("  inclusive time (below the reactor loop):")
    ranked = [(name, n) for name, n in sorted(inclusive.items(), key=lambda kv: -kv[1])
              if n < 0.9 * total]
    for name, n in ranked[:top]:
        lines.append(f"  {100 * n / total:5.1f}%  {name}")
    return "\n".join(lines)


# -- scenarios -------------------------------------------------------------------


#: A directory put first on the server's PYTHONPATH (``--server-path``).
SERVER_PATH: Optional[str] = None


def server_for(kind: str, scenario: str) -> ServerProcess:
    port = free_port()
    if kind == "echo":
        return ServerProcess(echo_command(port, broadcast=scenario == "fanout"), port)
    extra = () if scenario == "connect" else ("--ping-interval", "0")
    return ServerProcess(symple_command(port, *extra), port, SERVER_PATH)


def bench_connect(kind: str, sizes: Sizes, profile: Optional[Path]) -> dict:
    """Connections/s (connect + upgrade + auth + welcome) and RSS per idle connection."""
    echo = kind == "echo"
    n, procs = sizes.connections, sizes.connect_procs
    with server_for(kind, "connect") as server, Workers() as workers:
        warm = workers.spawn(wsload.connect_worker, HOST, server.port, 900000, 50, 16, 30.0, echo)
        ask([warm], ("connect",), 40)
        ask([warm], ("close",), 10)
        pipes = [workers.spawn(wsload.connect_worker, HOST, server.port, first, count,
                               max(1, sizes.concurrency // procs), 60.0, echo)
                 for first, count in split(n, procs)]
        server.wait_idle()
        warm.send(("quit",))
        profiler = Profiler(profile, f"connect-{kind}")
        profiler.start(server.pid)
        rss_before, cpu_before = server.rss_kb(), server.cpu_seconds()
        load_before = workers.cpu_seconds()
        try:
            results = ask(pipes, ("connect",), 90)
        finally:
            cpu = server.cpu_seconds() - cpu_before
            load = workers.cpu_seconds() - load_before
            profiler.stop()
        elapsed = max(r["end"] for r in results) - min(r["start"] for r in results)
        server.wait_idle()
        rss_after = server.rss_kb()
        ask(pipes, ("close",), 30)
    return {"connect_rate": n / elapsed, "rss_per_conn_kb": (rss_after - rss_before) / n,
            "connect_cpu_ms": 1000 * cpu / n, "connect_util": cpu / elapsed,
            "connect_load_util": load / elapsed,
            "rss_before_mb": rss_before / 1024, "rss_after_mb": rss_after / 1024}


def bench_fanout(kind: str, sizes: Sizes, profile: Optional[Path]) -> dict:
    """One sender, ``receivers`` peers in one room: delivered frames/s and CPU per frame."""
    echo = kind == "echo"
    room = "fan"
    with server_for(kind, "fanout") as server, Workers() as workers:
        receivers = [workers.spawn(wsload.fanout_receiver_worker, HOST, server.port,
                                   first, count, room, 120.0, echo)
                     for first, count in split(sizes.receivers - 1, sizes.receiver_procs)]
        ask(receivers, ("connect",), 130)
        sender = workers.spawn(wsload.fanout_sender_worker, HOST, server.port, room,
                               sizes.window, 120.0, echo)
        size = ask([sender], ("connect",), 130)[0]["frame_size"]
        server.wait_idle()
        ask(receivers + [sender], ("reset",), 130)
        profiler = Profiler(profile, f"fanout-{kind}")
        profiler.start(server.pid)
        cpu_before = server.cpu_seconds()
        load_before = workers.cpu_seconds()
        try:
            for pipe in receivers:
                pipe.send(("receive", sizes.messages * size))
            sent = ask([sender], ("send", sizes.messages), 130)[0]
            got = answers(receivers, "receive", 130)
        finally:
            cpu = server.cpu_seconds() - cpu_before
            load = workers.cpu_seconds() - load_before
            profiler.stop()
    frames = sizes.messages * sizes.receivers
    elapsed = max([sent["end"]] + [r["end"] for r in got]) - sent["start"]
    return {"fanout_fps": frames / elapsed, "fanout_cpu_per_100k": cpu * 100000 / frames,
            "fanout_util": cpu / elapsed, "fanout_load_util": load / elapsed,
            "fanout_frame_bytes": size}


def bench_rtt(kind: str, sizes: Sizes, profile: Optional[Path]) -> dict:
    """Open-loop request/response between two peers (echo: the server answers)."""
    echo = kind == "echo"
    with server_for(kind, "rtt") as server, Workers() as workers:
        pipe = workers.spawn(wsload.rtt_worker, HOST, server.port, 30.0, echo)
        ask([pipe], ("connect",), 40)
        profiler = Profiler(profile, f"rtt-{kind}")
        profiler.start(server.pid)
        cpu_before = server.cpu_seconds()
        load_before = workers.cpu_seconds()
        try:
            r = ask([pipe], ("run", sizes.rtt_rate, sizes.rtt_seconds, sizes.rtt_warmup),
                    sizes.rtt_seconds + sizes.rtt_warmup + 60)[0]
        finally:
            cpu = server.cpu_seconds() - cpu_before
            load = workers.cpu_seconds() - load_before
            profiler.stop()
    seconds = sizes.rtt_seconds + sizes.rtt_warmup
    return {"rtt_p50_ms": 1000 * r["p50"], "rtt_p99_ms": 1000 * r["p99"],
            "rtt_p999_ms": 1000 * r["p999"], "rtt_p99_sched_ms": 1000 * r["p99_scheduled"],
            "rtt_rate": r["rate"], "rtt_count": r["count"], "rtt_util": cpu / seconds,
            "rtt_cpu_us": 1e6 * cpu / (sizes.rtt_rate * seconds),
            "rtt_load_util": load / seconds}


SCENARIOS = {"connect": bench_connect, "fanout": bench_fanout, "rtt": bench_rtt}
#: Which figure decides the best of the repeats (and whether higher is better).
BEST_BY = {"connect": ("connect_rate", True), "fanout": ("fanout_cpu_per_100k", False),
           "rtt": ("rtt_p99_ms", False)}


def best_of(scenario: str, runs: list[dict]) -> dict:
    key, higher = BEST_BY[scenario]
    best = dict((max if higher else min)(runs, key=lambda r: r[key]))
    if scenario == "connect":  # memory is not a race: report the smallest growth
        best["rss_per_conn_kb"] = min(r["rss_per_conn_kb"] for r in runs)
    return best


# -- report ------------------------------------------------------------------------

ROWS = [
    ("connections/s (connect+upgrade+auth+welcome)", "connect_rate", "{:,.0f}"),
    ("RSS per idle authed connection (KB)", "rss_per_conn_kb", "{:.1f}"),
    ("server CPU per connection (ms)", "connect_cpu_ms", "{:.3f}"),
    ("server CPU busy during connect", "connect_util", "{:.0%}"),
    ("load generator CPU (all processes)", "connect_load_util", "{:.0%}"),
    ("fan-out delivered frames/s", "fanout_fps", "{:,.0f}"),
    ("fan-out server CPU-s per 100k frames", "fanout_cpu_per_100k", "{:.3f}"),
    ("server CPU busy during fan-out", "fanout_util", "{:.0%}"),
    ("load generator CPU (all processes)", "fanout_load_util", "{:.0%}"),
    ("RTT p50 (ms)", "rtt_p50_ms", "{:.3f}"),
    ("RTT p99 (ms)", "rtt_p99_ms", "{:.3f}"),
    ("RTT p99.9 (ms)", "rtt_p999_ms", "{:.3f}"),
    ("RTT p99 from scheduled send (ms)", "rtt_p99_sched_ms", "{:.3f}"),
    ("requests/s achieved", "rtt_rate", "{:,.0f}"),
    ("server CPU busy during RTT", "rtt_util", "{:.0%}"),
    ("server CPU per request+response (us)", "rtt_cpu_us", "{:.0f}"),
    ("load generator CPU", "rtt_load_util", "{:.0%}"),
]


def verdict(key: str, value: Optional[float]) -> tuple[str, str]:
    if key not in TARGETS:
        return "", ""
    op, limit = TARGETS[key]
    if value is None:
        return f"{op} {limit:g}", ""
    ok = value >= limit if op == ">=" else value <= limit
    return f"{op} {limit:g}", "ok" if ok else "MISSED"


def table(results: dict[str, dict]) -> str:
    kinds = list(results)
    heads = ["metric"] + [{"symple": "symple_tx", "echo": "bare Autobahn"}[k] for k in kinds]
    heads += ["target", "verdict"]
    rows = []
    for label, key, fmt in ROWS:
        values = [results[k].get(key) for k in kinds]
        if all(v is None for v in values):
            continue
        target, mark = verdict(key, results.get("symple", {}).get(key))
        rows.append([label] + [fmt.format(v) if v is not None else "-" for v in values]
                    + [target, mark])
    widths = [max(len(str(r[i])) for r in rows + [heads]) for i in range(len(heads))]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(heads, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")
    return "\n".join(out)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> int:
    parser = argparse.ArgumentParser(description="symple_tx single-process benchmark")
    parser.add_argument("--quick", action="store_true", help="small sizes, one pass")
    parser.add_argument("--repeat", type=int, help="runs per figure (best is reported)")
    parser.add_argument("--only", default="connect,fanout,rtt",
                        help="comma-separated scenarios: connect, fanout, rtt")
    parser.add_argument("--servers", default="symple,echo",
                        help="comma-separated: symple (symple_tx), echo (bare Autobahn)")
    parser.add_argument("--window", type=int, help="fan-out messages in flight")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="record the server with py-spy during each measurement")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--server-path", metavar="DIR",
                        help="put DIR first on the server's PYTHONPATH (to measure a patched copy)")
    args = parser.parse_args()
    global SERVER_PATH
    SERVER_PATH = args.server_path
    sizes = QUICK if args.quick else Sizes()
    if args.repeat:
        sizes.repeat = args.repeat
    if args.window:
        sizes.window = args.window
    raise_fd_limit()
    # SIGTERM unwinds like Ctrl-C, so servers and load generators are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    info = machine()
    print(f"machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}, "
          f"load average {' '.join(f'{x:.2f}' for x in info['loadavg'])}")
    print("software: Python " + info["python"] + ", "
          + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
          + f", Autobahn NVX {'on' if info['autobahn_nvx'] else 'off'}")
    scenarios = [s for s in args.only.split(",") if s]
    kinds = [k for k in args.servers.split(",") if k]
    results: dict[str, dict] = {k: {} for k in kinds}
    runs: dict[str, dict[str, list]] = {k: {} for k in kinds}
    started = time.monotonic()
    for scenario in scenarios:
        for kind in kinds:
            for i in range(sizes.repeat):
                profile = args.profile if i == 0 else None
                r = SCENARIOS[scenario](kind, sizes, profile)
                runs[kind].setdefault(scenario, []).append(r)
                key = BEST_BY[scenario][0]
                print(f"  {scenario:8s} {kind:7s} run {i + 1}: {key} = {r[key]:.3f}", flush=True)
            results[kind].update(best_of(scenario, runs[kind][scenario]))
    print(f"\nbest of {sizes.repeat} run(s) each; {time.monotonic() - started:.0f} s; "
          f"load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print(table(results))
    if args.json:
        args.json.write_bytes(orjson.dumps({"machine": info, "sizes": sizes.__dict__,
                                            "best": results, "runs": runs},
                                           option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
