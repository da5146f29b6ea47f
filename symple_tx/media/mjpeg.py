"""MJPEG over HTTP: the source as ``multipart/x-mixed-replace`` JPEG parts, on a port of its own.

The format ``<img src>`` and the symple-player MJPEG engine play.  One
encoder serves every viewer: while anyone watches, the source is encoded at
most ``fps`` times a second (on the asyncio loop's worker threads), and each
JPEG is offered to each viewer.  A viewer whose connection cannot take more
(Twisted paused its producer) keeps only the newest JPEG, so a slow viewer
drops frames and costs at most one frame of memory beyond its socket buffer.

    GET /stream.mjpg    the stream (503 with the reason beyond ``max_viewers``)
    GET /snapshot.jpg   one JPEG
    GET /               a page showing the stream
"""

from __future__ import annotations

import asyncio
import io
from typing import Any, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web import resource, server
from zope.interface import implementer

from .bridge import AsyncioBridge
from .sources import MediaSource

log = Logger()

BOUNDARY = "symple-mjpeg-frame"
CONTENT_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
STREAM_PATH = "stream.mjpg"
SNAPSHOT_PATH = "snapshot.jpg"


def encode_jpeg(frame: Any, width: int, height: int, quality: int) -> bytes:
    """One decoded video frame as a JPEG of exactly ``width`` x ``height``."""
    image = frame.to_image()
    if image.size != (width, height):
        image = image.resize((width, height))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def part(jpeg: bytes) -> bytes:
    """One part of the multipart stream: boundary, headers, the JPEG."""
    return (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(jpeg)}\r\n\r\n").encode("ascii") + jpeg + b"\r\n"


@implementer(IPushProducer)
class MJPEGViewer:
    """One HTTP client of the stream; Twisted pauses it when its socket is full."""

    def __init__(self, stream: "MJPEGStream", request: server.Request) -> None:
        self.stream = stream
        self.request = request
        self.paused = False
        #: The newest JPEG not yet written because the connection was paused.
        self.waiting: Optional[bytes] = None
        self.sent = 0
        self.dropped = 0
        self.written_bytes = 0
        self.gone = False
        request.registerProducer(self, True)

    def offer(self, jpeg: bytes) -> None:
        if self.gone:
            return
        if self.paused:
            if self.waiting is not None:
                self.dropped += 1
            self.waiting = jpeg
        else:
            self._write(jpeg)

    def _write(self, jpeg: bytes) -> None:
        data = part(jpeg)
        self.sent += 1
        self.written_bytes += len(data)
        self.request.write(data)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        waiting, self.waiting = self.waiting, None
        if waiting is not None and not self.gone:
            self._write(waiting)

    def stopProducing(self) -> None:
        self.stream.remove(self)


class StreamResource(resource.Resource):
    isLeaf = True

    def __init__(self, stream: "MJPEGStream") -> None:
        super().__init__()
        self.stream = stream

    def render_GET(self, request: server.Request) -> Any:
        if len(self.stream.viewers) >= self.stream.max_viewers:
            request.setResponseCode(503)
            request.setHeader("content-type", "text/plain; charset=utf-8")
            request.setHeader("retry-after", "10")
            return (f"MJPEG viewer limit reached ({self.stream.max_viewers}); "
                    "try again later\n").encode()
        request.setHeader("content-type", CONTENT_TYPE)
        request.setHeader("cache-control", "no-cache, no-store")
        request.setHeader("x-resolution", f"{self.stream.width}x{self.stream.height}")
        request.setHeader("access-control-allow-origin", "*")
        viewer = MJPEGViewer(self.stream, request)
        request.notifyFinish().addBoth(lambda _: self.stream.remove(viewer))
        self.stream.add(viewer)
        return server.NOT_DONE_YET


class SnapshotResource(resource.Resource):
    isLeaf = True

    def __init__(self, stream: "MJPEGStream") -> None:
        super().__init__()
        self.stream = stream

    def render_GET(self, request: server.Request) -> Any:
        gone: list[bool] = []
        request.notifyFinish().addBoth(lambda _: gone.append(True))

        def send(jpeg: bytes) -> None:
            if not gone:
                request.setHeader("content-type", "image/jpeg")
                request.setHeader("cache-control", "no-cache, no-store")
                request.write(jpeg)
                request.finish()
        self.stream.next_jpeg().addCallback(send).addErrback(
            lambda f: log.failure("Snapshot failed", f))
        return server.NOT_DONE_YET


