"""Services that start when started: building a server opens nothing, stopping undoes it all.

Everything runs on a ``MemoryReactorClock``, so the connections and timers
a server makes are visible and nothing touches the network.
"""

from __future__ import annotations

from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from symple_tx.bus import Bus
from symple_tx.cluster import RedisBus
from symple_tx.config import Settings
from symple_tx.metrics import Metrics
from symple_tx.redis import RedisAddress
from symple_tx.router import Router
from symple_tx.service import SympleServer, SympleService
from symple_tx.tap import SympleOptions, makeService
from symple_tx.websocket import SympleServerFactory
from tests.fakes import FakeLink

REDIS = "redis://127.0.0.1:6390/0"


def active_calls(reactor: MemoryReactorClock) -> list:
    return [call for call in reactor.getDelayedCalls() if call.active()]


class ServerLifecycleTests(unittest.TestCase):
    def test_building_a_server_opens_nothing(self):
        reactor = MemoryReactorClock()
        SympleServer(Settings(redis_url=REDIS), reactor)
        self.assertEqual(reactor.tcpClients, [])
        self.assertEqual(active_calls(reactor), [])

    def test_start_connects_and_starts_timers_and_shutdown_stops_them(self):
        reactor = MemoryReactorClock()
        server = SympleServer(Settings(redis_url=REDIS), reactor)
        server.start()
        server.start()  # idempotent: no second set of connections
        # The bus's publisher and subscriber, and the session store's pool of 4.
        self.assertEqual([(host, port) for host, port, *_ in reactor.tcpClients],
                         [("127.0.0.1", 6390)] * 6)
        bus = server.router.bus
        self.assertTrue(bus._beat.running and bus._reaper.running)
        done = server.shutdown()
        self.assertIsNone(self.successResultOf(done))
        self.assertFalse(bus._beat.running or bus._reaper.running)
        self.assertFalse(any(c.running for c in [bus.publisher, bus.subscriber,
                                                 *server.pool.connections]))
        reactor.advance(60)  # nothing retries after the stop
        self.assertEqual(len(reactor.tcpClients), 6)

    def test_service_starts_the_server(self):
        reactor = MemoryReactorClock()
        server = SympleServer(Settings(redis_url=REDIS), reactor)
        service = SympleService(server)
        self.assertFalse(server.started)
        service.startService()
        self.assertTrue(server.started)
        self.assertEqual(len(reactor.tcpClients), 6)
        self.successResultOf(service.stopService())
        self.assertFalse(server.started)

    def test_shutdown_aborts_what_the_drain_timeout_leaves(self):
        reactor = MemoryReactorClock()
        server = SympleServer(Settings(drain_timeout=2), reactor)
        stubborn = FakeLink()
        server.router.link_opened(stubborn)
        done = server.shutdown()
        self.assertEqual(stubborn.closed, (1001, "Server shutting down"))
        self.assertNoResult(done)
        stubborn_abort = stubborn.abort

        def abort():
            stubborn_abort()
            server.router.link_closed(stubborn)
        stubborn.abort = abort
        reactor.advance(2)
        self.assertTrue(stubborn.aborted)
        self.successResultOf(done)


class RouterConstructionTests(unittest.TestCase):
    def test_router_takes_encoder_bus_and_clock(self):
        reactor = MemoryReactorClock()
        bus = RedisBus(None, RedisAddress(), reactor=reactor)
        router = Router(Settings(), Metrics(), SympleServerFactory.prepare, bus, reactor)
        self.assertIs(router.bus, bus)
        self.assertIs(bus.router, router)
        self.assertIs(router.clock, reactor)
        self.assertIs(router.encode, SympleServerFactory.prepare)
        self.assertEqual(reactor.tcpClients, [])

    def test_default_bus_is_attached(self):
        attached = []

        class Recording(Bus):
            def attach(self, router):
                attached.append(router)
        router = Router(bus=Recording())
        self.assertEqual(attached, [router])
        self.assertIsInstance(Router().bus, Bus)


class MakeServiceTests(unittest.TestCase):
    def test_endpoints_and_connections_use_the_given_reactor(self):
        reactor = MemoryReactorClock()
        options = SympleOptions(environ={})
        options.parseOptions(["--listen", "tcp:4567:interface=127.0.0.1", "--redis", REDIS])
        service = makeService(options, reactor)
        self.assertEqual(reactor.tcpServers, [])
        self.assertEqual(reactor.tcpClients, [])
        service.privilegedStartService()
        service.startService()
        self.assertEqual([(port, interface) for port, _, _, interface in reactor.tcpServers],
                         [(4567, "127.0.0.1")])
        self.assertEqual(len(reactor.tcpClients), 6)
        stopped = service.stopService()
        reactor.advance(5)
        self.assertIsNone(self.successResultOf(stopped if stopped is not None
                                               else succeed(None)))
