"""The per-session token bucket, on a clock the test moves by hand."""

from __future__ import annotations

from twisted.trial import unittest

from symple_tx.ratelimit import Budgets, TokenBucket

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


class CostTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = FakeClock()

    def test_a_cost_spends_that_many_tokens(self):
        bucket = TokenBucket(1000, 10.0, self.clock)
        self.assertTrue(bucket.take(600))
        self.assertFalse(bucket.take(500))
        self.assertTrue(bucket.take(400))
        self.assertFalse(bucket.take(1))

    def test_a_cost_over_the_capacity_passes_on_a_full_bucket_and_leaves_a_debt(self):
        bucket = TokenBucket(100, 10.0, self.clock)  # 10 tokens/s
        self.assertTrue(bucket.take(300))
        self.clock.advance(19.9)  # 199 of the 200 owed
        self.assertFalse(bucket.take(1))
        self.clock.advance(0.2)
        self.assertTrue(bucket.take(1))


class BudgetsTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = FakeClock()
        self.budgets = Budgets(frames=5, deliveries=50, period=10.0, clock=self.clock)

    def test_one_budget_per_key_shared_and_kept_after_release(self):
        first = self.budgets.acquire(("192.0.2.1", "alice"))
        for _ in range(5):
            self.assertTrue(first.frame())
        self.budgets.release(first)
        again = self.budgets.acquire(("192.0.2.1", "alice"))  # a reconnect
        self.assertIs(again, first)
        self.assertFalse(again.frame())
        other = self.budgets.acquire(("192.0.2.1", "bob"))
        self.assertTrue(other.frame())

    def test_a_new_key_starts_from_the_connections_own_spending(self):
        own = self.budgets.new()
        self.assertTrue(own.frame())
        budget = self.budgets.acquire(("192.0.2.1", "alice"), own)
        self.assertIs(budget, own)

    def test_refilled_budgets_without_connections_are_forgotten(self):
        held = self.budgets.acquire("held")
        gone = self.budgets.acquire("gone")
        gone.deliver(50)
        self.budgets.release(gone)
        self.clock.advance(5)
        self.budgets.acquire("x")
        self.assertIn("gone", self.budgets.entries)  # still owed: remembered
        self.clock.advance(20)
        self.budgets.acquire("y")
        self.assertNotIn("gone", self.budgets.entries)
        self.assertIs(self.budgets.entries["held"], held)

    def test_strikes_are_at_most_the_frame_budget(self):
        budget = self.budgets.new()
        self.assertEqual(sum(budget.strike() for _ in range(10)), 5)

    def test_a_delivery_limit_of_zero_is_no_limit(self):
        budget = Budgets(5, 0, 10.0, self.clock).new()
        self.assertTrue(all(budget.deliver(10_000) for _ in range(100)))
