"""Frames that arrive while an auth or join hook decides are held as bytes, and bounded.

Frames of a connection are handled strictly in order, so while an asynchronous
step runs (a slow auth hook, a Redis lookup) later frames wait.  They used to
wait decoded and without bound: 60 frames of 60 KiB of ``[[],[],...]`` held
~80 MB of Python lists before the connection was even authenticated.
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from symple_tx.config import Settings
from tests.adversarial.support import RawTestCase
from tests.support import eventually

LIMIT = Settings().max_message_size
GATE: list[defer.Deferred] = []


def pending_hook(request) -> defer.Deferred:
    """Decides when the test says so."""
    d: defer.Deferred = defer.Deferred()
    GATE.append(d)
    return d


class BacklogTests(RawTestCase):
    settings = Settings(authentication=True, auth_hook=pending_hook)

    def setUp(self):
        GATE.clear()
        return super().setUp()

    @defer.inlineCallbacks
    def test_frames_behind_a_slow_auth_are_bounded_and_all_answered(self):
        peer = yield self.connect()
        peer.send_json({"type": "auth", "user": "alice", "token": "t"})
        frame = b"[" + b"[]," * (60_000 // 3) + b"[]]"
        for _ in range(60):
            peer.send_raw(frame)
        [link] = self.server.router.links
        yield eventually(lambda: GATE and link._held, what="reading held back")
        worst = 0
        for _ in range(10):
            worst = max(worst, link._backlog_bytes)
            yield deferLater(reactor, 0.02, lambda: None)
        self.assertTrue(link._held)
        self.assertLessEqual(worst, 3 * LIMIT)
        GATE[0].callback({"user": "alice"})
        yield peer.expect("welcome")
        errors = []
        for _ in range(60):
            error = yield peer.expect("error")
            errors.append(error["status"])
        self.assertEqual(errors, [400] * 60)
        self.assertFalse(link._held)
        self.assertEqual(link._backlog_bytes, 0)
