"""Single-process benchmark of symple_tx, side by side with the Node.js reference server.

    python bench/run.py                                  # symple_tx alone, every scenario
    python bench/run.py --node ../symple-server          # and symple-server 4.0.0, interleaved
    python bench/run.py --quick --only echo,call         # smaller, one pass
    python bench/run.py --baseline ../old-checkout       # this tree against another symple_tx
    python bench/run.py --only fanout --profile out/     # py-spy profile of the server

Scenarios (each starts a fresh server on 127.0.0.1 and drives it from
separate load-generator processes, bench/wsload.py):

* ``connect``: 2,000 clients (200 in flight) connect, upgrade, auth and wait
  for ``welcome``, against ``twistd symple --port N`` with every default;
  connections/s and RSS per idle authenticated connection.
* ``fanout``: 500 receivers in one room, 2,000 messages to the room; server
  CPU per delivered frame.
* ``echo``: 50 requester/responder pairs, direct ``user|id`` messages at
  2,000 requests/s in total, each answered by its responder; RTT and server
  CPU per message (requests + replies), lost requests.
* ``call``: 50 caller/callee pairs placing WebRTC calls back to back (the
  demo's signalling: init, accept, 4 KB offer, answer, 12 candidates each
  way, hangup); call set-ups/s, p99 set-up time, server CPU per call.

Runs of the servers alternate (symple_tx, Node, symple_tx, Node, ...), so a
change in the machine's load affects both; the table gives the median of the
runs and, per figure, the ratio symple_tx / Node.  Each server's CPU time and
RSS come from /proc; the load generator's CPU is reported with it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson  # noqa: E402

import floor  # noqa: E402
import wsload  # noqa: E402
from serverproc import (HOST, UNLIMITED, ServerProcess, cpu_seconds,  # noqa: E402
                        die_with_parent, echo_command, floor_command, free_port, machine,
                        node_command, symple_port_command)

CTX = multiprocessing.get_context("fork")


@dataclass
class Sizes:
    connections: int = 2000
    connect_procs: int = 2
    concurrency: int = 200
    receivers: int = 500
    receiver_procs: int = 2
    messages: int = 2000
    window: int = 16
    pairs: int = 50
    rtt_rate: float = 2000.0
    rtt_seconds: float = 10.0
    rtt_warmup: float = 1.0
    call_pairs: int = 50
    call_procs: int = 2
    call_seconds: float = 10.0
    call_warmup: float = 1.0
    repeat: int = 3


QUICK = Sizes(connections=500, messages=500, rtt_seconds=3.0, rtt_warmup=0.5,
              call_seconds=3.0, call_warmup=0.5, repeat=1)


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


# -- servers -----------------------------------------------------------------------


@dataclass
class Kind:
    """A server to measure: its column in the table and how to start it."""

    name: str
    label: str
    #: symple_tx from this directory (first on PYTHONPATH); None: the installed one.
    path: Optional[str] = None
    #: The Node.js reference server's checkout.
    node: Optional[str] = None
    echo: bool = False  # the bare Autobahn server
    #: A mode of bench/floor.py (the thinnest server for the echo scenario).
    floor: Optional[str] = None

    @property
    def python(self) -> bool:
        return self.node is None

    def server(self, scenario: str) -> ServerProcess:
        port = free_port()
        if self.echo:
            return ServerProcess(echo_command(port, broadcast=scenario == "fanout"), port)
        if self.floor is not None:
            return ServerProcess(floor_command(port, self.floor), port)
        if self.node is not None:
            return ServerProcess(node_command(self.node), port, env={"PORT": str(port)},
                                 cwd=self.node)
        # connect: every default of `twistd symple --port N`; the others send
        # faster than the default rate limit allows.
        extra = () if scenario == "connect" else known_options(UNLIMITED, self.path)
        return ServerProcess(symple_port_command(port, *extra), port, self.path)


_HELP: dict[Optional[str], str] = {}


def known_options(options: tuple[str, ...], path: Optional[str]) -> tuple[str, ...]:
    """``options`` (flag, value pairs) less the flags an older symple_tx does not have."""
    if path not in _HELP:
        env = dict(os.environ)
        if path:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH")) if p)
        command = symple_port_command(0, "--help")
        _HELP[path] = subprocess.run(command, env=env, capture_output=True, text=True,
                                     cwd=tempfile.gettempdir(), timeout=60).stdout
    pairs = zip(options[0::2], options[1::2])
    return tuple(x for flag, value in pairs if f"{flag}=" in _HELP[path] or
                 f"{flag} " in _HELP[path] for x in (flag, value))


# -- scenarios -------------------------------------------------------------------


class Measure:
    """Server CPU, load-generator CPU and wall time over one phase; py-spy if asked."""

    def __init__(self, server: ServerProcess, workers: Workers, kind: Kind,
                 profile: Optional[Path], name: str) -> None:
        self.server, self.workers = server, workers
        self.profiler = Profiler(profile if kind.python else None, f"{name}-{kind.name}")

    def __enter__(self) -> "Measure":
        self.profiler.start(self.server.pid)
        self.user, self.system = self.server.cpu_times()
        self.cpu = self.user + self.system
        self.load = self.workers.cpu_seconds()
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.monotonic() - self.started
        user, system = self.server.cpu_times()
        self.user, self.system = user - self.user, system - self.system
        self.cpu = user + system - self.cpu
        self.load = self.workers.cpu_seconds() - self.load
        self.profiler.stop()


def bench_connect(kind: Kind, sizes: Sizes, profile: Optional[Path]) -> dict:
    """Connections/s (connect + upgrade + auth + welcome) and RSS per idle connection."""
    n, procs = sizes.connections, sizes.connect_procs
    with kind.server("connect") as server, Workers() as workers:
        warm = workers.spawn(wsload.connect_worker, HOST, server.port, 900000, 50, 16, 30.0,
                             kind.echo)
        ask([warm], ("connect",), 40)
        ask([warm], ("close",), 10)
        pipes = [workers.spawn(wsload.connect_worker, HOST, server.port, first, count,
                               max(1, sizes.concurrency // procs), 60.0, kind.echo)
                 for first, count in split(n, procs)]
        server.wait_idle()
        warm.send(("quit",))
        rss_before = server.rss_kb()
        with Measure(server, workers, kind, profile, "connect") as m:
            results = ask(pipes, ("connect",), 90)
        elapsed = max(r["end"] for r in results) - min(r["start"] for r in results)
        server.wait_idle()
        rss_after = server.rss_kb()
        ask(pipes, ("close",), 30)
    return {"connect_rate": n / elapsed, "rss_per_conn_kb": (rss_after - rss_before) / n,
            "connect_cpu_ms": 1000 * m.cpu / n, "connect_util": m.cpu / elapsed,
            "connect_load_util": m.load / elapsed}


def bench_fanout(kind: Kind, sizes: Sizes, profile: Optional[Path]) -> dict:
    """One sender, ``receivers`` peers in one room: delivered frames/s and CPU per frame."""
    room = "fan"
    with kind.server("fanout") as server, Workers() as workers:
        receivers = [workers.spawn(wsload.fanout_receiver_worker, HOST, server.port,
                                   first, count, room, 120.0, kind.echo)
                     for first, count in split(sizes.receivers - 1, sizes.receiver_procs)]
        ask(receivers, ("connect",), 130)
        sender = workers.spawn(wsload.fanout_sender_worker, HOST, server.port, room,
                               sizes.window, 120.0, kind.echo)
        size = ask([sender], ("connect",), 130)[0]["frame_size"]
        server.wait_idle()
        ask(receivers + [sender], ("reset",), 130)
        with Measure(server, workers, kind, profile, "fanout") as m:
            for pipe in receivers:
                pipe.send(("receive", sizes.messages * size))
            sent = ask([sender], ("send", sizes.messages), 130)[0]
            got = answers(receivers, "receive", 130)
    frames = sizes.messages * sizes.receivers
    elapsed = max([sent["end"]] + [r["end"] for r in got]) - sent["start"]
    return {"fanout_fps": frames / elapsed, "fanout_cpu_per_100k": m.cpu * 100000 / frames,
            "fanout_util": m.cpu / elapsed, "fanout_load_util": m.load / elapsed}


def bench_echo(kind: Kind, sizes: Sizes, profile: Optional[Path]) -> dict:
    """``pairs`` request/response pairs, direct messages, open loop at ``rtt_rate``/s."""
    with kind.server("echo") as server, Workers() as workers:
        pipe = workers.spawn(wsload.pairs_worker, HOST, server.port, 0, sizes.pairs, 30.0,
                             kind.echo)
        ask([pipe], ("connect",), 60)
        server.wait_idle()
        with Measure(server, workers, kind, profile, "echo") as m:
            r = ask([pipe], ("run", sizes.rtt_rate, sizes.rtt_seconds, sizes.rtt_warmup),
                    sizes.rtt_seconds + sizes.rtt_warmup + 60)[0]
    messages = 2 * r["sent"]  # each request and its answer
    return {"echo_p50_ms": 1000 * r["p50"], "echo_p99_ms": 1000 * r["p99"],
            "echo_p999_ms": 1000 * r["p999"], "echo_rate": r["rate"], "echo_lost": r["lost"],
            "echo_cpu_per_100k": 100000 * m.cpu / messages,
            "echo_user_per_100k": 100000 * m.user / messages,
            "echo_sys_per_100k": 100000 * m.system / messages, "echo_util": m.cpu / m.elapsed,
            "echo_load_util": m.load / m.elapsed}


def bench_call(kind: Kind, sizes: Sizes, profile: Optional[Path]) -> dict:
    """Caller/callee pairs placing calls back to back: set-ups/s, p99 set-up time, CPU/call."""
    with kind.server("call") as server, Workers() as workers:
        pipes = [workers.spawn(wsload.call_worker, HOST, server.port, first, count, 30.0)
                 for first, count in split(sizes.call_pairs, sizes.call_procs)]
        ask(pipes, ("connect",), 60)
        server.wait_idle()
        with Measure(server, workers, kind, profile, "call") as m:
            results = ask(pipes, ("run", sizes.call_seconds, sizes.call_warmup),
                          sizes.call_seconds + sizes.call_warmup + 60)
    setups = sorted(s for r in results for s in r["setups"])
    calls = sum(r["calls"] for r in results)
    all_calls = sum(r["all_calls"] for r in results)
    return {"call_rate": calls / sizes.call_seconds,
            "call_p50_ms": 1000 * wsload.percentile(setups, 0.50),
            "call_p99_ms": 1000 * wsload.percentile(setups, 0.99),
            "call_cpu_ms": 1000 * m.cpu / max(all_calls, 1), "call_util": m.cpu / m.elapsed,
            "call_load_util": m.load / m.elapsed}


SCENARIOS = {"connect": bench_connect, "fanout": bench_fanout, "echo": bench_echo,
             "call": bench_call}


# -- report ------------------------------------------------------------------------

#: (label, key, format, which way is better: +1 higher, -1 lower, 0 neither).
ROWS = [
    ("connections/s (connect+upgrade+auth+welcome)", "connect_rate", "{:,.0f}", +1),
    ("RSS per idle authed connection (KB)", "rss_per_conn_kb", "{:.1f}", -1),
    ("server CPU per connection (ms)", "connect_cpu_ms", "{:.3f}", -1),
    ("server CPU busy during connect", "connect_util", "{:.0%}", 0),
    ("load generator CPU during connect", "connect_load_util", "{:.0%}", 0),
    ("fan-out delivered frames/s", "fanout_fps", "{:,.0f}", +1),
    ("fan-out server CPU-s per 100k frames", "fanout_cpu_per_100k", "{:.3f}", -1),
    ("server CPU busy during fan-out", "fanout_util", "{:.0%}", 0),
    ("load generator CPU during fan-out", "fanout_load_util", "{:.0%}", 0),
    ("echo server CPU-s per 100k messages", "echo_cpu_per_100k", "{:.2f}", -1),
    ("  of which user (Python, JavaScript, libraries)", "echo_user_per_100k", "{:.2f}", -1),
    ("  of which system (kernel: system calls, loopback TCP)", "echo_sys_per_100k", "{:.2f}", -1),
    ("echo RTT p50 (ms)", "echo_p50_ms", "{:.3f}", -1),
    ("echo RTT p99 (ms)", "echo_p99_ms", "{:.3f}", -1),
    ("echo RTT p99.9 (ms)", "echo_p999_ms", "{:.3f}", -1),
    ("echo requests/s achieved", "echo_rate", "{:,.0f}", 0),
    ("echo requests lost", "echo_lost", "{:.0f}", -1),
    ("server CPU busy during echo", "echo_util", "{:.0%}", 0),
    ("load generator CPU during echo", "echo_load_util", "{:.0%}", 0),
    ("call set-ups/s", "call_rate", "{:,.0f}", +1),
    ("call set-up time p50 (ms)", "call_p50_ms", "{:.1f}", -1),
    ("call set-up time p99 (ms)", "call_p99_ms", "{:.1f}", -1),
    ("server CPU per call (ms)", "call_cpu_ms", "{:.3f}", -1),
    ("server CPU busy during calls", "call_util", "{:.0%}", 0),
    ("load generator CPU during calls", "call_load_util", "{:.0%}", 0),
]

#: Targets: ("abs", op, limit) on symple_tx's figure, ("ratio", op, limit) on symple_tx / Node.
TARGETS = {
    "connect_rate": ("ratio", ">=", 1.0),
    "rss_per_conn_kb": ("abs", "<=", 9.0),
    "fanout_cpu_per_100k": ("ratio", "<=", 0.25),
    "echo_cpu_per_100k": ("ratio", "<=", 1.0),
    "echo_p99_ms": ("ratio", "<=", 1.0),
    "echo_lost": ("abs", "<=", 0),
}


def median(values: list[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def verdict(key: str, value: Optional[float], ratio: Optional[float]) -> tuple[str, str]:
    if key not in TARGETS:
        return "", ""
    how, op, limit = TARGETS[key]
    label = f"{'x Node ' if how == 'ratio' else ''}{op} {limit:g}"
    measured = ratio if how == "ratio" else value
    if measured is None:
        return label, ""
    ok = measured >= limit if op == ">=" else measured <= limit
    return label, "ok" if ok else "MISSED"


def table(kinds: list[Kind], runs: dict[str, dict[str, list[float]]]) -> str:
    node = next((k.name for k in kinds if k.node is not None), None)
    heads = ["metric"] + [k.label for k in kinds]
    if node:
        heads += ["symple_tx / Node (runs)"]
    heads += ["target", "verdict"]
    rows = []
    for label, key, fmt, _ in ROWS:
        values = {k.name: median(runs[k.name].get(key, [])) for k in kinds}
        if all(v is None for v in values.values()):
            continue
        row = [label] + [fmt.format(values[k.name]) if values[k.name] is not None else "-"
                         for k in kinds]
        ratio = None
        if node:
            mine, theirs = runs["symple"].get(key, []), runs[node].get(key, [])
            if values["symple"] is not None and values[node]:
                ratio = values["symple"] / values[node]
                each = [a / b for a, b in zip(mine, theirs) if b]
                spread = f" ({min(each):.2f}-{max(each):.2f})" if len(each) > 1 else ""
                row.append(f"{ratio:.2f}{spread}")
            else:
                row.append("-")
        row += list(verdict(key, values.get("symple"), ratio))
        rows.append(row)
    widths = [max(len(str(r[i])) for r in rows + [heads]) for i in range(len(heads))]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(heads, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")
    return "\n".join(out)


#: Figures compared with Node's for every server, not only symple_tx's.
VERSUS = [("echo CPU per message", "echo_cpu_per_100k"), ("user CPU", "echo_user_per_100k"),
          ("system CPU", "echo_sys_per_100k"), ("echo RTT p50", "echo_p50_ms"),
          ("echo RTT p99", "echo_p99_ms")]


def versus_node(kinds: list[Kind], runs: dict[str, dict[str, list[float]]]) -> str:
    """Each server's median / Node's median, with the range of the per-round ratios."""
    node = next((k.name for k in kinds if k.node is not None), None)
    others = [k for k in kinds if k.name != node]
    keys = [(label, key) for label, key in VERSUS if runs.get(node, {}).get(key)]
    if node is None or len(others) < 2 or not keys:
        return ""
    out = ["", "| server / Node (runs) | " + " | ".join(label for label, _ in keys) + " |",
           "|---|" + "---|" * len(keys)]
    for kind in others:
        cells = []
        for _, key in keys:
            mine, theirs = runs[kind.name].get(key, []), runs[node][key]
            if not mine:
                cells.append("-")
                continue
            each = [a / b for a, b in zip(mine, theirs) if b]
            spread = f" ({min(each):.2f}-{max(each):.2f})" if len(each) > 1 else ""
            cells.append(f"{statistics.median(mine) / statistics.median(theirs):.2f}{spread}")
        out.append(f"| {kind.label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def kinds_from(args: argparse.Namespace) -> list[Kind]:
    kinds = [Kind("symple", "symple_tx", path=args.server_path)]
    if args.baseline:
        kinds.append(Kind("baseline", "baseline symple_tx", path=args.baseline))
    if args.node:
        if not (Path(args.node) / "server.js").exists():
            raise SystemExit(f"--node {args.node}: no server.js there (a symple-server checkout "
                             "with `npm install` done)")
        kinds.append(Kind("node", "Node symple-server", node=args.node))
    if args.echo:
        kinds.append(Kind("echo", "bare Autobahn", echo=True))
    for mode in filter(None, (args.floor or "").split(",")):
        if mode not in floor.MODES:
            raise SystemExit(f"--floor {mode}: not one of {', '.join(floor.MODES)}")
        kinds.append(Kind(f"floor-{mode}", f"floor {mode}", floor=mode))
    return kinds


def main() -> int:
    parser = argparse.ArgumentParser(description="symple_tx single-process benchmark")
    parser.add_argument("--quick", action="store_true", help="small sizes, one pass")
    parser.add_argument("--repeat", type=int, help="runs per figure and server (median shown)")
    parser.add_argument("--only", default="connect,fanout,echo,call",
                        help="comma-separated scenarios: connect, fanout, echo, call")
    parser.add_argument("--node", metavar="DIR",
                        help="also measure the Node.js symple-server checked out in DIR")
    parser.add_argument("--baseline", metavar="DIR",
                        help="also measure the symple_tx package found in DIR (put first on "
                             "PYTHONPATH), e.g. an older checkout")
    parser.add_argument("--echo", action="store_true",
                        help="also measure a bare Autobahn server (bench/baseline_echo.py); "
                             "not for the call scenario")
    parser.add_argument("--floor", metavar="MODES",
                        help="also measure the thinnest echo servers of bench/floor.py "
                             f"(comma-separated: {', '.join(floor.MODES)}); echo only")
    parser.add_argument("--window", type=int, help="fan-out messages in flight")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="record the Python servers with py-spy during each first run")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument("--server-path", metavar="DIR",
                        help="put DIR first on symple_tx's PYTHONPATH (to measure a patched copy)")
    args = parser.parse_args()
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
          + f", Autobahn NVX {'on' if info['autobahn_nvx'] else 'off'}, Node {info['node']}")
    scenarios = [s for s in args.only.split(",") if s]
    kinds = kinds_from(args)
    runs: dict[str, dict[str, list[float]]] = {k.name: {} for k in kinds}
    started = time.monotonic()
    for scenario in scenarios:
        for i in range(sizes.repeat):
            # Alternate the order too, so neither server always runs on a warmer machine.
            for kind in (kinds if i % 2 == 0 else kinds[::-1]):
                if (kind.echo and scenario == "call") or (kind.floor and scenario != "echo"):
                    continue
                r = SCENARIOS[scenario](kind, sizes, args.profile if i == 0 else None)
                for key, value in r.items():
                    runs[kind.name].setdefault(key, []).append(value)
                shown = ", ".join(f"{key} {value:.3g}" for key, value in r.items()
                                  if not key.endswith("util"))
                print(f"  {scenario:7s} {kind.name:8s} run {i + 1}: {shown}", flush=True)
    print(f"\nmedian of {sizes.repeat} run(s) each, interleaved; "
          f"{time.monotonic() - started:.0f} s; "
          f"load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print(table(kinds, runs))
    print(versus_node(kinds, runs))
    if args.json:
        args.json.write_bytes(orjson.dumps({"machine": info, "sizes": sizes.__dict__,
                                            "runs": runs}, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
