"""MJPEG over HTTP from the media peer: real sockets, real JPEG encoding of the test pattern."""

from __future__ import annotations

import io
import socket

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest
from twisted.web.client import Agent, readBody

from tests.media_support import (MediaTestMixin, MultipartReader, boundary_of, require_media,
                                 wait_until)
from tests.support import with_timeout


class MJPEGTestCase(MediaTestMixin, unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def serve(self, source=None, **options):
        """An MJPEG stream of ``source`` (the 320x240 test pattern) on a loopback port."""
        require_media()
        from symple_tx.media.mjpeg import MJPEGStream
        from symple_tx.media.sources import open_source
        self.bridge = self.start_bridge()
        if source is None:
            source = yield self.bridge.run(_open(open_source, "test", 320, 240, 15))
        self.source = source
        self.stream = MJPEGStream(source, self.bridge, **options)
        yield self.stream.listen(0, "127.0.0.1")
        self.addCleanup(self.stream.stop)
        self.base = f"http://127.0.0.1:{self.stream.port.getHost().port}/"
        return self.stream

    @defer.inlineCallbacks
    def read_parts(self, count: int):
        response = yield Agent(reactor).request(b"GET", (self.base + "stream.mjpg").encode())
        self.assertEqual(response.code, 200)
        content_type = response.headers.getRawHeaders(b"content-type")[0].decode()
        reader = MultipartReader(boundary_of(content_type), count)
        response.deliverBody(reader)
        parts = yield with_timeout(reader.done, 20, f"{count} MJPEG parts")
        return response, parts


async def _open(open_source, *args):
    return open_source(*args)


class StreamTests(MJPEGTestCase):
    @defer.inlineCallbacks
    def test_parts_are_jpegs_of_the_announced_size(self):
        from PIL import Image
        stream = yield self.serve(fps=10, quality=60)
        response, parts = yield self.read_parts(4)
        self.assertEqual(response.headers.getRawHeaders(b"x-resolution"), [b"320x240"])
        images = []
        for headers, payload in parts:
            self.assertEqual(headers["content-type"], "image/jpeg")
            self.assertEqual(int(headers["content-length"]), len(payload))
            image = Image.open(io.BytesIO(payload))
            self.assertEqual(image.format, "JPEG")
            self.assertEqual(image.size, (stream.width, stream.height))
            image.load()  # the whole JPEG decodes, not just its header
            images.append(payload)
        self.assertEqual(len(set(images)), len(images), "every part is a new frame (the clock)")
        self.assertEqual(stream.url("127.0.0.1"), self.base + "stream.mjpg")

    @defer.inlineCallbacks
    def test_encoding_stops_when_the_last_viewer_leaves(self):
        stream = yield self.serve()
        yield self.read_parts(2)
        yield wait_until(lambda: not stream.viewers, "the viewer to be gone")
        self.assertIsNone(stream._pump)

    @defer.inlineCallbacks
    def test_snapshot_is_one_jpeg(self):
        from PIL import Image
        yield self.serve()
        response = yield Agent(reactor).request(b"GET", (self.base + "snapshot.jpg").encode())
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"image/jpeg"])
        body = yield readBody(response)
        self.assertEqual(Image.open(io.BytesIO(body)).size, (320, 240))

    @defer.inlineCallbacks
    def test_viewers_beyond_the_limit_are_refused_with_the_reason(self):
        stream = yield self.serve(max_viewers=1)
        yield self.read_parts(1)  # the viewer is gone again after reading
        yield wait_until(lambda: not stream.viewers, "the first viewer to leave")
        first, _ = yield self.read_parts(1)  # and the next one may come
        yield wait_until(lambda: not stream.viewers, "the second viewer to leave")
        first = yield Agent(reactor).request(b"GET", (self.base + "stream.mjpg").encode())
        self.assertEqual(first.code, 200)
        reader = MultipartReader(boundary_of(
            first.headers.getRawHeaders(b"content-type")[0].decode()), 10**6)
        first.deliverBody(reader)  # reads until the end of the test
        reader.done.addErrback(lambda _: None)
        second = yield Agent(reactor).request(b"GET", (self.base + "stream.mjpg").encode())
        self.assertEqual(second.code, 503)
        body = yield readBody(second)
        self.assertIn(b"viewer limit reached (1)", body)
        self.assertEqual(len(stream.viewers), 1)
        reader.transport.stopProducing()

    def test_bad_settings_are_refused(self):
        require_media()
        from symple_tx.media.mjpeg import MJPEGStream
        from symple_tx.media.sources import MediaSource
        source = MediaSource(None, None, "none", 320, 240, 15)
        with self.assertRaisesRegex(ValueError, "quality must be 1-95"):
            MJPEGStream(source, None, quality=0)
        with self.assertRaisesRegex(ValueError, "frame rate must be positive"):
            MJPEGStream(source, None, fps=0)


