"""Loopback test cases shared by several modules: who received a routed frame, error frames."""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer

from symple_tx.config import Settings
from tests.support import ServerTestCase, TestPeer


def of_kind(frames: list[dict], kind: str, **fields: Any) -> list[dict]:
    """The frames of type ``kind`` whose fields include ``fields``."""
    return [f for f in frames
            if f.get("type") == kind and all(f.get(k) == v for k, v in fields.items())]


class RoutingCase(ServerTestCase):
    """Peers in chosen rooms, and a way to see exactly who received a frame."""

    settings = Settings(rate_limit=100_000)

    @defer.inlineCallbacks
    def peers_in(self, **rooms_by_user: list[str]):
        """Authenticate one peer per keyword (user -> rooms); presence so far is discarded."""
        peers = {}
        for user, rooms in rooms_by_user.items():
            peers[user] = yield self.peer(user, rooms=rooms)
        yield self.collect(*peers.values())
        return peers

    @defer.inlineCallbacks
    def deliver(self, sender: TestPeer, frame: dict, peers: dict[str, TestPeer]):
        """Send ``frame``; fires with ``{user: [copies received]}`` and the sender's errors."""
        sender.send_json(frame)
        got = yield self.collect(sender, *(p for p in peers.values() if p is not sender))
        by_user = {}
        for user, peer in peers.items():
            by_user[user] = of_kind(got[peer], frame["type"], subtype=frame.get("subtype"))
        return by_user, of_kind(got[sender], "error")

    @defer.inlineCallbacks
    def assert_reaches(self, sender: TestPeer, frame: dict, peers: dict[str, TestPeer],
                       expected: set[str]):
        """Exactly the users in ``expected`` receive ``frame``, each exactly once."""
        got, errors = yield self.deliver(sender, frame, peers)
        counts = {user: len(frames) for user, frames in got.items()}
        self.assertEqual(counts, {user: int(user in expected) for user in peers},
                         f"delivery of {frame!r}")
        self.assertEqual(errors, [])
        return got


class ErrorCase(ServerTestCase):
    """Helpers to assert an ``error`` frame and what happens to the connection after it."""

    def assert_error(self, frame: dict, status: int, message: Optional[str] = None,
                     frame_id: Any = None) -> None:
        self.assertEqual(frame["type"], "error", frame)
        self.assertEqual(frame["status"], status, frame)
        self.assertIsInstance(frame["message"], str)
        self.assertTrue(frame["message"].strip(), "error message is empty")
        if message is not None:
            self.assertIn(message, frame["message"])
        if frame_id is not None:
            self.assertEqual(frame.get("id"), frame_id)

    @defer.inlineCallbacks
    def assert_closes(self, peer: TestPeer, status: int, message: Optional[str] = None,
                      frame_id: Any = None):
        """The next frame is ``error`` ``status``, then the server closes with 4000+status."""
        frame = yield peer.next("error frame")
        self.assert_error(frame, status, message, frame_id)
        code, _ = yield peer.wait_closed()
        self.assertEqual(code, 4000 + status)
        self.assertEqual(peer.received, [frame], "nothing follows a fatal error")
        return frame

    @defer.inlineCallbacks
    def refused_at_auth(self, first: dict, status: int, message: Optional[str] = None):
        """A fresh connection whose first frame is ``first`` is refused and closed."""
        peer = yield self.connect()
        peer.send_json(first)
        # A follow-up on a doomed connection must not be processed either.
        peer.send_json({"type": "message", "data": "after"})
        frame = yield self.assert_closes(peer, status, message, first.get("id"))
        return frame

    @defer.inlineCallbacks
    def assert_stays_open(self, peer: TestPeer):
        """The connection still routes (a round trip through the server works)."""
        frames = yield peer.round_trip()
        self.assertIsNone(peer.close_code)
        return frames
