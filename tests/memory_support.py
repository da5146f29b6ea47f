"""A server on simulated time: peers connect through ``iosim``, timers run on a clock.

The auth timeout, keepalive and rate refill are timers; over real sockets their
tests wait for them.  Here ``advance(seconds)`` moves a ``MemoryReactorClock``
and delivers whatever the timers caused, at once and deterministically, while
the server runs exactly as under ``twistd`` (its factory, Autobahn, the router).
"""

from __future__ import annotations

import itertools
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim
from twisted.trial import unittest

from symple_tx.autobahn_support import ReactorTimer
from symple_tx.config import Settings
from symple_tx.service import SympleServer
from tests.support import TestPeer

_ports = itertools.count(40000)


class MemoryServerCase(unittest.TestCase):
    """A ``SympleServer`` on a ``MemoryReactorClock``; see the module docstring."""

    settings = Settings()

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.server = SympleServer(self.settings, reactor=self.clock)
        self.pumps: list[iosim.IOPump] = []
        self.addCleanup(self.disconnect_all)

    def connect(self, protocol: type = TestPeer) -> TestPeer:
        """A peer whose WebSocket handshake is done (no ``auth`` yet)."""
        address = IPv4Address("TCP", "127.0.0.1", next(_ports))
        server_side = self.server.websocket.buildProtocol(address)
        factory = WebSocketClientFactory("ws://127.0.0.1:4500/", reactor=self.clock)
        factory.protocol = protocol
        factory.setProtocolOptions(failByDrop=False, autoPingInterval=0)
        factory._batched_timer = ReactorTimer(self.clock)
        peer = factory.buildProtocol(None)
        self.pumps.append(iosim.connect(
            server_side, iosim.FakeTransport(server_side, isServer=True, peerAddress=address),
            peer, iosim.FakeTransport(peer, isServer=False), clock=self.clock))
        self.flush()
        self.assertTrue(peer.opened.called, "WebSocket handshake")
        return peer

    def peer(self, user: str, protocol: type = TestPeer, **fields: Any) -> TestPeer:
        """An authenticated peer (``fields`` go into its ``auth`` frame)."""
        peer = self.connect(protocol)
        peer.send_json({"type": "auth", "user": user, **fields})
        self.flush()
        [welcome] = [f for f in peer.received if f.get("type") == "welcome"]
        peer.welcome = welcome
        return peer

    def flush(self) -> None:
        """Deliver every byte in flight, in every direction, until nothing moves."""
        while any([pump.pump() for pump in self.pumps]):
            pass

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass, then deliver what it caused."""
        self.clock.advance(seconds)
        self.flush()

    def sample(self, name: str, **labels: str) -> float:
        """A value of the server's Prometheus metrics, 0 when never counted."""
        return self.server.metrics.registry.get_sample_value(name, labels) or 0

    def disconnect_all(self) -> None:
        for pump in self.pumps:
            pump.clientIO.loseConnection()
        self.flush()
