"""Assembling a server: the parts, the listeners and graceful shutdown.

``SympleServer`` wires settings into a router, authenticator, WebSocket
factory and HTTP pages; building it opens nothing.  ``start`` connects to
Redis and starts the bus's timers, ``shutdown`` drains and stops them in
reverse order.  ``SympleService`` is the ``twisted.application`` service that
``twistd symple`` runs and calls both; embedders can use either.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger

from .auth import Authenticator
from .broadcast import Broadcast
from .bus import Bus
from .cluster import RedisBus
from .config import Settings
from .frontdoor import FrontDoorSite
from .listen import server_endpoint
from .metrics import Metrics
from .redis.address import RedisAddress
from .redis.connect import Outage, Pool
from .redis.keys import Keys
from .redis.store import RedisSessionStore
from .router import Router
from .web import Health, SymplePortFactory, SympleResource, http_root
from .websocket import SympleServerFactory

log = Logger()


class SympleServer:
    """One server process's parts, built from ``Settings``."""

    def __init__(self, settings: Optional[Settings] = None, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.settings = settings = settings or Settings()
        self.metrics = Metrics()
        #: The session store's connections (with ``--redis``).
        self.pool: Optional[Pool] = None
        self.broadcast: Optional[Broadcast] = None
        #: Logs Redis outages once and tells ``/healthz`` (with ``--redis``).
        self.outage: Optional[Outage] = None
        self.started = False
        store = None
        bus: Bus = Bus()
        if settings.redis_url:
            address = RedisAddress.parse(settings.redis_url, settings.redis_ca)
            keys = Keys(settings.key_prefix, settings.cluster_prefix)
            self.pool = Pool(address, reactor, poolsize=4)
            pool = self.pool
            store = RedisSessionStore(pool.redis, keys.session_prefix,
                                      available=lambda: pool.reachable)
            bus = RedisBus(None, address, keys, settings.node_timeout, reactor)
        self.router = Router(settings, self.metrics, SympleServerFactory.prepare, bus, reactor)
        self.health = Health(self.router)
        if isinstance(bus, RedisBus) and self.pool is not None:
            self.broadcast = Broadcast(self.router, keys.broadcast)
            bus.subscribe(keys.broadcast, self.broadcast.received)
            self.outage = Outage(address)
            self.outage.watch(bus.publisher, bus.subscriber, *self.pool.connections)
            self.health.checks.append(self.outage.problem)
        self.authenticator = Authenticator(settings, store, reactor)
        self.websocket = SympleServerFactory(self.router, self.authenticator, reactor)
        self.pages = http_root(self.router, self.health, settings.demo)
        # Each HTTP request has the auth timeout to arrive and be answered.
        self.site = FrontDoorSite(self.pages, request_deadline=settings.auth_timeout,
                                  metrics=self.metrics)
        self.port_factory = SymplePortFactory(self.websocket, self.site)

    @property
    def redis(self) -> Any:
        """The session store's txredisapi command interface, or None."""
        return self.pool.redis if self.pool is not None else None

    def start(self) -> None:
        """Connect to Redis and start the bus (``SympleService`` calls it; so must an
        embedder that mounts ``resource()`` without one).  Idempotent."""
        if self.started:
            return
        self.started = True
        if self.pool is not None:
            self.pool.start()
        self.router.bus.start()

    def resource(self) -> SympleResource:
        """A ``twisted.web`` resource to mount in an existing site."""
        return SympleResource(self.websocket, self.pages)

    def endpoint(self, description: str) -> IStreamServerEndpoint:
        """An endpoint from its string; TCP/TLS ones get a storm-ready backlog by default."""
        return server_endpoint(self.reactor, description)

    @defer.inlineCallbacks
    def shutdown(self):
        """Send the shutdown event, close every peer with 1001, wait at most the drain timeout.

        In a cluster the other processes are told first, so they announce our
        peers offline without waiting for each connection to close.
        """
        bus_stopped = self.router.bus.stop()
        idle = self.router.shutdown()
        timeout = self.reactor.callLater(self.settings.drain_timeout, idle.cancel)
        try:
            yield idle
        except defer.CancelledError:
            log.warn("Drain timeout: aborting {n} connections", n=len(self.router.links))
            self.router.abort_links()
        else:
            timeout.cancel()
        yield bus_stopped
        if self.pool is not None:
            yield self.pool.stop()
        self.started = False


class SympleService(MultiService):
    """Listens on every endpoint; on stop, stops accepting, then drains."""

    def __init__(self, server: SympleServer,
                 endpoints: Iterable[IStreamServerEndpoint | str] = ()) -> None:
        """``endpoints``: endpoint objects or strings (``"tcp:4500"``); none at all
        suits a server mounted as a resource, which still drains on stop."""
        super().__init__()
        self.server = server
        for endpoint in endpoints:
            if isinstance(endpoint, str):
                endpoint = server.endpoint(endpoint)
            listener = StreamServerEndpointService(endpoint, server.port_factory)
            listener._raiseSynchronously = True
            listener.setServiceParent(self)

    def listening(self) -> defer.Deferred:
        """Fires with the listening ports (``IListeningPort``) once all are bound."""
        waits = []
        for listener in self:
            d: defer.Deferred = defer.Deferred()
            listener._waitingForPort.addCallback(lambda port, d=d: (d.callback(port), port)[1])
            listener._waitingForPort.addErrback(lambda f, d=d: (d.errback(f), f)[1])
            waits.append(d)
        return defer.gatherResults(waits, consumeErrors=True)

    def startService(self) -> None:
        self.server.start()
        super().startService()

    @defer.inlineCallbacks
    def stopService(self):
        yield super().stopService()
        yield self.server.shutdown()
