"""Media sources: the test pattern, looped files, camera devices, and their one-line errors."""

from __future__ import annotations

import os
import tempfile

from twisted.internet import defer
from twisted.trial import unittest

from tests.media_support import MediaTestMixin, require_media


def write_clip(path: str, frames: int = 6, size: tuple[int, int] = (160, 120),
               audio: bool = False) -> None:
    """A tiny MPEG-4 clip (with silent AAC sound if ``audio``), so file tests need no fixture."""
    import av
    from PIL import Image
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        streams = [stream]
        if audio:  # every stream before the first packet
            sound = container.add_stream("aac", rate=48000)
            streams.append(sound)
        for i in range(frames):
            image = Image.new("RGB", size, (i * 40 % 256, 0, 0))
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        if audio:
            for i in range(frames * 2):
                chunk = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
                chunk.sample_rate = 48000
                chunk.pts = i * 1024
                for plane in chunk.planes:
                    plane.update(bytes(plane.buffer_size))
                for packet in sound.encode(chunk):
                    container.mux(packet)
        for each in streams:
            for packet in each.encode():
                container.mux(packet)


class SourceTests(MediaTestMixin, unittest.TestCase):
    timeout = 30

    def setUp(self):
        require_media()
        self.bridge = self.start_bridge()
        self.dir = tempfile.mkdtemp(prefix="symple-media-")
        self.addCleanup(lambda: [os.remove(os.path.join(self.dir, f))
                                 for f in os.listdir(self.dir)] and os.rmdir(self.dir))

    def on_loop(self, function, *args):
        async def call():
            return await function(*args) if _is_coroutine(function) else function(*args)
        return self.bridge.run(call())

    def open(self, spec: str, **options):
        from symple_tx.media.sources import open_source
        return self.on_loop(lambda: open_source(spec, **options))

    @defer.inlineCallbacks
    def frames(self, source, count: int):
        async def read():
            track = source.subscribe_video()
            try:
                return [await track.recv() for _ in range(count)]
            finally:
                track.stop()
                source.stop()
        frames = yield self.bridge.run(read())
        return frames

    @defer.inlineCallbacks
    def test_test_pattern_frames_have_the_size_and_advance(self):
        source = yield self.open("test", width=320, height=240, fps=30)
        self.assertEqual(source.description, "test pattern 320x240 @ 30 fps")
        frames = yield self.frames(source, 3)
        self.assertEqual({(f.width, f.height) for f in frames}, {(320, 240)})
        # 90 kHz clock at 30 fps: multiples of 3000, increasing (a busy reader may skip one).
        pts = [f.pts for f in frames]
        self.assertEqual(pts, sorted(set(pts)))
        self.assertEqual([p % 3000 for p in pts], [0, 0, 0])

    @defer.inlineCallbacks
    def test_subscribers_get_their_own_copy_of_each_frame(self):
        source = yield self.open("test", width=64, height=48, fps=30)

        async def two():
            a, b = source.subscribe_video(), source.subscribe_video()
            import asyncio
            fa, fb = await asyncio.gather(a.recv(), b.recv())
            a.stop(), b.stop(), source.stop()
            return fa, fb
        fa, fb = yield self.bridge.run(two())
        self.assertIsNot(fa, fb)
        self.assertEqual(fa.pts, fb.pts)
        self.assertEqual([bytes(p) for p in fa.planes], [bytes(p) for p in fb.planes])

    @defer.inlineCallbacks
    def test_a_file_loops(self):
        path = os.path.join(self.dir, "clip.mp4")
        write_clip(path, frames=6)
        source = yield self.open(path)
        self.assertEqual((source.width, source.height), (160, 120))
        self.assertEqual(source.description, "file clip.mp4")
        self.assertIsNone(source.audio)
        frames = yield self.frames(source, 14)  # more than the clip has
        self.assertEqual(len(frames), 14)

    @defer.inlineCallbacks
    def test_a_file_with_sound_has_an_audio_track_too(self):
        import av
        path = os.path.join(self.dir, "talk.mp4")
        write_clip(path, frames=6, audio=True)
        source = yield self.open(path)
        self.assertIsNotNone(source.audio)

        async def sound():
            a, b = source.subscribe_audio(), source.subscribe_audio()
            try:
                return [await a.recv(), await b.recv()]
            finally:
                a.stop(), b.stop(), source.stop()
        first, second = yield self.bridge.run(sound())
        self.assertIsInstance(first, av.AudioFrame)
        self.assertIsNot(first, second)  # each subscriber its own copy
        self.assertEqual(first.sample_rate, 48000)

    @defer.inlineCallbacks
    def test_errors_are_one_line_and_say_what_is_wrong(self):
        from symple_tx.media.sources import SourceError
        not_video = os.path.join(self.dir, "notes.txt")
        with open(not_video, "w") as f:
            f.write("not a video\n")
        cases = {
            "/dev/video-missing": "no camera at /dev/video-missing",
            "/dev/null": "/dev/null: not a usable camera",  # a character device, but no camera
            os.path.join(self.dir, "missing.mp4"): "no such file",
            self.dir: "cannot read",
            not_video: "cannot open",
        }
        for spec, expected in cases.items():
            try:
                yield self.open(spec)
            except SourceError as exc:
                self.assertIn(expected, str(exc))
                self.assertNotIn("\n", str(exc))
            else:
                self.fail(f"{spec} opened")


def _is_coroutine(function) -> bool:
    import inspect
    return inspect.iscoroutinefunction(function)


class RequireMediaTests(unittest.TestCase):
    """Without the extra the media tests skip locally and fail in CI."""

    def test_missing_extra_skips_or_fails_as_the_environment_says(self):
        from unittest import mock

        from symple_tx.media import MediaUnavailable
        missing = MediaUnavailable("aiortc not installed: pip install 'symple_tx[media]'")
        with mock.patch("symple_tx.media.require", side_effect=missing):
            with mock.patch.dict(os.environ, {"SYMPLE_REQUIRE_MEDIA": ""}):
                self.assertRaises(unittest.SkipTest, require_media)
            with mock.patch.dict(os.environ, {"SYMPLE_REQUIRE_MEDIA": "1"}):
                with self.assertRaisesRegex(AssertionError, "media tests required"):
                    require_media()

    def test_require_names_the_extra(self):
        from unittest import mock

        from symple_tx.media import MediaUnavailable, require
        real = __import__

        def no_av(name, *args, **kwargs):
            if name == "av":
                raise ImportError("No module named 'av'")
            return real(name, *args, **kwargs)
        with mock.patch("importlib.import_module",
                        side_effect=lambda name: no_av(name)):
            with self.assertRaisesRegex(MediaUnavailable,
                                        r"^av not installed: pip install 'symple_tx\[media\]'$"):
                require()
