"""What the media peer streams: a test pattern with a clock, a looped file, or a V4L2 camera.

A ``MediaSource`` owns one video track (and an audio track when the source
has one) and hands every consumer (each WebRTC viewer, the MJPEG encoder)
its own unbuffered relay subscription, so the source is read once however
many watch, and a slow consumer skips frames instead of queueing them.
Everything here runs on the asyncio loop (see ``bridge``).
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
from aiortc.contrib.media import MediaPlayer, MediaRelay
from aiortc.mediastreams import MediaStreamTrack
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
            from aiortc.mediastreams import MediaStreamError
            raise MediaStreamError
        number = await self._next_time()
        frame = av.VideoFrame.from_image(self.render(number))
        frame.pts = int(number * VIDEO_CLOCK / self.fps)
        frame.time_base = Fraction(1, VIDEO_CLOCK)
        return frame


class MediaSource:
    """One opened source, shared by every viewer through a relay."""

    def __init__(self, video: Optional[MediaStreamTrack], audio: Optional[MediaStreamTrack],
                 description: str, width: int, height: int, fps: float,
                 player: Optional[MediaPlayer] = None) -> None:
        self.video = video
        self.audio = audio
        self.description = description
        self.width, self.height, self.fps = width, height, fps
        self._player = player
        self._relay = MediaRelay()

    def subscribe_video(self) -> Optional[MediaStreamTrack]:
        return self._relay.subscribe(self.video, buffered=False) if self.video else None

    def subscribe_audio(self) -> Optional[MediaStreamTrack]:
        return self._relay.subscribe(self.audio, buffered=False) if self.audio else None

    def stop(self) -> None:
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
    player = _player(path, format="v4l2", options=options)
    if player.video is None:
        raise SourceError(f"{path}: the device has no video stream")
    return MediaSource(player.video, player.audio, f"camera {path}", width, height, fps, player)


def _open_file(path: str, width: int, height: int, fps: float, loop: bool) -> MediaSource:
    if not os.path.exists(path):
        raise SourceError(f"no such file: {path} (--source takes test, a video file "
                          "or /dev/videoN)")
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise SourceError(f"cannot read {path}")
    player = _player(path, loop=loop)
    if player.video is None:
        raise SourceError(f"{path} has no video stream")
    size = _video_size(path) or (width, height)
    return MediaSource(player.video, player.audio, f"file {os.path.basename(path)}",
                       size[0], size[1], fps, player)


def _player(path: str, **options: Any) -> MediaPlayer:
    try:
        return MediaPlayer(path, **options)
    except (av.FFmpegError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise SourceError(f"cannot open {path}: {reason}") from None


def _video_size(path: str) -> Optional[tuple[int, int]]:
    with av.open(path) as container:
        for stream in container.streams.video:
            return stream.codec_context.width, stream.codec_context.height
    return None
