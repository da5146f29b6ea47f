"""Assembling a server: the parts, the listeners and graceful shutdown.

``SympleServer`` wires settings into a router, authenticator, WebSocket
factory and HTTP pages.  ``SympleService`` is the ``twisted.application``
service that ``twistd symple`` runs; embedders can use either.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.web.server import Site

from .auth import Authenticator
from .broadcast import BroadcastSubscriber
from .cluster import RedisBus
from .config import Settings
from .listen import server_endpoint
from .metrics import Metrics
from .redis_store import RedisAddress, RedisSessionStore
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
        self.router = Router(settings, self.metrics)
        self.redis: Any = None
        self.broadcast: Optional[BroadcastSubscriber] = None
        store = None
        self.health = Health(self.router)
        if settings.redis_url:
            address = RedisAddress.parse(settings.redis_url)
            self.redis = address.connect()
            store = RedisSessionStore(self.redis, settings.key_prefix + "session:")
            cluster_prefix = settings.cluster_prefix or settings.key_prefix + "cluster:"
            self.router.bus = RedisBus(self.router, address, cluster_prefix,
                                       settings.node_timeout, reactor)
            self.router.bus.start()
            self.broadcast = BroadcastSubscriber(self.router, address,
                                                 settings.key_prefix + "broadcast", reactor)
            self.broadcast.start()
        self.authenticator = Authenticator(settings, store)
        self.websocket = SympleServerFactory(self.router, self.authenticator, reactor)
        if self.redis is not None:
            self.health.checks.append(self._redis_problem)
        self.pages = http_root(self.router, self.health, settings.demo)
        self.site = Site(self.pages)
        self.site.displayTracebacks = False
        self.site.noisy = False
        # Idle HTTP keep-alive connections close after the auth timeout, not
        # twisted.web's 12 hours: they count against no connection limit.
        self.site.timeOut = settings.auth_timeout
        self.port_factory = SymplePortFactory(self.websocket, self.site)

    def _redis_problem(self) -> Optional[str]:
        """``/healthz`` turns 503 while the store's pool or the cluster bus has no Redis."""
        factory = getattr(self.redis, "_factory", None)  # txredisapi's pool
        if factory is not None and not getattr(factory, "size", 0):
            return "redis unreachable"
        if self.router.bus.problem():
            return "redis unreachable"
        return None

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
            for link in list(self.router.links):
                link.transport.abortConnection()
        else:
            timeout.cancel()
        yield bus_stopped
        if self.broadcast is not None:
            yield self.broadcast.stop()
        if self.redis is not None:
            yield self.redis.disconnect()


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

    @defer.inlineCallbacks
    def stopService(self):
        yield super().stopService()
        yield self.server.shutdown()
