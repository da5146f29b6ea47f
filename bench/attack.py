"""What one hostile client costs the server, and what four do to a bystander.

    python bench/attack.py [--window 2] [--windows 5] [--seconds 5]

Starts ``twistd symple`` with its defaults, except rate budgets lifted for the
bystander's back-to-back round trips (and no keepalive pings), and
``--budget-exempt none``:
each client connects from its own loopback address (127.0.0.2, 127.0.0.3, ...)
and meets the per-address budgets as a remote host would.  Then:

1. runs each attack of ``tests/adversarial/attacks.py`` alone, one client at a
   time, and prints how far the server's RSS rose above its idle figure (peak,
   from /proc/<pid>/status VmHWM after clear_refs) and what the attack got
   through;
2. times a bystander's round trips (a message to itself) in windows that
   alternate between quiet and four attackers running at once (pings never
   read, endless heads, POST bodies, maximum rooms and presence with
   reconnects), and prints p50/p99 of both.

Run from a checkout after ``pip install -e .[bench]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serverproc import HOST, UNLIMITED, ServerProcess, free_port, machine, twistd  # noqa: E402

from tests.adversarial import attacks  # noqa: E402

MIB = 1024 * 1024
#: Seconds an attacker waits before its next connection.
RECONNECT_PAUSE = 0.05


def server_command(port: int) -> list[str]:
    return [*twistd(), "-n", "--pidfile=", "symple",
            "--listen", f"tcp:{port}:interface={HOST}", "--no-demo",
            *UNLIMITED, "--budget-exempt", "none"]


def single_client(server: ServerProcess, seconds: float) -> None:
    port, pid = server.port, server.pid
    probes: list[tuple[str, Callable[[], attacks.Outcome]]] = [
        ("pings unread, before auth",
         lambda: attacks.pings_unread(HOST, port, 1 << 30, seconds)),
        ("pings unread, after auth",
         lambda: attacks.pings_unread(HOST, port, 1 << 30, seconds, authenticate=True)),
        ("endless upgrade head", lambda: attacks.endless_head(HOST, port, 1 << 30, seconds)),
        ("POST with a 150 MB body", lambda: attacks.big_body(HOST, port, 150 << 20, seconds)),
        ("slow reader sent 100 x 60 KB", lambda: attacks.slow_reader(HOST, port)),
    ]
    print("| attack (one client) | bytes the server took | ended by server "
          "| server RSS peak over idle |")
    print("|---|---|---|---|")
    for name, probe in probes:
        server.wait_idle()
        base = attacks.rss_bytes(pid)
        attacks.reset_peak_rss(pid)
        outcome = probe()
        peak = attacks.peak_rss_bytes(pid) - base
        ended = "yes" if outcome.closed_by_server else "no (stops reading it)"
        if outcome.status:
            ended = f"yes, HTTP {outcome.status}"
        print(f"| {name} | {outcome.sent / MIB:.1f} MiB in {outcome.seconds:.1f} s | {ended} "
              f"| {peak / MIB:+.2f} MiB |")
    server.wait_idle()
    base = attacks.rss_bytes(pid)
    held = []
    count = 20
    for n in range(count):
        sock, outcome = attacks.max_holdings(HOST, port, 100, 8192, user=f"hoarder{n}")
        held.append(sock)
    server.wait_idle()
    grown = attacks.rss_bytes(pid) - base
    print(f"| {count} clients at 100 rooms of 256 characters + 8 KiB presence | "
          f"welcomed: {outcome.notes['welcomed']} | - | {grown / MIB:+.2f} MiB, "
          f"{grown / count / 1024:.0f} KiB each |")
    for sock in held:
        sock.close()


class Attacker:
    """Runs one attack again and again, in a process of its own, while ``active`` is set.

    Processes, not threads: attackers busy in this process would hold the GIL
    and the bystander's figures would measure that instead of the server.
    """

    def __init__(self, name: str, attack: Callable[[], object],
                 active: "multiprocessing.synchronize.Event") -> None:
        self.name = name
        self.attack = attack
        self.active = active
        self.stopping = multiprocessing.Event()
        self.rounds = multiprocessing.Value("i", 0)
        self.process = multiprocessing.Process(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.process.start()

    def stop(self, timeout: float) -> None:
        self.stopping.set()
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()

    def _run(self) -> None:
        while not self.stopping.is_set():
            if not self.active.wait(0.1):
                continue
            try:
                self.attack()
            except OSError:  # refused (429) or cut: try again, as an attacker would
                pass
            with self.rounds.get_lock():
                self.rounds.value += 1
            # Reconnect at the per-address budget's sustained rate (20/s): faster
            # only gets 429s, and on a two-core machine the attackers' own spinning
            # would take the CPU the figures are about.
            self.stopping.wait(RECONNECT_PAUSE)


def holdings_churn(port: int, source: str) -> None:
    sock, _ = attacks.max_holdings(HOST, port, 100, 8192, user="churner", source=source)
    time.sleep(0.2)
    sock.close()


def timed_round_trips(client: attacks.Bystander, seconds: float) -> list[float]:
    """Round trips back to back for ``seconds``."""
    values: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        values.append(client.round_trip())
    return values


def bystander(server: ServerProcess, window: float, windows: int, seconds: float) -> None:
    """Alternate quiet and attacked windows, so the machine's own load falls on both."""
    port = server.port
    client = attacks.Bystander(HOST, port, source="127.0.0.2")
    for _ in range(50):
        client.round_trip()
    active = multiprocessing.Event()
    attackers = [
        Attacker("pings", lambda: attacks.pings_unread(HOST, port, 1 << 30, seconds,
                                                       source="127.0.0.3"), active),
        Attacker("heads", lambda: attacks.endless_head(HOST, port, 1 << 30, seconds,
                                                       source="127.0.0.4"), active),
        Attacker("bodies", lambda: attacks.big_body(HOST, port, 150 << 20, seconds,
                                                    source="127.0.0.5"), active),
        Attacker("holdings", lambda: holdings_churn(port, "127.0.0.6"), active),
    ]
    for attacker in attackers:
        attacker.start()
    quiet: list[list[float]] = []
    attacked: list[list[float]] = []
    try:
        for _ in range(windows):
            active.clear()
            time.sleep(0.5)
            quiet.append(timed_round_trips(client, window))
            active.set()
            time.sleep(0.5)
            attacked.append(timed_round_trips(client, window))
    finally:
        active.clear()
        for attacker in attackers:
            attacker.stop(seconds + 5)
        client.close()

    def ms(values: list[float], fraction: float) -> float:
        return attacks.percentile(values, fraction) * 1000

    print()
    print(f"| bystander, {windows} windows of {window:g} s each | round trips | p50 ms "
          f"| p99 ms, median of windows | p99 ms, each window |")
    print("|---|---|---|---|---|")
    for name, runs in (("alone", quiet), ("while 4 attackers run", attacked)):
        everything = [v for run in runs for v in run]
        p99s = sorted(ms(run, 0.99) for run in runs)
        print(f"| {name} | {len(everything)} | {ms(everything, 0.5):.2f} "
              f"| {p99s[len(p99s) // 2]:.2f} "
              f"| {' / '.join(f'{p:.2f}' for p in p99s)} |")
    ratios = sorted(ms(a, 0.99) / ms(q, 0.99) for q, a in zip(quiet, attacked))
    print(f"p99 ratio attacked/alone per window pair: "
          f"{' / '.join(f'{r:.2f}' for r in ratios)}; attacker rounds: "
          + ", ".join(f"{a.name} {a.rounds.value}" for a in attackers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=2.0,
                        help="seconds of round trips per window (default 2)")
    parser.add_argument("--windows", type=int, default=5,
                        help="quiet and attacked windows, alternating (default 5 each)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="how long each attack runs (default 5)")
    args = parser.parse_args()
    info = machine()
    print(", ".join(f"{k}: {v}" for k, v in info.items()))
    port = free_port()
    with ServerProcess(server_command(port), port) as server:
        single_client(server, args.seconds)
        bystander(server, args.window, args.windows, args.seconds)


if __name__ == "__main__":
    main()
