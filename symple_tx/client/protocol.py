"""The client's WebSocket connection: Autobahn in, ``SympleClient`` calls out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.python.failure import Failure

from ..autobahn_support import ReactorTimer, cancel_timers

if TYPE_CHECKING:
    from .peer import SympleClient


class SympleClientProtocol(WebSocketClientProtocol):
    """One WebSocket connection; everything it hears goes to its ``SympleClient``."""

    #: Autobahn reads this in connectionMade before copying the factory's
    #: options, so only a class attribute turns Nagle's algorithm off.
    tcpNoDelay = True

    factory: "SympleClientFactory"
    lost_reason: Optional[Failure] = None

    def onOpen(self) -> None:
        self.factory.client._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not isBinary:
            self.factory.client._received(self, payload)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        cancel_timers(self)
        self.factory.client._closed(self, code, reason)

    def connectionLost(self, reason: Failure) -> None:
        self.lost_reason = reason
        super().connectionLost(reason)


class SympleClientFactory(WebSocketClientFactory):
    protocol = SympleClientProtocol

    def __init__(self, client: "SympleClient", url: str, reactor: Any,
                 ping_interval: float, ping_timeout: float) -> None:
        super().__init__(url, reactor=reactor)
        self.client = client
        self.setProtocolOptions(failByDrop=False, openHandshakeTimeout=10,
                                closeHandshakeTimeout=2, autoPingInterval=ping_interval,
                                autoPingTimeout=ping_timeout)
        self._batched_timer = ReactorTimer(reactor)
