"""The per-session token bucket, on a clock the test moves by hand."""

from __future__ import annotations

from twisted.trial import unittest

from symple_tx.ratelimit import TokenBucket

from tests.fakes import FakeClock


class TokenBucketTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = FakeClock()
        # The default limit: 100 frames per 10 s, i.e. one token every 0.1 s.
        self.bucket = TokenBucket(100, 10.0, self.clock)

    def drain(self) -> int:
        """Take until refused; how many were granted."""
        granted = 0
        while self.bucket.take():
            granted += 1
            self.assertLess(granted, 10_000, "the bucket never ran dry")
        return granted

    def test_burst_up_to_capacity(self):
        self.assertEqual(self.drain(), 100)
        self.assertFalse(self.bucket.take())

    def test_refills_at_the_sustained_rate(self):
        self.drain()
        self.clock.advance(0.1)
        self.assertTrue(self.bucket.take())
        self.assertFalse(self.bucket.take())
        self.clock.advance(5.0)
        self.assertEqual(self.drain(), 50)

    def test_partial_token_is_not_enough(self):
        self.drain()
        self.clock.advance(0.05)
        self.assertFalse(self.bucket.take())
        self.clock.advance(0.05)
        self.assertTrue(self.bucket.take())

    def test_refused_frames_cost_nothing(self):
        self.drain()
        for _ in range(50):
            self.clock.advance(0.001)
            self.assertFalse(self.bucket.take())
        self.clock.advance(0.05)
        self.assertTrue(self.bucket.take())

    def test_idle_time_caps_at_capacity(self):
        self.drain()
        self.clock.advance(3600)
        self.assertEqual(self.drain(), 100)

    def test_sustained_traffic_at_the_limit_passes(self):
        for _ in range(1000):
            self.clock.advance(0.1)
            self.assertTrue(self.bucket.take())

    def test_clock_stepping_back_does_not_drain(self):
        self.drain()
        self.clock.advance(-3600)  # wall time set back an hour
        self.assertFalse(self.bucket.take())
        self.clock.advance(1.0)
        self.assertEqual(self.drain(), 10)

    def test_no_period_means_no_limit(self):
        bucket = TokenBucket(1, 0, self.clock)
        for _ in range(1000):
            self.assertTrue(bucket.take())

    def test_zero_capacity_refuses(self):
        bucket = TokenBucket(0, 10.0, self.clock)
        self.clock.advance(100)
        self.assertFalse(bucket.take())
