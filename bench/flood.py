"""What one client flooding a big room costs the server, with and without the delivery budget.

    python bench/flood.py [--members 500] [--frames 2000]

Starts ``twistd symple`` twice, with its default limits and then with
``--delivery-limit 0`` (only the 1000-frame budget left), connects
``--members`` clients to one room (they read and discard what they get), and
has one more member send ``--frames`` messages to the room back to back.
Prints, for each run, how many of the flood's frames reached a member, the
server CPU seconds from the first frame until the server is idle again, and
how the flooder's connection ended.

Run from a checkout after ``pip install -e .[bench]``.
"""

from __future__ import annotations

import argparse
import select
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from serverproc import HOST, ServerProcess, free_port, machine, symple_port_command  # noqa: E402
from wsload import (OP_CLOSE, OP_TEXT, auth_frame, client_frame, close_all,  # noqa: E402
                    connect_many, take_frames)

ROOM = "big"


def drain(clients: list, watched, seconds: float) -> tuple[int, str]:
    """Read every socket for ``seconds`` of quiet; count the watched member's flood
    frames and report how the flooder's connection ended."""
    ep = select.epoll()
    for c in clients:
        ep.register(c.fd, select.EPOLLIN)
    by_fd = {c.fd: c for c in clients}
    flood = 0
    ended = "open"
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < seconds:
        events = ep.poll(0.1)
        if events:
            quiet_since = time.monotonic()
        for fd, _ in events:
            c = by_fd[fd]
            try:
                data = c.sock.recv(262144)
            except (BlockingIOError, ConnectionError):
                data = b""
            if not data:
                ep.unregister(fd)
                continue
            if c is not watched and c is not clients[-1]:
                continue  # the other members only drain
            c.buf += data
            for opcode, payload in take_frames(c.buf):
                if c is clients[-1]:
                    if opcode == OP_CLOSE:
                        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 0
                        ended = f"closed {code}"
                elif opcode == OP_TEXT and b'"flood"' in payload:
                    flood += 1
    ep.close()
    return flood, ended


def run(members: int, frames: int, extra: list[str]) -> dict:
    port = free_port()
    command = symple_port_command(port, "--no-demo", "--ping-interval", "0", *extra)
    with ServerProcess(command, port) as server:
        auths = [auth_frame(f"member{n}", [ROOM]) for n in range(members)]
        clients = connect_many(HOST, port, auths, 100, time.monotonic() + 120)
        for c in clients:
            c.sock.setblocking(False)
        # The presence storm of the joins is over before the flood starts.
        drain(clients, clients[0], 1.0)
        server.wait_idle()
        message = client_frame(orjson.dumps({"type": "message", "to": ROOM,
                                             "subtype": "flood", "data": "x" * 32}))
        before = server.cpu_seconds()
        started = time.monotonic()
        flooder = clients[-1]
        burst = message * frames
        view = memoryview(burst)
        while view:
            try:
                view = view[flooder.sock.send(view):]
            except BlockingIOError:
                select.select([], [flooder.sock], [], 0.05)
            except ConnectionError:
                break
            if time.monotonic() - started > 60:
                break
        got, ended = drain(clients, clients[0], 1.0)
        server.wait_idle()
        cpu = server.cpu_seconds() - before
        close_all(clients)
    return {"got": got, "cpu": cpu, "ended": ended}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=500,
                        help="room members, the flooder included (default 500)")
    parser.add_argument("--frames", type=int, default=2000,
                        help="messages the flooder sends back to back (default 2000)")
    args = parser.parse_args()
    print(", ".join(f"{k}: {v}" for k, v in machine().items()))
    print(f"{args.members}-member room, one member sends {args.frames} messages to it "
          f"back to back")
    print("| server | flood frames a member got | server CPU-s for the flood | flooder |")
    print("|---|---|---|---|")
    for name, extra in (("defaults", []), ("--delivery-limit 0", ["--delivery-limit", "0"])):
        result = run(args.members, args.frames, extra)
        print(f"| {name} | {result['got']} | {result['cpu']:.2f} | {result['ended']} |")


if __name__ == "__main__":
    main()
