"""The reactor's per-event log context, prebuilt for WebSocket connections (symple_tx.logcontext).

The prefix of every legacy log line must stay what Twisted gives it; only the
way the context is pushed changes, and only for marked connections.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.python import context, log
from twisted.trial import unittest

from symple_tx import logcontext
from tests.support import ServerTestCase


class FakeSelectable:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def logPrefix(self) -> str:
        return self.prefix


def current_system() -> str:
    return context.get(log.ILogContext)["system"]


class Recorded:
    """``log.callWithContext`` with a record of the ``system`` of each call."""

    def __init__(self, case: unittest.TestCase) -> None:
        self.systems: list[str] = []
        original = log.callWithContext

        def recording(ctx: dict, func: Any, *args: Any, **kw: Any) -> Any:
            self.systems.append(ctx.get("system"))
            return original(ctx, func, *args, **kw)
        case.patch(log, "callWithContext", recording)


class CallWithLoggerTests(unittest.TestCase):
    def setUp(self) -> None:
        logcontext.install()
        self.calls = Recorded(self)

    def test_a_marked_selectable_gets_its_prefix_without_rebuilding_the_context(self):
        selectable = FakeSelectable("Proto,7,10.0.0.1")
        logcontext.mark(selectable)
        seen = [log.callWithLogger(selectable, current_system) for _ in range(3)]
        self.assertEqual(seen, ["Proto,7,10.0.0.1"] * 3)
        self.assertEqual(self.calls.systems, [])
        self.assertEqual(current_system(), "-")  # popped again

    def test_an_unmarked_selectable_takes_twisteds_path(self):
        selectable = FakeSelectable("Other,1,10.0.0.2")
        self.assertEqual(log.callWithLogger(selectable, current_system), "Other,1,10.0.0.2")
        self.assertEqual(self.calls.systems, ["Other,1,10.0.0.2"])

    def test_a_changed_prefix_is_honoured(self):
        selectable = FakeSelectable("Proto,7,10.0.0.1")
        logcontext.mark(selectable)
        log.callWithLogger(selectable, current_system)
        selectable.prefix = "Proto,7,10.0.0.9"
        self.assertEqual(log.callWithLogger(selectable, current_system), "Proto,7,10.0.0.9")

    def test_inside_another_context_twisteds_path_runs(self):
        selectable = FakeSelectable("Proto,7,10.0.0.1")
        logcontext.mark(selectable)
        log.callWithLogger(selectable, current_system)
        nested = log.callWithContext({"system": "outer", "extra": 1}, log.callWithLogger,
                                     selectable, lambda: context.get(log.ILogContext))
        self.assertEqual((nested["system"], nested["extra"]), ("Proto,7,10.0.0.1", 1))

    def test_an_error_is_logged_with_the_prefix(self):
        selectable = FakeSelectable("Proto,7,10.0.0.1")
        logcontext.mark(selectable)
        events: list[dict] = []
        log.addObserver(events.append)
        self.addCleanup(log.removeObserver, events.append)

        def boom() -> None:
            raise ValueError("boom")
        for _ in range(2):  # the first call builds the context, the second reuses it
            self.assertIsNone(log.callWithLogger(selectable, boom))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)
        self.assertEqual([e["system"] for e in events if e.get("isError")],
                         ["Proto,7,10.0.0.1"] * 2)
        self.assertEqual(current_system(), "-")


class ConnectionEventTests(ServerTestCase):
    """Over real sockets: a WebSocket connection's events reuse their context, prefix intact."""

    @defer.inlineCallbacks
    def test_frames_are_handled_in_the_connections_context_built_once(self):
        peer = yield self.connect()
        yield peer.auth("alice")
        link = self.server.router.sessions[peer.session_id].link
        prefix = link.transport.logPrefix()
        seen: list[str] = []
        route = self.server.router.route

        def recording_route(session: Any, frame: dict) -> None:
            seen.append(current_system())
            route(session, frame)
        self.patch(self.server.router, "route", recording_route)
        calls = Recorded(self)
        for _ in range(3):
            yield peer.round_trip()
        self.assertEqual(seen, [prefix] * 3)
        self.assertNotIn(prefix, calls.systems)
        # The client's connection is not the server's: Twisted's own path.
        self.assertIn(peer.transport.logPrefix(), calls.systems)
