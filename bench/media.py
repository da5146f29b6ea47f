"""The media peer (``symple stream``): time to first frame, and CPU per WebRTC viewer.

    python bench/media.py                      # 640x480 @ 15 fps, 5 watches, 0/1/2/4 viewers
    python bench/media.py --viewers 0,1,2 --window 20 --size 1280x720

It starts a server (``twistd symple``) and ``symple stream`` (the test
pattern) as their own processes, then watches the peer from Python viewers
(``symple_tx.media.viewer``) in this process:

* watch -> first frame: from sending ``call:init`` to the first decoded
  frame, for viewers watching one after the other (median, min, max);
* CPU per viewer: the peer process's CPU (from /proc) over ``--window``
  seconds with N viewers receiving, the increase per viewer over no viewer,
  the increase per viewer after the first (which also starts drawing the
  test pattern), and the frame rate each viewer got.

The viewers decode in this process; on a small machine they compete with the
peer for CPU, which shows as a lower received frame rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from twisted.internet import asyncioreactor  # noqa: E402

asyncioreactor.install(asyncio.new_event_loop())

from twisted.internet import defer, task  # noqa: E402

from serverproc import HOST, ServerProcess, cpu_seconds, die_with_parent, free_port, machine, \
    symple_command  # noqa: E402


def stream_command(url: str, size: str, fps: float, max_viewers: int) -> list[str]:
    return [sys.executable, "-m", "symple_tx.cli", "stream", url, "--user", "cam",
            "--room", "bench", "--size", size, "--fps", f"{fps:g}",
            "--max-viewers", str(max_viewers)]


class Watcher:
    """One Python viewer: connects, watches, counts the frames it decodes."""

    def __init__(self, url: str, bridge: Any, n: int) -> None:
        from symple_tx.client import SympleClient
        from symple_tx.media.viewer import MediaViewer
        self.client = SympleClient(url, f"viewer{n}", rooms=["bench"], reconnect=False)
        self.viewer = MediaViewer(self.client, bridge)
        self.call: Any = None
        self.frames = 0
        self.reading = False

    async def start(self) -> float:
        """Watch the cam; seconds from call:init to the first decoded frame."""
        await self.client.connect()
        cam = await self.client.wait_for_peer("cam", timeout=30)
        started = time.monotonic()
        self.call = await self.viewer.watch(f"cam|{cam['id']}")
        await self.viewer.next_frame(self.call)
        first = time.monotonic() - started
        self.reading = True
        defer.ensureDeferred(self._read())
        return first

    async def _read(self) -> None:
        from symple_tx.media.call import CallEnded
        try:
            while self.reading and self.call.live:
                await self.viewer.next_frame(self.call)
                self.frames += 1
        except CallEnded:
            pass

    async def stop(self) -> None:
        self.reading = False
        if self.call is not None:
            await self.call.hangup()
        await self.client.disconnect()


async def main(reactor: Any, args: argparse.Namespace) -> None:
    from symple_tx.media.bridge import AsyncioBridge
    info = machine()
    print(f"machine: {info['nproc']} CPUs, {info['cpu']}, load average "
          f"{', '.join(f'{x:.2f}' for x in info['loadavg'])}, Python {info['python']}")
    port = free_port()
    url = f"ws://{HOST}:{port}/"
    counts = [int(n) for n in args.viewers.split(",")]
    with ServerProcess(symple_command(port), port):
        log = tempfile.NamedTemporaryFile(prefix="symple-bench-stream-", suffix=".log")
        peer = subprocess.Popen(stream_command(url, args.size, args.fps, max(counts + [1])),
                                stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        try:
            bridge = AsyncioBridge(reactor)
            print(f"peer: symple stream --size {args.size} --fps {args.fps:g} "
                  f"(test pattern), pid {peer.pid}")

            firsts = []
            for n in range(args.watches):
                watcher = Watcher(url, bridge, n)
                firsts.append(await watcher.start())
                await watcher.stop()
            print(f"watch -> first decoded frame, {args.watches} watches one after another: "
                  f"median {statistics.median(firsts) * 1000:.0f} ms, "
                  f"min {min(firsts) * 1000:.0f} ms, max {max(firsts) * 1000:.0f} ms")

            print(f"\n{'viewers':>7}  {'peer CPU %':>10}  {'per viewer':>10}  "
                  f"{'each after 1st':>14}  {'fps each':>8}  (window {args.window:g} s)")
            idle = first = None
            for count in counts:
                watchers = [Watcher(url, bridge, 100 + i) for i in range(count)]
                for watcher in watchers:
                    await watcher.start()
                await task.deferLater(reactor, 2, lambda: None)  # settle (keyframes, bitrate)
                frames = [w.frames for w in watchers]
                cpu, started = cpu_seconds(peer.pid), time.monotonic()
                await task.deferLater(reactor, args.window, lambda: None)
                elapsed = time.monotonic() - started
                load = (cpu_seconds(peer.pid) - cpu) / elapsed * 100
                fps = [(w.frames - f) / elapsed for w, f in zip(watchers, frames)]
                if idle is None and count == 0:
                    idle = load
                if first is None and count == 1:
                    first = load  # the first viewer also starts drawing the test pattern
                per = f"{(load - idle) / count:.1f}" if count and idle is not None else "-"
                more = f"{(load - first) / (count - 1):.1f}" if count > 1 and first else "-"
                each = f"{statistics.mean(fps):.1f}" if fps else "-"
                print(f"{count:>7}  {load:>10.1f}  {per:>10}  {more:>14}  {each:>8}")
                for watcher in watchers:
                    await watcher.stop()
        finally:
            peer.terminate()
            peer.wait(10)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--watches", type=int, default=5, help="sequential watches timed")
    parser.add_argument("--viewers", default="0,1,2,4", help="viewer counts for the CPU table")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured per count")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
