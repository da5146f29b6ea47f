"""The transport's timers on simulated time: auth timeout, keepalive, rate refill.

The server is the real one (factory, Autobahn, router); only the sockets are
``iosim`` and the clock a ``MemoryReactorClock`` (tests/memory_support.py), so
each timer is checked at its edge instead of by waiting for it.
"""

from __future__ import annotations

from typing import Callable

from symple_tx.config import Settings
from tests.memory_support import MemoryServerCase
from tests.support import TestPeer


def of_type(peer: TestPeer, kind: str) -> list[dict]:
    return [f for f in peer.received if f.get("type") == kind]


def offline_of(peer: TestPeer) -> Callable[[dict], bool]:
    return lambda f: (f.get("type") == "presence" and f["data"].get("id") == peer.session_id
                      and f["data"].get("online") is False)


class DeafPeer(TestPeer):
    """A client that stops answering pings, as a dead network path would."""

    def onPing(self, payload: bytes) -> None:
        pass


class AuthTimeoutTests(MemoryServerCase):
    settings = Settings(auth_timeout=10.0)

    def test_no_auth_in_time_gets_408_then_4408_and_nothing_else(self):
        idle = self.connect()
        alice = self.peer("alice")
        self.advance(9.9)
        self.assertEqual((idle.received, idle.close_code), ([], None))
        self.advance(0.2)
        [error] = idle.received
        self.assertEqual((error["type"], error["status"]), ("error", 408))
        self.assertIn("timeout", error["message"].lower())
        self.assertEqual(idle.close_code, 4408)
        self.assertEqual(self.sample("symple_auth_failures_total", status="408"), 1)
        # alice authenticated before her timer ran out: she stays, and is served.
        self.advance(60)
        self.assertIsNone(alice.close_code)
        alice.send_json({"type": "message", "to": alice.address, "subtype": "echo"})
        self.flush()
        self.assertEqual([m["subtype"] for m in of_type(alice, "message")], ["echo"])
        self.assertEqual(len(self.server.router.links), 1)


class KeepaliveTests(MemoryServerCase):
    settings = Settings(ping_interval=25.0, ping_timeout=10.0, auth_timeout=1000.0)

    def test_peer_that_stops_answering_pings_is_closed_and_announced_offline(self):
        alice = self.peer("alice", rooms=["lobby"])
        deaf = self.peer("deaf", DeafPeer, rooms=["lobby"])
        self.advance(25.0)  # both are pinged; only alice answers
        self.advance(9.9)
        self.assertIsNone(deaf.close_code)
        self.assertEqual(list(filter(offline_of(deaf), alice.received)), [])
        self.advance(0.2)
        self.assertIsNotNone(deaf.close_code)
        [offline] = filter(offline_of(deaf), alice.received)
        self.assertEqual(offline["from"], deaf.address)
        self.assertNotIn(deaf.session_id, self.server.router.sessions)
        # alice answers every ping and is kept, round after round.
        for _ in range(5):
            self.advance(25.0)
        self.assertIsNone(alice.close_code)
        self.assertIn(alice.session_id, self.server.router.sessions)

    def test_unauthenticated_connection_is_pinged_too(self):
        deaf = self.connect(DeafPeer)
        self.advance(25.0)
        self.advance(10.1)
        self.assertIsNotNone(deaf.close_code)
        self.assertEqual(self.server.router.links, set())


class RateRefillTests(MemoryServerCase):
    # 5 frames per 0.5 s: the bucket refills over time.
    settings = Settings(rate_limit=5, rate_period=0.5)

    def pair(self) -> tuple[TestPeer, TestPeer]:
        alice = self.peer("alice", rooms=["lobby"])
        bob = self.peer("bob", rooms=["lobby"])
        return alice, bob

    def test_frames_within_the_rate_all_pass(self):
        alice, bob = self.pair()
        sent = 0
        for _ in range(3):
            self.advance(0.5)
            for _ in range(4):
                alice.send_json({"type": "message", "subtype": "paced", "data": sent})
                sent += 1
            self.flush()
        self.assertEqual([m["data"] for m in of_type(bob, "message")], list(range(12)))
        self.assertEqual(of_type(alice, "error"), [])

    def test_flooding_at_five_times_the_rate_closes_although_some_frames_pass(self):
        """Every tick a frame passes again; the drops in between still add up to a close."""
        alice, bob = self.pair()
        for _tick in range(50):  # 5 s of a 5x flood at most
            if alice.close_code is not None:
                break
            for _ in range(5):
                alice.send_json({"type": "message", "subtype": "flood"})
            self.advance(0.1)
        self.assertEqual(alice.close_code, 4429)
        self.assertGreater(len(of_type(bob, "message")), 5)  # frames kept passing meanwhile
        self.assertEqual(self.sample("symple_disconnects_total", reason="rate_limit"), 1)
