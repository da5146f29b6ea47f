"""Raw-socket clients for the adversarial tests."""

from __future__ import annotations

from typing import Optional

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from tests.support import ServerTestCase


class RawClient(Protocol):
    """Writes bytes and records what comes back and when the server hangs up."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = data
        self.received = b""
        self.lost: defer.Deferred = defer.Deferred()
        self.lost_at: Optional[float] = None
        self._waiting: list[tuple[bytes, defer.Deferred]] = []

    def connectionMade(self) -> None:
        if self.data:
            self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for item in list(self._waiting):
            if item[0] in self.received:
                self._waiting.remove(item)
                item[1].callback(self.received)

    def until(self, marker: bytes) -> defer.Deferred:
        """Fires once ``marker`` has been received."""
        d: defer.Deferred = defer.Deferred()
        if marker in self.received:
            d.callback(self.received)
        else:
            self._waiting.append((marker, d))
        return d

    def connectionLost(self, reason=None) -> None:
        self.lost_at = reactor.seconds()
        self.lost.callback(self.received)

    @property
    def status(self) -> Optional[int]:
        """The first response's status code, if one came."""
        if not self.received.startswith(b"HTTP/1."):
            return None
        return int(self.received.split(b" ", 2)[1])


class RawTestCase(ServerTestCase):
    """A server and raw connections to it, all aborted at cleanup."""

    @defer.inlineCallbacks
    def raw(self, data: bytes = b""):
        client = RawClient(data)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), client)
        self.addCleanup(lambda: client.transport.abortConnection()
                        if not client.lost.called else None)
        return client
