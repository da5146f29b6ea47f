"""``symple stream`` as a real subprocess: a Python viewer watches it, MJPEG, one-line errors."""

from __future__ import annotations

import os
import tempfile

from twisted.internet import defer, reactor
from twisted.web.client import Agent, readBody

from symple_tx.client import SympleClient
from tests.media_support import MediaTestMixin, MultipartReader, boundary_of, require_media
from tests.process_support import PROCESS_WAIT, CliMixin
from tests.support import ServerTestCase, with_timeout


class StreamCommandTests(CliMixin, MediaTestMixin, ServerTestCase):
    timeout = 120

    def setUp(self):
        require_media()
        return super().setUp()

    @defer.inlineCallbacks
    def test_a_viewer_watches_the_command_and_mjpeg_is_announced(self):
        from PIL import Image
        import io
        from symple_tx.media.viewer import MediaViewer
        cli = self.spawn("stream", self.url, "--user", "cam", "--room", "lobby",
                         "--size", "320x240", "--mjpeg-port", "0", "--max-viewers", "1")
        yield cli.stderr_has("MJPEG: http://127.0.0.1:")
        self.assertIn("streaming test pattern 320x240 @ 15 fps as cam|", cli.err_text())
        client = SympleClient(self.url, "viewer", rooms=["lobby"], reconnect=False)
        self.addCleanup(client.disconnect)
        bridge = self.start_bridge()
        viewer = MediaViewer(client, bridge)
        self.addCleanup(viewer.hangup_all)
        yield client.connect()
        cam = yield client.wait_for_peer(lambda p: p["user"] == "cam" and "mjpeg" in
                                         p.get("capabilities", {}), timeout=PROCESS_WAIT)
        caps = cam["capabilities"]
        self.assertEqual((caps["video"], caps["stream"]), (True, True))
        self.assertTrue(caps["mjpeg"].startswith("http://127.0.0.1:"))

        call = yield with_timeout(viewer.watch(f"cam|{cam['id']}"), 30, "the call")
        frame = yield with_timeout(viewer.next_frame(call), 30, "a frame")
        self.assertEqual((frame.width, frame.height), (320, 240))

        response = yield Agent(reactor).request(b"GET", caps["mjpeg"].encode())
        reader = MultipartReader(boundary_of(
            response.headers.getRawHeaders(b"content-type")[0].decode()), 2)
        response.deliverBody(reader)
        parts = yield with_timeout(reader.done, 30, "MJPEG parts")
        self.assertEqual(Image.open(io.BytesIO(parts[0][1])).size, (320, 240))
        yield call.hangup()


class StreamErrorTests(CliMixin, MediaTestMixin, ServerTestCase):
    timeout = 120

    @defer.inlineCallbacks
    def assert_fails(self, expected: str, *options: str, env=None):
        code, stdout, stderr = yield self.run_cli("stream", self.url, "--user", "cam",
                                                  *options, env=env)
        self.assertEqual(code, 1, stderr)
        lines = stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, stderr)
        self.assertIn(expected, lines[0])
        self.assertTrue(lines[0].startswith("symple: "), lines[0])

    def test_a_missing_camera(self):
        require_media()
        return self.assert_fails("no camera at /dev/video97", "--source", "/dev/video97")

    def test_an_unreadable_file(self):
        require_media()
        return self.assert_fails("no such file: /nonexistent/clip.mp4",
                                 "--source", "/nonexistent/clip.mp4")

    def test_a_file_that_is_not_a_video(self):
        require_media()
        with tempfile.NamedTemporaryFile("w", suffix=".mp4", delete=False) as f:
            f.write("not a video")
        self.addCleanup(os.remove, f.name)
        return self.assert_fails(f"cannot open {f.name}", "--source", f.name)

    def test_without_the_media_extra_it_says_what_to_install(self):
        # A directory that shadows aiortc with a module that cannot be imported.
        shadow = tempfile.mkdtemp(prefix="symple-no-aiortc-")
        with open(os.path.join(shadow, "aiortc.py"), "w") as f:
            f.write("raise ImportError('No module named aiortc')\n")
        self.addCleanup(lambda: (os.remove(os.path.join(shadow, "aiortc.py")),
                                 os.rmdir(shadow)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [shadow] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        return self.assert_fails("aiortc not installed: pip install 'symple_tx[media]'",
                                 env=env)

    def test_a_record_directory_that_is_not_one(self):
        require_media()
        return self.assert_fails("--record /nonexistent/dir: not a writable directory",
                                 "--record", "/nonexistent/dir")

    def test_a_taken_mjpeg_port(self):
        require_media()
        return self.assert_fails(f"cannot serve MJPEG on port {self.port}",
                                 "--mjpeg-port", str(self.port))
