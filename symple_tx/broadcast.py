"""Frames that backends publish on ``<prefix>broadcast``, delivered to local sessions.

docs/spec.md §9: any backend (the Ruby gem, ``symple_tx.emitter``) may
``PUBLISH`` a Symple frame on ``symple:broadcast``; each node routes it to its
own sessions by ``to``, trusting it (no shared-room check, ``from`` kept).

txredisapi 1.6 reconnects a subscriber but does not subscribe it again, so
every connection subscribes as soon as it is ready.
"""

from __future__ import annotations

from typing import Any, Optional

import orjson
import txredisapi
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from .redis_store import RedisAddress
from .router import Router

log = Logger()


class BroadcastProtocol(txredisapi.SubscriberProtocol):
    factory: "BroadcastFactory"

    def connectionMade(self) -> Any:
        ready = super().connectionMade()  # AUTH and SELECT first
        self.whenConnected().addCallback(lambda _: self.factory.subscriber._ready(self))
        return ready

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.factory.subscriber.received(message)


class BroadcastFactory(txredisapi.SubscriberFactory):
    protocol = BroadcastProtocol

    def __init__(self, subscriber: "BroadcastSubscriber", address: RedisAddress) -> None:
        super().__init__(isLazy=True)
        self.subscriber = subscriber
        self.password = address.password
        self.username = address.username
        self.dbid = address.db or None
        self.convertNumbers = False


class BroadcastSubscriber:
    """Subscribes to the broadcast channel and hands each frame to ``Router.deliver_trusted``."""

    def __init__(self, router: Router, address: RedisAddress,
                 channel: str = "symple:broadcast", reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.router = router
        self.address = address
        self.channel = channel
        self.reactor = reactor
        #: Times the channel was (re)subscribed: one per Redis connection.
        self.subscriptions = 0
        self._factory: Optional[BroadcastFactory] = None
        self._waiting: list[tuple[int, Deferred]] = []

    def start(self) -> None:
        self._factory = BroadcastFactory(self, self.address)
        self._factory.startConnecting(self._endpoint())

    def stop(self) -> Deferred:
        factory, self._factory = self._factory, None
        return factory.disconnect() if factory is not None else succeed(None)

    def when_subscribed(self, count: int = 1) -> Deferred:
        """Fires once the channel has been subscribed ``count`` times in all."""
        if self.subscriptions >= count:
            return succeed(self.subscriptions)
        d: Deferred = Deferred()
        self._waiting.append((count, d))
        return d

    def _endpoint(self) -> Any:
        return self.address.endpoint(self.reactor)

    def _ready(self, protocol: BroadcastProtocol) -> None:
        def subscribed(_: Any) -> None:
            self.subscriptions += 1
            log.info("Subscribed to {channel}", channel=self.channel)
            waiting, self._waiting = self._waiting, []
            for count, d in waiting:
                if self.subscriptions >= count:
                    d.callback(self.subscriptions)
                else:
                    self._waiting.append((count, d))

        def failed(failure: Any) -> None:
            log.warn("Subscribing to {channel} failed: {error}", channel=self.channel,
                     error=failure.getErrorMessage())

        protocol.subscribe(self.channel).addCallbacks(subscribed, failed)

    def received(self, message: Any) -> int:
        """Deliver one published message; garbage is logged and dropped."""
        try:
            frame = orjson.loads(message)
        except (orjson.JSONDecodeError, TypeError):
            return self._reject("invalid JSON")
        if not isinstance(frame, dict):
            return self._reject("not a JSON object")
        try:
            return self.router.deliver_trusted(frame)
        except Exception:
            log.failure("Error while delivering a broadcast frame")
            return 0

    def _reject(self, why: str) -> int:
        self.router.metrics.drops["invalid"].inc()
        log.warn("Dropped a frame published on {channel}: {why}", channel=self.channel, why=why)
        return 0
