"""Rate budgets: what one client may cost the server per period.

A client pays for *frames* (each one is read, decoded and handled) and for
*deliveries* (each recipient of a routed frame costs a write, and across a
cluster a publish): a frame to a 5 000-member room costs 5 000 deliveries, a
direct message costs one.  A client that floods a big room is therefore
throttled long before one that sends a burst of direct messages.  Frames
refused for either reason spend *strikes*; a client out of strikes keeps
sending far over its budget and is closed (4429).

Budgets are kept per (client address, user) and shared by that client's
connections, so reconnecting does not refill them; an entry outlives its
last connection until its buckets have refilled, then it is forgotten.
"""

from __future__ import annotations

from typing import Callable, Hashable, Optional

#: Slack for float rounding of clock differences: a peer pacing itself exactly
#: at the limit must not be refused because 0.05 + 0.05 came out as 0.0999...
_EPSILON = 1e-9
_INF = float("inf")
#: Refused frames a client may send per period before it is closed (4429);
#: fewer when the frame budget itself is smaller.
STRIKES = 100


class TokenBucket:
    """Bursts up to ``capacity``, ``capacity / period`` tokens/s sustained.

    A period of 0 or less means no limit; a capacity of 0, nothing passes.
    A cost larger than the capacity passes when the bucket is full and
    leaves it in debt, so one frame to a room bigger than the budget is
    possible, then nothing until the debt is paid back.
    """

    __slots__ = ("capacity", "rate", "tokens", "stamp", "clock")

    def __init__(self, capacity: int, period: float, clock: Callable[[], float]) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / period if period > 0 else _INF
        self.tokens = float(capacity)
        self.clock = clock
        self.stamp = clock()

    def _refill(self) -> float:
        now = self.clock()
        # The clock may be wall time: a step backwards must not drain the bucket.
        elapsed = now - self.stamp if now > self.stamp else 0.0
        self.stamp = now
        tokens = self.tokens + elapsed * self.rate
        if tokens > self.capacity:
            tokens = self.capacity
        self.tokens = tokens
        return tokens

    def take(self, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are enough; False means over the limit."""
        rate = self.rate
        if rate == _INF:
            return True
        # _refill, inlined: this runs for every frame and every delivery.
        now = self.clock()
        stamp, tokens, capacity = self.stamp, self.tokens, self.capacity
        self.stamp = now
        if now > stamp:
            tokens += (now - stamp) * rate
            if tokens > capacity:
                tokens = capacity
        if capacity <= 0 or tokens < (cost if cost < capacity else capacity) - _EPSILON:
            self.tokens = tokens
            return False
        self.tokens = tokens - cost
        return True

    def full(self) -> bool:
        """Whether the bucket has refilled completely (nothing to remember)."""
        return self.rate == _INF or self._refill() >= self.capacity - _EPSILON


class Budget:
    """One client's frame, delivery and strike buckets."""

    __slots__ = ("frames", "deliveries", "strikes", "holders")

    def __init__(self, frames: int, deliveries: int, period: float,
                 clock: Callable[[], float]) -> None:
        self.frames = TokenBucket(frames, period, clock)
        # A delivery limit of 0 turns that budget off.
        self.deliveries = TokenBucket(deliveries, period if deliveries > 0 else 0, clock)
        self.strikes = TokenBucket(min(STRIKES, frames), period, clock)
        #: Connections currently charging this budget.
        self.holders = 0

    def frame(self) -> bool:
        return self.frames.take()

    def deliver(self, count: int) -> bool:
        return self.deliveries.take(count)

    def strike(self) -> bool:
        """Count a refused frame; False once the client is out of strikes."""
        return self.strikes.take()

    def idle(self) -> bool:
        return self.holders == 0 and self.frames.full() and self.deliveries.full() \
            and self.strikes.full()


class Budgets:
    """Budgets by (client address, user), shared across connections and reconnects."""

    def __init__(self, frames: int, deliveries: int, period: float,
                 clock: Callable[[], float]) -> None:
        self.frames = frames
        self.deliveries = deliveries
        self.period = period
        self.clock = clock
        self.entries: dict[Hashable, Budget] = {}
        self._swept = clock()

    def new(self) -> Budget:
        """A budget of one connection alone (before it has a user)."""
        return Budget(self.frames, self.deliveries, self.period, self.clock)

    def acquire(self, key: Hashable, start: Optional[Budget] = None) -> Budget:
        """The budget of ``key``; a new one starts from ``start``'s spending."""
        self._sweep()
        budget = self.entries.get(key)
        if budget is None:
            budget = self.entries[key] = start if start is not None else self.new()
        budget.holders += 1
        return budget

    def release(self, budget: Budget) -> None:
        budget.holders -= 1

    def _sweep(self) -> None:
        """Forget idle, refilled budgets, at most once a period: memory follows live clients."""
        now = self.clock()
        if now - self._swept < self.period:
            return
        self._swept = now
        for key in [k for k, b in self.entries.items() if b.idle()]:
            del self.entries[key]
