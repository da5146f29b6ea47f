"""Two self-reconnecting Redis connections that say when they are usable.

txredisapi reconnects with backoff but hides the connection behind a pool
that queues commands while Redis is away (they would pile up and arrive
stale) and never subscribes again after a reconnect.  The bus needs the
opposite: know at once whether a connection is usable, drop instead of
queueing, and subscribe again in every new connection.
"""

from __future__ import annotations

from typing import Any, Optional

import txredisapi
from twisted.internet.defer import Deferred

from ..redis_store import RedisAddress

#: Reconnection backoff: first retry after this many seconds ...
INITIAL_DELAY = 0.25
#: ... growing to at most this many.
MAX_DELAY = 4.0


def _notifying(base: type) -> type:
    """A txredisapi protocol class that reports ready/lost/messages to its ``Connection``."""
    class Protocol(base):  # type: ignore[misc, valid-type]
        def connectionMade(self) -> Any:
            self.whenConnected().addCallback(self.factory.owner._ready)
            return super().connectionMade()

        def connectionLost(self, why: Any) -> None:
            was_ready = self._ready
            super().connectionLost(why)
            if was_ready:
                self.factory.owner._lost(self)

        def messageReceived(self, pattern: Any, channel: bytes, message: bytes) -> None:
            self.factory.owner.owner.received(channel, message)

    Protocol.__name__ = "Notifying" + base.__name__
    return Protocol


_Publisher = _notifying(txredisapi.RedisProtocol)
_Subscriber = _notifying(txredisapi.SubscriberProtocol)


class Connection:
    """One Redis connection kept open; ``protocol`` is set only while it is usable."""

    def __init__(self, address: RedisAddress, owner: Any, subscriber: bool,
                 reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.owner = owner
        self.protocol: Optional[Any] = None
        factory = txredisapi.RedisFactory(
            None, address.db or None, 1, isLazy=True, charset=None,
            password=address.password, convertNumbers=False, username=address.username)
        factory.protocol = _Subscriber if subscriber else _Publisher
        factory.initialDelay = INITIAL_DELAY
        factory.maxDelay = MAX_DELAY
        factory.owner = self
        factory.noisy = False  # the owner logs outages once; no line per retry
        self.factory = factory
        self.endpoint = address.endpoint(reactor)

    def start(self) -> None:
        self.factory.startConnecting(self.endpoint)

    def stop(self) -> Deferred:
        self.protocol = None
        return self.factory.disconnect()

    def _ready(self, protocol: Any) -> None:
        self.protocol = protocol
        self.owner.ready(self, protocol)

    def _lost(self, protocol: Any) -> None:
        if self.protocol is protocol:
            self.protocol = None
        self.owner.lost(self, protocol)