class IndexResource(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader("content-type", "text/html; charset=utf-8")
        return (b'<!DOCTYPE html><meta charset="utf-8"><title>symple_tx MJPEG</title>'
                b'<body style="margin:0;background:#111">'
                b'<img src="stream.mjpg" alt="live stream" style="max-width:100%"></body>')


class MJPEGStream:
    """Encodes the source while someone watches and fans each JPEG out to the viewers."""

    def __init__(self, source: MediaSource, bridge: AsyncioBridge, fps: float = 15.0,
                 quality: int = 75, max_viewers: int = 32) -> None:
        if not 1 <= quality <= 95:
            raise ValueError(f"JPEG quality must be 1-95, not {quality}")
        if fps <= 0:
            raise ValueError(f"MJPEG frame rate must be positive, not {fps}")
        self.source = source
        self.bridge = bridge
        self.fps = fps
        self.quality = quality
        self.max_viewers = max_viewers
        self.width, self.height = source.width, source.height
        self.viewers: set[MJPEGViewer] = set()
        self.latest: Optional[bytes] = None
        self.encoded = 0
        self._pump: Optional[Deferred] = None
        self._waiting: list[Deferred] = []
        self.port: Any = None

    # -- serving -------------------------------------------------------------

    def resource(self) -> resource.Resource:
        root = resource.Resource()
        root.putChild(b"", IndexResource())
        root.putChild(STREAM_PATH.encode(), StreamResource(self))
        root.putChild(SNAPSHOT_PATH.encode(), SnapshotResource(self))
        return root

    def site(self) -> server.Site:
        site = server.Site(self.resource())
        site.displayTracebacks = False
        site.noisy = False
        return site

    def listen(self, port: int, interface: str = "") -> Deferred:
        """Listen on ``port`` (0 picks one); fires with the listening port."""
        where = f"tcp:{port}" + (f":interface={interface}" if interface else "")

        def listening(listening_port: Any) -> Any:
            self.port = listening_port
            return listening_port
        return serverFromString(self.bridge.reactor, where).listen(self.site()).addCallback(
            listening)

    def url(self, host: str) -> str:
        """The stream's URL on ``host`` (the address viewers reach this machine at)."""
        address = f"[{host}]" if ":" in host else host
        return f"http://{address}:{self.port.getHost().port}/{STREAM_PATH}"

    def stop(self) -> Deferred:
        self._stop_pump()
        for viewer in list(self.viewers):
            self.remove(viewer)
            if not viewer.request.finished:
                viewer.request.unregisterProducer()
                viewer.request.finish()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else succeed(None)

    # -- viewers ---------------------------------------------------------------

    def add(self, viewer: MJPEGViewer) -> None:
        self.viewers.add(viewer)
        if self.latest is not None:
            viewer.offer(self.latest)  # something to show at once
        self._start_pump()

    def remove(self, viewer: MJPEGViewer) -> None:
        viewer.gone = True
        self.viewers.discard(viewer)
        if not self.viewers and not self._waiting:
            self._stop_pump()

    def next_jpeg(self) -> Deferred:
        """The next JPEG encoded (starts encoding if nobody watches)."""
        d: Deferred = Deferred()
        self._waiting.append(d)
        self._start_pump()
        return d

    def publish(self, jpeg: bytes) -> None:
        """Offer a JPEG to every viewer (reactor thread)."""
        self.latest = jpeg
        self.encoded += 1
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(jpeg)
        for viewer in list(self.viewers):
            viewer.offer(jpeg)
        if not self.viewers and not self._waiting:
            self._stop_pump()

    # -- encoding --------------------------------------------------------------

    def _start_pump(self) -> None:
        if self._pump is None:
            self._pump = self.bridge.run(self._encode_frames())
            self._pump.addErrback(self._pump_failed)

    def _stop_pump(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()

    def _pump_failed(self, failure: Any) -> None:
        from twisted.internet.defer import CancelledError
        if not failure.check(CancelledError):
            log.failure("MJPEG encoding stopped", failure)
        self._pump = None

    async def _encode_frames(self) -> None:
        track = self.source.subscribe_video()
        if track is None:
            return
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.fps
        due = 0.0
        try:
            while True:
                frame = await track.recv()
                now = loop.time()
                if now < due - interval / 4:
                    continue  # the source is faster than the MJPEG rate: skip
                due = max(due + interval, now)
                jpeg = await loop.run_in_executor(None, encode_jpeg, frame, self.width,
                                                  self.height, self.quality)
                self.bridge.to_reactor(self.publish, jpeg)
        finally:
            track.stop()
