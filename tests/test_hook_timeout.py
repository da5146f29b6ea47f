"""Bounded hooks: a join or auth hook that never answers cannot hold a connection."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial import unittest

from symple_tx.config import Settings
from symple_tx.metrics import Metrics
from symple_tx.router import Router
from symple_tx.wire import ProtocolError
from tests.fakes import connect
from tests.support import ServerTestCase

#: Hooks that were called and never answered; a test's cleanup forgets them.
hung: list[Deferred] = []


def never(*args):
    d: Deferred = Deferred()
    hung.append(d)
    return d


async def never_async(*args):
    await never()


class RouterHookTimeoutTests(unittest.TestCase):
    """``Router.join`` on a clock: the hook's answer is awaited ``hook_timeout`` seconds."""

    def setUp(self):
        self.clock = Clock()
        self.addCleanup(hung.clear)

    def router(self, hook, timeout=5.0) -> Router:
        return Router(Settings(join_hook=hook, hook_timeout=timeout), Metrics(), clock=self.clock)

    def test_hung_join_hook_fails_with_504_after_the_timeout(self):
        for hook in (never, never_async):
            router = self.router(hook)
            session, link = connect(router, "alice")
            link.take()
            d = router.join(session, {"type": "join", "room": "slow", "id": "j1"})
            self.clock.advance(4.9)
            self.assertNoResult(d)
            self.clock.advance(0.1)
            error = self.failureResultOf(d, ProtocolError).value
            self.assertEqual(error.status, 504)
            self.assertIn("did not answer within 5 s", error.message)
            self.assertNotIn("slow", router.rooms)
            self.assertEqual(link.take(), [])
            self.assertEqual(router.metrics.registry.get_sample_value(
                "symple_drops_total", {"reason": "hook_timeout"}), 1)

    def test_an_answer_in_time_cancels_the_timer(self):
        answer: Deferred = Deferred()
        router = self.router(lambda peer, room: answer)
        session, link = connect(router, "alice")
        d = router.join(session, {"type": "join", "room": "quick"})
        answer.callback(True)
        self.successResultOf(d)
        self.assertIn("quick", router.rooms)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_zero_waits_for_ever(self):
        router = self.router(never, timeout=0)
        session, _ = connect(router, "alice")
        d = router.join(session, {"type": "join", "room": "slow"})
        self.clock.advance(3600)
        self.assertNoResult(d)
        hung[0].callback(True)
        self.successResultOf(d)


class JoinHookTimeoutTests(ServerTestCase):
    settings = Settings(join_hook=never, hook_timeout=0.2)

    def setUp(self):
        self.addCleanup(hung.clear)
        return super().setUp()

    @defer.inlineCallbacks
    def test_hung_join_is_answered_504_and_later_frames_flow(self):
        alice = yield self.peer("alice")
        alice.send_json({"type": "join", "room": "slow", "id": "j1"})
        # Sent while the join waits: held back, then handled in order.
        alice.send_json({"type": "message", "to": alice.address, "data": "after"})
        error = yield alice.expect("error")
        self.assertEqual((error["status"], error["id"]), (504, "j1"))
        self.assertIn("did not answer within 0.2 s", error["message"])
        frame = yield alice.expect("message")
        self.assertEqual(frame["data"], "after")
        self.assertEqual((yield alice.round_trip()), [])


class AuthHookTimeoutTests(ServerTestCase):
    settings = Settings(auth_hook=never, hook_timeout=0.2)

    def setUp(self):
        self.addCleanup(hung.clear)
        return super().setUp()

    @defer.inlineCallbacks
    def test_hung_auth_hook_closes_with_4504(self):
        peer = yield self.connect()
        peer.send_json({"type": "auth", "user": "alice"})
        error = yield peer.expect("error")
        self.assertEqual(error["status"], 504)
        self.assertIn("auth hook did not answer within 0.2 s", error["message"])
        code, _ = yield peer.wait_closed()
        self.assertEqual(code, 4504)
        self.assertEqual(self.sample("symple_auth_failures_total", status="504"), 1)
