"""Per-session token bucket: bursts up to ``capacity``, ``capacity / period`` frames/s sustained."""

from __future__ import annotations

from typing import Callable


class TokenBucket:
    __slots__ = ("capacity", "rate", "tokens", "stamp", "clock")

    def __init__(self, capacity: int, period: float, clock: Callable[[], float]) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / period if period > 0 else float("inf")
        self.tokens = float(capacity)
        self.clock = clock
        self.stamp = clock()

    def take(self) -> bool:
        """Spend one token if there is one; False means the frame is over the limit."""
        now = self.clock()
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.stamp = now
        if tokens > self.capacity:
            tokens = self.capacity
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True
