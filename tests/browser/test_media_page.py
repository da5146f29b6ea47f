"""The demo page watches the Python media peer: real Chromium, real server, real aiortc peer.

The peer (test pattern, 640x480, 15 fps) runs in this process on the asyncio
bridge's loop thread; the pages drive the Watch button like a person would.
"""

from __future__ import annotations

import time

from twisted.internet import defer

from symple_tx.client import SympleClient
from tests.browser.support import Page, artifact_path
from tests.browser.test_demo_page import ICE_CONNECTED, DemoPageTestCase
from tests.media_support import MediaTestMixin, require_media
from tests.process_support import CliMixin

WATCH = '#roster li[data-user="cam"] button[data-action="watch"]'
MJPEG = '#roster li[data-user="cam"] button[data-action="mjpeg"]'


async def _open_test_pattern():
    from symple_tx.media.sources import open_source
    return open_source("test", 640, 480, 15)


async def _stop(source):
    source.stop()


class WatchTestCase(MediaTestMixin, DemoPageTestCase):
    timeout = 150
    max_viewers = 2
    #: Record what callers send (into a temporary directory).
    record = False

    @defer.inlineCallbacks
    def setUp(self):
        require_media()
        yield super().setUp()
        from symple_tx.media.mjpeg import MJPEGStream
        from symple_tx.media.peer import MediaPeer
        self.bridge = self.start_bridge()
        source = yield self.bridge.run(_open_test_pattern())
        self.addCleanup(lambda: self.bridge.run(_stop(source)))
        self.mjpeg = MJPEGStream(source, self.bridge, fps=10)
        yield self.mjpeg.listen(0, "127.0.0.1")
        self.addCleanup(self.mjpeg.stop)
        client = SympleClient(self.url, "cam", name="Camera", rooms=["demo"], reconnect=False)
        self.addCleanup(client.disconnect)
        self.record_dir = None
        if self.record:
            import shutil
            import tempfile
            self.record_dir = tempfile.mkdtemp(prefix="symple-record-")
            self.addCleanup(shutil.rmtree, self.record_dir, True)
        self.media = MediaPeer(client, source, bridge=self.bridge, max_viewers=self.max_viewers,
                               mjpeg_url=self.mjpeg.url("127.0.0.1"), record_dir=self.record_dir)
        self.addCleanup(self.media.stop)
        yield client.connect()

    def open_watchers(self, *users: str) -> list[Page]:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor() as pool:
            pages = list(pool.map(self.open_page, users))
        for page in pages:
            page.wait_state(conn="online")
            page.wait(lambda p: p.js(f"return Boolean(document.querySelector('{WATCH}')"
                                     "?.offsetParent)"), "cam's Watch button")
        return pages

    def served(self) -> list[tuple[str, str, bool]]:
        """The media peer's calls: (state, remote user, receive-only)."""
        return self.on_reactor(lambda: [(c.state, c.remote.partition("|")[0], c.receive_only)
                                        for c in self.media.viewers])

    def wait_served(self, page: Page, expected: list, what: str) -> None:
        page.wait(lambda p: sorted(self.served()) == sorted(expected), what)

    def watch(self, page: Page) -> float:
        """Click Watch; wait for ICE connected and a playing video. Seconds to the first frame."""
        started = time.monotonic()
        page.click(WATCH)
        page.wait(lambda p: p.video("remote-video")["width"] > 0, "the first video frame")
        first_frame = time.monotonic() - started
        page.wait_state(call="in-call", ice=ICE_CONNECTED, callMode="watch")
        self.assert_receiving_video(page)
        return first_frame


