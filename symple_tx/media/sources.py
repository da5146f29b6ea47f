"""What the media peer streams: a test pattern with a clock, a looped file, or a V4L2 camera.

A ``MediaSource`` owns one video track (and an audio track when the source
has one) and hands every consumer (each WebRTC viewer, the MJPEG encoder)
its own subscription, so the source is read once however many watch, and a
slow consumer skips frames instead of queueing them.  Each subscriber gets
its own copy of a frame: aiortc encodes on worker threads, and two encoders
working on one PyAV frame at once crash the process (aiortc's MediaRelay
shares the frame).  Everything here runs on the asyncio loop (see ``bridge``).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import stat
import time
from fractions import Fraction
from typing import Any, Optional

import av
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from PIL import Image, ImageDraw, ImageFont

#: RTP's video clock.
VIDEO_CLOCK = 90000
TEST = "test"


class SourceError(Exception):
    """The source cannot be opened (missing device, unreadable or non-video file)."""


#: The SMPTE-like bars of the test pattern, left to right.
BARS = ((192, 192, 192), (192, 192, 0), (0, 192, 192), (0, 192, 0),
        (192, 0, 192), (192, 0, 0), (0, 0, 192))


class TestPatternTrack(MediaStreamTrack):
    """Colour bars, a moving marker and a clock (UTC, milliseconds) with the frame number.

    Needs no hardware; the clock makes latency visible and proves frames are live.
    """

    kind = "video"

    def __init__(self, width: int = 640, height: int = 480, fps: float = 15.0) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._background = self._draw_background()
        self._font = ImageFont.load_default(size=max(10, height // 9))
        self._small = ImageFont.load_default(size=max(8, height // 24))
        self._start: Optional[float] = None
        self._count = 0

    def _draw_background(self) -> Image.Image:
        image = Image.new("RGB", (self.width, self.height), (16, 16, 16))
        draw = ImageDraw.Draw(image)
        bar_width = self.width / len(BARS)
        for i, colour in enumerate(BARS):
            draw.rectangle((round(i * bar_width), 0, round((i + 1) * bar_width) - 1,
                            self.height * 2 // 3), fill=colour)
        return image

    async def _next_time(self) -> int:
        """Wait for the next frame's moment; its number (frames since the first)."""
        if self._start is None:
            self._start = time.monotonic()
            return 0
        self._count += 1
        delay = self._start + self._count / self.fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        return self._count

    def render(self, number: int) -> Image.Image:
        image = self._background.copy()
        draw = ImageDraw.Draw(image)
        w, h = self.width, self.height
        size = max(4, h // 12)
        x = int(number * w / (self.fps * 4)) % max(1, w - size)  # crosses in 4 seconds
        draw.rectangle((x, h * 2 // 3 - size, x + size, h * 2 // 3), fill=(255, 255, 255))
        now = datetime.datetime.now(datetime.timezone.utc)
        clock = now.strftime("%H:%M:%S.") + f"{now.microsecond // 1000:03d}"
        draw.text((w // 20, h * 2 // 3 + h // 30), clock, font=self._font, fill=(255, 255, 255))
        draw.text((w // 20, h - h // 12), f"symple_tx test pattern  {w}x{h} @ {self.fps:g} fps"
                  f"  frame {number}", font=self._small, fill=(170, 170, 170))
        return image

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        number = await self._next_time()
        # yuv420p once here rather than in every viewer's encoder.
        frame = av.VideoFrame.from_image(self.render(number)).reformat(format="yuv420p")
        frame.pts = int(number * VIDEO_CLOCK / self.fps)
        frame.time_base = Fraction(1, VIDEO_CLOCK)
        return frame


def copy_frame(frame: Any) -> Any:
    """A private copy of a PyAV video or audio frame (same format, pts and time base)."""
    if isinstance(frame, av.VideoFrame):
        new: Any = av.VideoFrame(frame.width, frame.height, frame.format.name)
    else:
        new = av.AudioFrame(format=frame.format.name, layout=frame.layout.name,
                            samples=frame.samples)
        new.sample_rate = frame.sample_rate
    for source, target in zip(frame.planes, new.planes):
        if source.buffer_size == target.buffer_size:
            target.update(source)
        else:  # different row padding: copy row by row
            src, dst = memoryview(source), memoryview(target)
            rows = source.buffer_size // source.line_size
            width = min(source.line_size, target.line_size)
            for row in range(rows):
                dst[row * target.line_size:row * target.line_size + width] = \
                    src[row * source.line_size:row * source.line_size + width]
    new.pts = frame.pts
    new.time_base = frame.time_base
    return new


class Subscription(MediaStreamTrack):
    """One consumer's view of a shared track: always the newest frame, as its own copy."""

    def __init__(self, fan: "FanOut") -> None:
        super().__init__()
        self.kind = fan.track.kind
        self._fan: Optional[FanOut] = fan
        self._frame: Any = None
        self._new = asyncio.Event()

    def _offer(self, frame: Any) -> None:
        self._frame = frame
        self._new.set()

    async def recv(self) -> Any:
        if self.readyState != "live" or self._fan is None:
            raise MediaStreamError
        self._fan.start(self)
        await self._new.wait()
        self._new.clear()
        if self._frame is None:
            self.stop()
            raise MediaStreamError
        return copy_frame(self._frame)

    def stop(self) -> None:
        super().stop()
        fan, self._fan = self._fan, None
        if fan is not None:
            fan.discard(self)


class FanOut:
    """Reads one track for all its subscribers.

    A generated source (the test pattern) pauses when the last subscriber
    leaves; a player keeps being read, or its frames would queue up.
    """

    def __init__(self, track: MediaStreamTrack, drain_when_idle: bool) -> None:
        self.track = track
        self.drain_when_idle = drain_when_idle
        self.subscribers: set[Subscription] = set()
        self._task: Optional[asyncio.Task] = None

    def subscribe(self) -> Subscription:
        return Subscription(self)

    def start(self, subscription: Subscription) -> None:
        self.subscribers.add(subscription)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._read())

    def discard(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)
        if not self.subscribers and not self.drain_when_idle and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _read(self) -> None:
        while True:
            try:
                frame = await self.track.recv()
            except MediaStreamError:
                frame = None
            for subscription in list(self.subscribers):
                subscription._offer(frame)
            if frame is None:
                return

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for subscription in list(self.subscribers):
            subscription._offer(None)


class MediaSource:
    """One opened source, shared by every viewer."""

    def __init__(self, video: Optional[MediaStreamTrack], audio: Optional[MediaStreamTrack],
                 description: str, width: int, height: int, fps: float,
                 player: Optional[MediaPlayer] = None) -> None:
        self.video = video
        self.audio = audio
        self.description = description
        self.width, self.height, self.fps = width, height, fps
        self._player = player
        self._fans = {track: FanOut(track, drain_when_idle=player is not None)
                      for track in (video, audio) if track is not None}

    def subscribe_video(self) -> Optional[MediaStreamTrack]:
        return self._fans[self.video].subscribe() if self.video else None

    def subscribe_audio(self) -> Optional[MediaStreamTrack]:
        return self._fans[self.audio].subscribe() if self.audio else None

    def stop(self) -> None:
        for fan in self._fans.values():
            fan.stop()
        for track in (self.video, self.audio):
            if track is not None:
                track.stop()


def is_device(spec: str) -> bool:
    return spec.startswith("/dev/")


def open_source(spec: str = TEST, width: int = 640, height: int = 480,
                fps: float = 15.0, loop: bool = True) -> MediaSource:
    """``test``, a video file (looped) or a V4L2 device such as ``/dev/video0``.

    Raises ``SourceError`` with a one-line reason.  Call it on the asyncio loop.
    """
    if spec == TEST:
        return MediaSource(TestPatternTrack(width, height, fps), None,
                           f"test pattern {width}x{height} @ {fps:g} fps", width, height, fps)
    if is_device(spec):
        return _open_camera(spec, width, height, fps)
    return _open_file(spec, width, height, fps, loop)


def _open_camera(path: str, width: int, height: int, fps: float) -> MediaSource:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise SourceError(f"no camera at {path} (is it plugged in? ls /dev/video*)") from None
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror}") from None
    if not stat.S_ISCHR(mode):
        raise SourceError(f"{path} is not a camera device")
    if not os.access(path, os.R_OK | os.W_OK):
        raise SourceError(f"{path}: permission denied (add yourself to the 'video' group)")
    options = {"video_size": f"{width}x{height}", "framerate": f"{fps:g}"}
    player = _player(path, "{path}: not a usable camera ({reason})", format="v4l2",
                     options=options)
    if player.video is None:
        raise SourceError(f"{path}: the device has no video stream")
    return MediaSource(player.video, player.audio, f"camera {path}", width, height, fps, player)


def _open_file(path: str, width: int, height: int, fps: float, loop: bool) -> MediaSource:
    if not os.path.exists(path):
        raise SourceError(f"no such file: {path} (--source takes test, a video file "
                          "or /dev/videoN)")
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise SourceError(f"cannot read {path}")
    player = _player(path, "cannot open {path}: {reason}", loop=loop)
    if player.video is None:
        raise SourceError(f"{path} has no video stream")
    size = _video_size(path) or (width, height)
    return MediaSource(player.video, player.audio, f"file {os.path.basename(path)}",
                       size[0], size[1], fps, player)


def _player(path: str, error: str, **options: Any) -> MediaPlayer:
    try:
        return MediaPlayer(path, **options)
    except (av.FFmpegError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise SourceError(error.format(path=path, reason=reason)) from None


def _video_size(path: str) -> Optional[tuple[int, int]]:
    with av.open(path) as container:
        for stream in container.streams.video:
            return stream.codec_context.width, stream.codec_context.height
    return None