class SlowViewerTests(MJPEGTestCase):
    """A viewer that stops reading costs at most one frame beyond its socket buffers."""

    FRAME = 100_000

    def stalled_viewer(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", self.stream.port.getHost().port))
        sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        self.addCleanup(sock.close)
        return sock  # and never read from it

    @defer.inlineCallbacks
    def test_a_viewer_that_stops_reading_drops_frames_and_holds_no_more(self):
        from symple_tx.media.sources import MediaSource
        # No video track: the test publishes the JPEGs itself, one per reactor turn.
        stream = yield self.serve(MediaSource(None, None, "synthetic", 320, 240, 15))
        self.stalled_viewer()
        viewer = yield wait_until(lambda: next(iter(stream.viewers), None), "the viewer")
        frame = 0

        @defer.inlineCallbacks
        def publish(count: int):
            nonlocal frame
            for _ in range(count):
                frame += 1
                stream.publish(bytes([frame % 256]) * self.FRAME)
                yield deferLater(reactor, 0.002, lambda: None)  # the reactor writes

        while not viewer.paused:
            self.assertLess(frame, 1000, "the stalled connection never filled up")
            yield publish(1)
        transport = viewer.request.channel.transport
        written, sent, dropped = viewer.written_bytes, viewer.sent, viewer.dropped
        yield publish(50)
        self.assertTrue(viewer.paused)
        # Each of the 50 was written (only while the kernel took some), dropped, or is the
        # one kept waiting; the kernel's buffers cannot take more than a few.
        sent, dropped = viewer.sent - sent, viewer.dropped - dropped
        newest = bytes([frame % 256]) * self.FRAME
        if viewer.waiting is None:
            # The kernel took some after the last publish: resuming wrote the held frame
            # (and, a whole frame being over the buffer size, paused again).
            self.assertGreater(sent, 0)
            self.assertEqual(sent + dropped, 50)
        else:
            self.assertEqual(viewer.waiting, newest)  # only the newest is kept
            self.assertEqual(sent + dropped + 1, 50)
        self.assertLessEqual(sent, 3)
        self.assertLessEqual(viewer.written_bytes - written, 3 * (self.FRAME + 200))
        queued = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        self.assertLess(queued, 3 * self.FRAME + transport.bufferSize)
        # Everyone else is unaffected: a new viewer gets the frames published after it came.
        response = yield Agent(reactor).request(b"GET", (self.base + "stream.mjpg").encode())
        reader = MultipartReader(boundary_of(
            response.headers.getRawHeaders(b"content-type")[0].decode()), 3)
        response.deliverBody(reader)
        yield wait_until(lambda: len(stream.viewers) == 2, "the second viewer")
        yield publish(2)
        parts = yield with_timeout(reader.done, what="the healthy viewer's parts")
        self.assertEqual([len(p) for _, p in parts], [self.FRAME] * 3)
        self.assertEqual(parts[-1][1][:1], bytes([frame % 256]))
