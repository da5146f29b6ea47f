"""Per-session token bucket: bursts up to ``capacity``, ``capacity / period`` frames/s sustained."""

from __future__ import annotations

from typing import Callable

#: Slack for float rounding of clock differences: a peer pacing itself exactly
#: at the limit must not be refused because 0.05 + 0.05 came out as 0.0999...
_EPSILON = 1e-9


class TokenBucket:
    """A period of 0 or less means no limit."""

    __slots__ = ("capacity", "rate", "tokens", "stamp", "clock")

    def __init__(self, capacity: int, period: float, clock: Callable[[], float]) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / period if period > 0 else float("inf")
        self.tokens = float(capacity)
        self.clock = clock
        self.stamp = clock()

    def take(self) -> bool:
        """Spend one token if there is one; False means the frame is over the limit."""
        if self.rate == float("inf"):
            return True
        now = self.clock()
        # The clock may be wall time: a step backwards must not drain the bucket.
        elapsed = now - self.stamp if now > self.stamp else 0.0
        self.stamp = now
        tokens = self.tokens + elapsed * self.rate
        if tokens > self.capacity:
            tokens = self.capacity
        if tokens < 1.0 - _EPSILON:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True
