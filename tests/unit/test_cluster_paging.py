"""A process's state in pages: no message larger than a page, the reader sets the pace.

Redis disconnects a subscriber with more than 32 MiB of pending output, so a
whole state in one message could never reach anyone beyond ~115,000 sessions
(docs/scaling.md).  Two real buses exchange what they publish here in
publication order, as Redis would.
"""

from __future__ import annotations

import orjson
from twisted.trial import unittest

from symple_tx.cluster import redis_bus
from tests.fakes import connect, disconnect
from tests.unit.test_cluster import RecordingBus, state

PAGE = 3


def pump(*buses: RecordingBus) -> list[dict]:
    """Deliver everything published, in order, until nothing is left; the events seen."""
    seen = []
    while any(b.published for b in buses):
        for bus in buses:
            published, bus.published = bus.published, []
            for channel, message in published:
                if message[:1] == b"{":
                    seen.append(orjson.loads(message))
                for other in buses:
                    if other is not bus and channel in (other._control, other.inbox):
                        other.received(channel.encode(), message)
    return seen


def mirrored(bus: RecordingBus, node: str) -> set[str]:
    return set(bus.membership.nodes[node].sessions) if node in bus.membership.nodes else set()


class PagedStateTests(unittest.TestCase):
    def setUp(self):
        self.owner = RecordingBus("owner")
        self.reader = RecordingBus("reader")
        for bus in (self.owner, self.reader):
            bus.sync_page = PAGE
        self.sessions = [connect(self.owner.router, f"u{i}", ["lobby"])[0] for i in range(8)]
        self.watcher, self.link = connect(self.reader.router, "watcher", ["lobby"])
        self.owner.published.clear()
        self.reader.published.clear()

    def ids(self) -> set[str]:
        return {s.id for s in self.sessions if not s.closed}

    def test_a_large_state_comes_in_pages_the_reader_asks_for(self):
        self.owner._sync(self.owner._control, reply=True)
        events = pump(self.owner, self.reader)
        pages = [e for e in events if e["op"] == "state"]
        self.assertEqual([(e["page"], len(e["sessions"]), e["more"]) for e in pages],
                         [(0, 3, True), (1, 3, True), (2, 2, False)])
        self.assertEqual([e["page"] for e in events if e["op"] == "want"], [1, 2])
        self.assertEqual(mirrored(self.reader, "owner"), self.ids())
        # the reply: the reader's own state, small enough for one sync
        self.assertIn(self.watcher.id, mirrored(self.owner, "reader"))
        # each newcomer announced once to the reader's peer, none offline
        frames = [f for f in self.link.take() if f["type"] == "presence"]
        self.assertEqual(sorted(f["data"]["id"] for f in frames if f["data"]["online"]),
                         sorted(self.ids()))
        self.assertEqual([f for f in frames if not f["data"]["online"]], [])
        # the snapshot serves every reader of this state, then is forgotten
        [snap] = self.owner._snapshots
        self.owner.clock.advance(redis_bus.SNAPSHOT_TTL + 1)
        self.owner._sync(self.owner.channels.node("reader"), reply=False)
        self.assertNotIn(snap, self.owner._snapshots)

    def test_the_reader_keeps_a_few_pages_in_flight(self):
        for i in range(8, 20):
            self.sessions.append(connect(self.owner.router, f"u{i}", ["lobby"])[0])
        self.owner.hear(self.owner._control, "beat", "reader")  # they have met
        self.owner.published.clear()
        self.owner._sync(self.owner._control, reply=False)  # 20 sessions: 7 pages

        def step(source, target):
            published, source.published = source.published, []
            for channel, message in published:
                target.received(channel.encode(), message)
            return [orjson.loads(m)["page"] for _, m in published]

        self.assertEqual(step(self.owner, self.reader), [0])
        window = redis_bus.SYNC_WINDOW
        self.assertEqual(step(self.reader, self.owner), list(range(1, 1 + window)))
        self.assertEqual(step(self.owner, self.reader), list(range(1, 1 + window)))
        self.assertEqual(step(self.reader, self.owner), list(range(1 + window, 7)))
        self.assertEqual(step(self.owner, self.reader), list(range(1 + window, 7)))
        self.assertEqual(self.reader.published, [])
        self.assertEqual(mirrored(self.reader, "owner"), self.ids())

    def test_stale_sessions_go_offline_only_once_the_last_page_is_in(self):
        self.owner._sync(self.owner._control, reply=False)
        pump(self.owner, self.reader)
        self.link.take()
        # the reader missed a close (say, during an outage); the owner re-sends its state
        gone = self.sessions[-1]
        disconnect(self.owner.router, gone)
        self.owner.published.clear()
        self.owner._sync(self.owner._control, reply=False)
        first = self.owner.published[:]
        self.owner.published.clear()
        for channel, message in first:
            self.reader.received(channel.encode(), message)
        self.assertIn(gone.id, mirrored(self.reader, "owner"))  # not yet known to be gone
        self.assertEqual(self.link.take(), [])
        pump(self.owner, self.reader)
        self.assertEqual(mirrored(self.reader, "owner"), self.ids())
        [frame] = self.link.take()
        self.assertEqual((frame["data"]["id"], frame["data"]["online"]), (gone.id, False))

    def test_changes_during_the_reading_are_kept(self):
        self.owner._sync(self.owner._control, reply=False)
        first = self.owner.published[:]
        self.owner.published.clear()
        for channel, message in first:
            self.reader.received(channel.encode(), message)
        # between pages: one session of a later page closes, a new one opens
        disconnect(self.owner.router, self.sessions[7])
        newcomer, _ = connect(self.owner.router, "late", ["lobby"])
        self.sessions.append(newcomer)
        pump(self.owner, self.reader)
        self.assertEqual(mirrored(self.reader, "owner"), self.ids())
        self.assertIn(newcomer.id, self.reader.router.sessions)
        self.assertNotIn(self.sessions[7].id, self.reader.router.sessions)

    def test_a_new_reading_replaces_one_in_progress(self):
        self.owner._sync(self.owner._control, reply=False)
        stale = self.owner.published[:]
        self.owner.published.clear()
        for channel, message in stale:
            self.reader.received(channel.encode(), message)
        requests, self.reader.published = self.reader.published, []
        self.owner._sync(self.owner._control, reply=False)  # e.g. the owner reconnected
        pump(self.owner, self.reader)
        # the old reading's request is answered after all: its page changes nothing
        for channel, message in requests:
            self.owner.received(channel.encode(), message)
        pump(self.owner, self.reader)
        self.assertEqual(mirrored(self.reader, "owner"), self.ids())
        self.assertIsNone(self.reader.membership.nodes["owner"].reading)

    def test_a_forgotten_snapshot_starts_the_reading_afresh(self):
        self.reader.hear(self.reader._control, "beat", "owner")
        self.owner.hear(self.owner.inbox, "want", "reader", snap="nope", page=4)
        events = pump(self.owner, self.reader)
        self.assertEqual(events[0]["op"], "state")
        self.assertEqual(events[0]["page"], 0)
        self.assertEqual(mirrored(self.reader, "owner"), self.ids())

    def test_a_small_state_is_one_sync_message_as_before(self):
        for session in self.sessions[PAGE:]:
            disconnect(self.owner.router, session)
        self.owner.published.clear()
        self.owner._sync(self.owner._control, reply=False)
        [(_, message)] = self.owner.published
        event = orjson.loads(message)
        self.assertEqual((event["op"], len(event["sessions"])), ("sync", PAGE))

    def test_pages_with_garbage_are_counted_not_applied(self):
        self.reader.hear(self.reader.inbox, "state", "owner", snap=1, page="x")
        self.reader.hear(self.reader.inbox, "state", "owner", snap="s", page=0, pages=1,
                         sessions=[state("b1", "bob", ["lobby"]), "junk"], more=False)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(self.reader.metrics.invalid._value.get(), 1)
        self.assertEqual(mirrored(self.reader, "owner"), {"b1"})