class WatchTests(WatchTestCase):
    def test_the_page_watches_the_python_peer_and_hangs_up(self):
        def scenario():
            [alice] = self.open_watchers("alice")
            [cam] = [e for e in alice.roster() if e["user"] == "cam"]
            self.assertEqual(cam["name"], "Camera")
            self.assertEqual(sorted(cam["caps"]), ["mjpeg", "stream", "video"])
            self.assertFalse(alice.visible('#roster li[data-user="cam"] '
                                           'button[data-action="call"]'))
            first_frame = self.watch(alice)
            video = alice.video("remote-video")
            self.assertEqual((video["width"], video["height"]), (640, 480))
            self.assertEqual(alice.text("#call-status"), "Watching Camera")
            self.assertFalse(alice.visible("#local-video"))
            self.wait_served(alice, [("in-call", "alice", True)], "the peer's side in-call")
            alice.driver.set_window_size(1280, 800)  # the whole call panel
            alice.screenshot("media-watch")
            with open(artifact_path("media-watch-timing.txt"), "w") as f:
                f.write(f"click Watch -> first frame in <video>: {first_frame:.2f} s\n")

            alice.click("#hangup")
            alice.wait_state(callEnd="hangup")
            self.wait_served(alice, [], "the peer's side to end")
            alice.wait_state(call="idle", ice="new", callMode="")
            self.assertFalse(alice.video("remote-video")["hasStream"])
        return self.in_browser(scenario)

    def test_the_peer_hangs_up_and_the_page_can_watch_again(self):
        def scenario():
            [alice] = self.open_watchers("alice")
            self.watch(alice)
            self.on_reactor(self.media.stop)
            alice.wait_state(callEnd="remote-hangup")
            alice.wait_state(call="idle")
            self.assertEqual(self.served(), [])
            self.watch(alice)
            self.wait_served(alice, [("in-call", "alice", True)], "watching again")
        return self.in_browser(scenario)

    def test_two_pages_watch_at_once_and_a_third_is_told_busy(self):
        def scenario():
            alice, bob, carol = self.open_watchers("alice", "bob", "carol")
            self.watch(alice)
            self.watch(bob)
            self.wait_served(alice, [("in-call", "alice", True), ("in-call", "bob", True)],
                             "two viewers")
            carol.click(WATCH)
            carol.wait_state(callEnd="busy")
            self.assertIn("they are busy", carol.text("#call-status"))
            carol.wait_state(call="idle")
            for page in (alice, bob):  # still playing
                self.assert_receiving_video(page)
                self.assertEqual(page.state()["call"], "in-call")
            bob.click("#hangup")
            self.wait_served(alice, [("in-call", "alice", True)], "bob's slot to free up")
            self.watch(carol)
        return self.in_browser(scenario)

    def test_the_mjpeg_view_shows_the_stream(self):
        def scenario():
            [alice] = self.open_watchers("alice")
            alice.click(MJPEG)
            state = alice.wait_state(mjpeg=self.mjpeg.url("127.0.0.1"))
            self.assertTrue(state["mjpeg"].endswith("/stream.mjpg"))
            alice.wait(lambda p: p.js("return document.getElementById('mjpeg-view')"
                                      ".naturalWidth") == 640, "an MJPEG frame in the <img>")
            alice.wait(lambda p: self.on_reactor(lambda: len(self.mjpeg.viewers)) == 1,
                       "the MJPEG viewer")
            alice.click("#mjpeg-close")
            alice.wait(lambda p: self.on_reactor(lambda: len(self.mjpeg.viewers)) == 0,
                       "the MJPEG stream to close")
        return self.in_browser(scenario)


class RecordTests(WatchTestCase):
    record = True

    def test_a_caller_with_a_camera_is_answered_and_recorded(self):
        import os

        import av

        def scenario():
            [alice] = self.open_watchers("alice")
            [cam] = [e for e in alice.roster() if e["user"] == "cam"]
            # The page has no Call button for a stream-only peer; the API places a full call.
            alice.js("window.demo.calls.call(arguments[0])", f"cam|{cam['id']}")
            alice.wait_state(call="in-call", ice=ICE_CONNECTED, callMode="call")
            self.assert_receiving_video(alice, "remote-video")
            self.assert_receiving_video(alice, "local-video")
            self.wait_served(alice, [("in-call", "alice", False)], "the peer's side")
            [served] = self.on_reactor(lambda: self.media.viewers)
            alice.wait(lambda p: self.on_reactor(lambda: served._recorder.frames) >= 10,
                       "ten video frames recorded", timeout=60)
            alice.click("#hangup")
            # ended fires once the connection is closed and the recording finished.
            alice.wait(lambda p: self.on_reactor(lambda: served.ended.called),
                       "the call to end and its recording to close")
            self.assertEqual(served.recording, os.path.join(self.record_dir, os.listdir(
                self.record_dir)[0]))
            [name] = os.listdir(self.record_dir)
            self.assertTrue(name.startswith("alice-") and name.endswith(".webm"), name)
            with av.open(os.path.join(self.record_dir, name)) as container:
                frames = list(container.decode(video=0))
            self.assertGreaterEqual(len(frames), 10)
            self.assertEqual((frames[-1].width, frames[-1].height), (640, 480))
        return self.in_browser(scenario)


class StreamCommandPageTests(CliMixin, DemoPageTestCase):
    """What a user does: ``symple stream`` on the server, then Watch in the demo page."""

    def test_the_page_watches_symple_stream(self):
        require_media()
        cli = self.spawn("stream", self.url, "--user", "cam", "--room", "demo",
                             "--max-viewers", "1")

        def scenario():
            self.on_reactor(cli.stderr_has, "streaming test pattern 640x480 @ 15 fps")
            page = self.open_page("alice")
            page.wait_state(conn="online")
            page.wait(lambda p: p.js(f"return Boolean(document.querySelector('{WATCH}')"
                                     "?.offsetParent)"), "cam's Watch button")
            page.click(WATCH)
            page.wait_state(call="in-call", ice=ICE_CONNECTED, callMode="watch")
            self.assert_receiving_video(page)
            self.assertEqual(page.video("remote-video")["width"], 640)
            page.click("#hangup")
            page.wait_state(call="idle")
        return self.in_browser(scenario)
