"""Where the memory of an idle authenticated connection goes (tracemalloc).

    python bench/memprofile.py [--connections 2000] [--echo]

Runs the server (symple_tx as ``twistd symple`` would build it, or the bare
Autobahn baseline) in a child process under tracemalloc, opens the
connections with the benchmark's load generator, and prints the allocation
sites that grew, per connection.  tracemalloc sees Python allocations only;
the RSS figure of run.py also includes allocator overhead and fragmentation.

Run from a checkout after ``pip install -e .[bench]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402
import wsload  # noqa: E402
from serverproc import HOST, ServerProcess, free_port  # noqa: E402


def serve(port: int, out: str, echo: bool) -> None:
    """Child: run the server; SIGUSR1 takes the 'before' snapshot, SIGUSR2 writes the diff."""
    tracemalloc.start(8)
    from twisted.internet import reactor
    if echo:
        from autobahn.twisted.websocket import WebSocketServerFactory
        from baseline_echo import EchoProtocol
        factory = WebSocketServerFactory(f"ws://{HOST}:{port}")
        factory.protocol = EchoProtocol
        factory.clients = set()
        factory.broadcast = False
        reactor.listenTCP(port, factory, backlog=1024, interface=HOST)
    else:
        from symple_tx.tap import Options, makeService
        options = Options()
        options.parseOptions(["--listen", f"tcp:{port}:interface={HOST}:backlog=1024",
                              "--max-connections", "50000", "--no-demo"])
        makeService(options).startService()
    snapshots = []

    def before() -> None:
        snapshots.append(tracemalloc.take_snapshot())

    def after() -> None:
        snapshot = tracemalloc.take_snapshot()
        with open(out, "w") as f:
            for key in ("lineno", "traceback"):
                stats = snapshot.compare_to(snapshots[0], key)
                f.write(f"== by {key}\n")
                for stat in stats[:25]:
                    f.write(f"{stat.size_diff} {stat.count_diff}\n")
                    lines = stat.traceback.format() if key == "traceback" else \
                        [str(stat.traceback[0])]
                    f.write("".join(f"    {line}\n" for line in lines[-8:]))
        reactor.stop()

    signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(before))
    signal.signal(signal.SIGUSR2, lambda *_: reactor.callFromThread(after))
    reactor.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--echo", action="store_true", help="profile the bare Autobahn baseline")
    parser.add_argument("--server-path", metavar="DIR",
                        help="put DIR first on the server's PYTHONPATH (to measure a patched copy)")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(int(args.serve[0]), args.serve[1], args.echo)
    run.raise_fd_limit()
    port = free_port()
    out = os.path.join(tempfile.gettempdir(), f"symple-memprofile-{os.getpid()}.txt")
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", str(port), out]
    if args.echo:
        command.append("--echo")
    n = args.connections
    with ServerProcess(command, port, args.server_path) as server, run.Workers() as workers:
        warm = workers.spawn(wsload.connect_worker, HOST, port, 900000, 50, 16, 30.0, args.echo)
        run.ask([warm], ("connect",), 40)
        run.ask([warm], ("close",), 10)
        server.wait_idle()
        os.kill(server.pid, signal.SIGUSR1)
        time.sleep(1.0)
        rss = server.rss_kb()
        pipe = workers.spawn(wsload.connect_worker, HOST, port, 0, n, 32, 120.0, args.echo)
        run.ask([pipe], ("connect",), 130)
        server.wait_idle()
        rss = server.rss_kb() - rss
        os.kill(server.pid, signal.SIGUSR2)
        server.proc.wait(300)
        text = Path(out).read_text()
        os.unlink(out)
    print(f"RSS growth: {rss / n:.2f} KB per connection (with tracemalloc's own overhead)")
    print("per connection: bytes, allocations, where (the innermost line first)")
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].lstrip("-").isdigit():
            print(f"{int(parts[0]) / n:8.1f} B/conn {int(parts[1]) / n:6.2f} blocks/conn")
        else:
            print(line)


if __name__ == "__main__":
    main()
