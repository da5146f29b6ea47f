"""Per-address connection budgets: a few hosts cannot take every connection slot.

``--max-connections`` bounds the process; these bound one client address
within it: how many connections it may hold, how many of them may be
unauthenticated at once (a WebSocket before its ``auth`` is admitted, a
connection still sending its request head, an HTTP connection) and how many
new connections it may open per ``ADDRESS_RATE_PERIOD`` (a token bucket, so
bursts up to the budget pass).  Anonymous auth costs a client nothing, so the
cap on all its connections is what holds when authentication is off.
IPv6 addresses are grouped by /64, the block one host usually gets.
Exempt networks (loopback by default: a local reverse proxy or an operator's
tool) are not counted.
"""

from __future__ import annotations

import ipaddress
from typing import Callable, Iterable, Optional

from .ratelimit import TokenBucket

#: Seconds of the per-address connection-rate window.
ADDRESS_RATE_PERIOD = 10.0


def _parse(host: str) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None  # not an IP (a proxy's odd header)


def address_key(host: str) -> str:
    """What one client is counted as: its IPv4 address, or its IPv6 /64."""
    return _key(host, _parse(host))


def _key(host: str, address: Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> str:
    if address is None:
        return host  # counted as given
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def parse_networks(values: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network,
                                                   ...]:
    """Networks from strings such as ``127.0.0.0/8`` or ``::1``; ValueError names a bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(f"not an IP network: {value!r}") from None
    return tuple(networks)


class Ticket:
    """One connection's hold on its address's budgets."""

    __slots__ = ("_budgets", "key", "_unauthenticated")

    def __init__(self, budgets: Optional["AddressBudgets"], key: str) -> None:
        self._budgets = budgets
        self.key = key
        self._unauthenticated = budgets is not None

    def release(self) -> None:
        """The connection authenticated: it no longer counts as unauthenticated."""
        if self._unauthenticated:
            self._unauthenticated = False
            assert self._budgets is not None
            self._budgets._drop(self._budgets.unauthenticated, self.key)

    def close(self) -> None:
        """The connection is gone: it counts no more at all; idempotent."""
        self.release()
        budgets, self._budgets = self._budgets, None
        if budgets is not None:
            budgets._drop(budgets.connections, self.key)


#: The ticket of an exempt address or of budgets that are off.
FREE = Ticket(None, "")


class Refused(Exception):
    """Over an address budget: ``str()`` says which, for the refusal."""


class AddressBudgets:
    """Counts connections, unauthenticated ones and new-connection rate per address."""

    def __init__(self, max_unauthenticated: int, rate: int, exempt: Iterable[str],
                 clock: Callable[[], float], max_connections: int = 0) -> None:
        self.max_unauthenticated = max_unauthenticated
        self.max_connections = max_connections
        self.rate = rate
        self.exempt = parse_networks(exempt)
        self.clock = clock
        self.unauthenticated: dict[str, int] = {}
        self.connections: dict[str, int] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self._swept = clock()

    @property
    def enabled(self) -> bool:
        return bool(self.max_unauthenticated or self.rate or self.max_connections)

    def is_exempt(self, host: str) -> bool:
        address = _parse(host)
        return address is not None and any(address in net for net in self.exempt)

    def admit(self, host: str) -> Ticket:
        """Count a new connection from ``host``, or raise ``Refused``."""
        if not self.enabled:
            return FREE
        address = _parse(host)
        if address is not None and any(address in net for net in self.exempt):
            return FREE
        key = _key(host, address)
        self._sweep()
        held = self.unauthenticated.get(key, 0)
        if self.max_unauthenticated and held >= self.max_unauthenticated:
            raise Refused(f"Too many unauthenticated connections from this address "
                          f"(the limit is {self.max_unauthenticated})")
        open_ = self.connections.get(key, 0)
        if self.max_connections and open_ >= self.max_connections:
            raise Refused(f"Too many connections from this address "
                          f"(the limit is {self.max_connections})")
        if self.rate:
            bucket = self.buckets.get(key)
            if bucket is None:
                bucket = self.buckets[key] = TokenBucket(self.rate, ADDRESS_RATE_PERIOD,
                                                         self.clock)
            if not bucket.take():
                raise Refused(f"Too many new connections from this address (the limit is "
                              f"{self.rate} per {ADDRESS_RATE_PERIOD:g} s)")
        self.unauthenticated[key] = held + 1
        self.connections[key] = open_ + 1
        return Ticket(self, key)

    @staticmethod
    def _drop(counts: dict[str, int], key: str) -> None:
        held = counts.get(key, 0) - 1
        if held > 0:
            counts[key] = held
        else:
            counts.pop(key, None)

    def _sweep(self) -> None:
        """Forget buckets that have refilled, once a period: memory follows live addresses."""
        now = self.clock()
        if now - self._swept < ADDRESS_RATE_PERIOD:
            return
        self._swept = now
        idle = [key for key, bucket in self.buckets.items()
                if now - bucket.stamp >= ADDRESS_RATE_PERIOD]
        for key in idle:
            del self.buckets[key]
