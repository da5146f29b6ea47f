"""Recording what a caller sends (``--record DIR``) to WebM: VP8 video, Opus sound.

aiortc's MediaRecorder sizes its video stream from the first video frame, but
the container writes its header with the first packet of any stream, and
sound usually comes first; the video then never encodes.  This recorder adds
every stream, sized, before it writes anything, and encodes on a worker
thread (libvpx in real-time mode), so recording never stalls the loop that
serves the viewers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Optional

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from twisted.logger import Logger

log = Logger()


class Recorder:
    """Records one video and one audio track (either may be missing) to a WebM file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.video: Optional[MediaStreamTrack] = None
        self.audio: Optional[MediaStreamTrack] = None
        self.frames = 0
        self._task: Optional[asyncio.Task] = None
        self._container: Any = None
        self._streams: list[Any] = []
        #: One worker thread: encodes, and the final flush, never overlap (libvpx and
        #: Opus contexts are not thread-safe).
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="symple-record")

    def add_track(self, track: MediaStreamTrack) -> bool:
        """Take the first video and the first audio track; False for any other."""
        if track.kind == "video" and self.video is None:
            self.video = track
        elif track.kind == "audio" and self.audio is None:
            self.audio = track
        else:
            return False
        return True

    def start(self) -> None:
        if self._task is None and (self.video or self.audio):
            self._task = asyncio.ensure_future(self._record())

    async def _record(self) -> None:
        first = None
        if self.video is not None:
            try:
                first = await self.video.recv()
            except MediaStreamError:
                return
        self._container = av.open(self.path, "w", format="webm")
        jobs = []
        if first is not None:
            stream = self._container.add_stream("libvpx", rate=30, options={
                "deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"})
            stream.width, stream.height, stream.pix_fmt = first.width, first.height, "yuv420p"
            stream.bit_rate = 1_500_000
            self._streams.append(stream)
            jobs.append(self._copy(self.video, stream, first))
        if self.audio is not None:
            stream = self._container.add_stream("libopus", rate=48000)
            self._streams.append(stream)
            jobs.append(self._copy(self.audio, stream, None))
        await asyncio.gather(*jobs)

    async def _copy(self, track: Any, stream: Any, first: Any) -> None:
        loop = asyncio.get_running_loop()
        frame = first
        while True:
            if frame is None:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
            for packet in await loop.run_in_executor(self._executor, stream.encode, frame):
                self._container.mux(packet)
            if stream.type == "video":
                self.frames += 1
            frame = None

    async def stop(self) -> None:
        """Finish the file (flush the encoders, write the index)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._container is not None:
            container, self._container = self._container, None
            # On the worker thread, so after any encode still running there.
            await asyncio.get_running_loop().run_in_executor(
                self._executor, _finish, container, self._streams)
        self._executor.shutdown(wait=False)


def _finish(container: Any, streams: list[Any]) -> None:
    try:
        for stream in streams:
            for packet in stream.encode(None):
                container.mux(packet)
    finally:
        container.close()
