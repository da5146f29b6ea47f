"""``symple_rooms`` and ``/healthz`` ``rooms`` count this process's rooms only."""

from __future__ import annotations

from twisted.trial import unittest

from symple_tx.bus import Bus
from symple_tx.config import Settings
from symple_tx.metrics import Metrics
from symple_tx.router import Router
from symple_tx.session import Identity, Session
from symple_tx.web import Health
from tests.fakes import FakeLink, connect


class Mirroring(Bus):
    """A bus that mirrors sessions of another process (as ``RedisBus`` does)."""

    def __init__(self) -> None:
        self.remote: list[Session] = []

    def remote_sessions(self) -> int:
        return len(self.remote)


class LocalRoomTests(unittest.TestCase):
    def setUp(self):
        self.bus = Mirroring()
        self.router = Router(Settings(), Metrics(), bus=self.bus)

    def mirror(self, user: str, rooms: list[str]) -> Session:
        session = Session(FakeLink(), Identity(user=user, name=user), "10.0.0.9",
                          node="other-process")
        self.bus.remote.append(session)
        self.router.admit(session, [user, *rooms])
        return session

    def counts(self) -> tuple[int, int, float]:
        metric = self.router.metrics.registry.get_sample_value("symple_rooms")
        return (self.router.local_rooms(), Health(self.router).status()[1]["rooms"], metric)

    def test_rooms_only_other_processes_are_in_do_not_count(self):
        connect(self.router, "alice", ["team"])  # rooms: alice, team
        self.assertEqual(self.counts(), (2, 2, 2))
        self.mirror("bob", ["team", "ops"])  # adds bob's user room and ops: not ours
        self.assertEqual(self.counts(), (2, 2, 2))
        self.assertEqual(self.router.room_count(), 4)  # what the process mirrors
        carol, _ = connect(self.router, "carol", ["ops"])
        self.assertEqual(self.counts(), (4, 4, 4))
        self.router.close_session(carol)
        self.assertEqual(self.counts(), (2, 2, 2))
