"""The client's pure parts: retry delays and server URLs (no connection is made)."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from symple_tx.client import SympleClient, backoff


class BackoffTests(unittest.TestCase):
    def test_delays_grow_to_the_cap_with_bounded_jitter(self):
        policy = backoff(initial=1, maximum=5, factor=2, jitter=0.5)
        for attempt, base in ((1, 1), (2, 2), (3, 4), (4, 5), (50, 5), (10_000, 5)):
            delay = policy(attempt)
            self.assertGreaterEqual(delay, base)
            self.assertLessEqual(delay, base + 0.5)

    def test_bad_url_is_a_clear_error(self):
        for url in ("http://x/", "ws://", "ws://host:99999/"):
            error = self.assertRaises(ValueError, SympleClient, url, "alice", reactor=Clock())
            self.assertIn("Invalid server URL", str(error))
