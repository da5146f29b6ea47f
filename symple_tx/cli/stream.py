"""``symple stream``: be a media peer (the ``media`` extra): WebRTC viewers, optional MJPEG.

It runs on Twisted's asyncio reactor (``main`` installs it for this command),
so aiortc and the Symple client share one loop and one thread.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from twisted.internet import defer
from twisted.internet.error import CannotListenError

from .common import CommandError, err
from .connect import make_client, online
from .options import positive_int


def use_asyncio_reactor() -> None:
    """Install Twisted's asyncio reactor unless a reactor is installed already."""
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor
        asyncioreactor.install(asyncio.new_event_loop())


def frame_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    try:
        size = int(width), int(height)
    except ValueError:
        size = (0, 0)
    if not (16 <= size[0] <= 7680 and 16 <= size[1] <= 4320):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}")
    return size


def quality(text: str) -> int:
    value = positive_int(text)
    if value > 95:
        raise argparse.ArgumentTypeError(f"JPEG quality is 1-95, got {text!r}")
    return value


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return value


def stream_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", "-s", default="test", metavar="test|FILE|/dev/videoN",
                        help="what to stream: the test pattern with a clock (default), a "
                             "video file (looped) or a V4L2 camera")
    parser.add_argument("--size", type=frame_size, default=(640, 480), metavar="WxH",
                        help="frame size of the test pattern and camera (default 640x480)")
    parser.add_argument("--fps", type=float, default=15.0,
                        help="frame rate of the test pattern and camera (default 15)")
    parser.add_argument("--max-viewers", type=positive_int, default=4, metavar="N",
                        help="WebRTC viewers at once; more are answered busy (default 4)")
    parser.add_argument("--ice-server", action="append", metavar="URL",
                        help="STUN/TURN server, e.g. stun:stun.example.org:3478 "
                             "(repeatable; default none: host candidates, fine on a LAN)")
    parser.add_argument("--record", metavar="DIR",
                        help="record what callers send (their camera) to DIR/USER-CALLID.webm")
    parser.add_argument("--mjpeg-port", type=port_number, metavar="N",
                        help="also serve MJPEG over HTTP on this port (0: any free port)")
    parser.add_argument("--mjpeg-interface", default="", metavar="ADDRESS",
                        help="address the MJPEG server listens on (default all)")
    parser.add_argument("--mjpeg-host", metavar="HOST",
                        help="host name viewers reach the MJPEG server at, for the URL in "
                             "presence (default: this machine's address towards the server)")
    parser.add_argument("--mjpeg-fps", type=float, metavar="FPS",
                        help="MJPEG frame rate (default: --fps)")
    parser.add_argument("--quality", type=quality, default=75, metavar="1-95",
                        help="MJPEG JPEG quality (default 75)")
    parser.add_argument("--max-mjpeg-viewers", type=positive_int, default=32, metavar="N",
                        help="MJPEG viewers at once; more get 503 (default 32)")


async def run_stream(reactor: Any, args: argparse.Namespace) -> None:
    from ..media import MediaUnavailable, require
    try:
        require()
    except MediaUnavailable as exc:
        raise CommandError(str(exc)) from None
    from ..media.bridge import AsyncioBridge
    from ..media.mjpeg import MJPEGStream
    from ..media.peer import MediaPeer
    from ..media.sources import SourceError, open_source

    if args.fps <= 0 or (args.mjpeg_fps is not None and args.mjpeg_fps <= 0):
        raise CommandError("frame rates must be positive")
    if args.record is not None and not (os.path.isdir(args.record)
                                        and os.access(args.record, os.W_OK)):
        raise CommandError(f"--record {args.record}: not a writable directory")
    bridge = AsyncioBridge(reactor)
    width, height = args.size

    async def open_it() -> Any:
        return open_source(args.source, width, height, args.fps)
    try:
        source = await bridge.run(open_it())
    except SourceError as exc:
        raise CommandError(str(exc)) from None
    mjpeg = None
    if args.mjpeg_port is not None:
        mjpeg = MJPEGStream(source, bridge, fps=args.mjpeg_fps or args.fps,
                            quality=args.quality, max_viewers=args.max_mjpeg_viewers)
        try:
            await mjpeg.listen(args.mjpeg_port, args.mjpeg_interface)
        except CannotListenError as exc:
            reason = getattr(exc.socketError, "strerror", None) or exc.socketError
            raise CommandError(f"cannot serve MJPEG on port {args.mjpeg_port}: {reason}") \
                from None
    client = make_client(args, reconnect=True)
    peer = MediaPeer(client, source, bridge=bridge, max_viewers=args.max_viewers,
                     ice_servers=args.ice_server or (), record_dir=args.record,
                     mjpeg_url=mjpeg.url(args.mjpeg_host) if mjpeg and args.mjpeg_host else None)
    if mjpeg is not None and not args.mjpeg_host:
        # The address this machine reaches the server from is the one its viewers can reach.
        client.on("connect", lambda _: peer.set_mjpeg_url(
            mjpeg.url(client.protocol.transport.getHost().host)))  # type: ignore[union-attr]

    async def shut_down() -> None:
        await peer.stop()
        if mjpeg is not None:
            await mjpeg.stop()
        await client.disconnect()
        source.stop()
    reactor.addSystemEventTrigger("before", "shutdown",
                                  lambda: defer.ensureDeferred(shut_down()))
    peer_info = await online(client, args)
    where = ", ".join(client.rooms) or "no room"
    err(f"streaming {source.description} as {peer_info['user']}|{peer_info['id']} in {where};"
        f" up to {args.max_viewers} WebRTC viewers")
    if mjpeg is not None:
        err(f"MJPEG: {client.capabilities.get('mjpeg') or mjpeg.url('127.0.0.1')}")
    await defer.Deferred()  # until interrupted
