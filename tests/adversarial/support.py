"""Raw-socket clients for the adversarial tests."""

from __future__ import annotations

from typing import Optional

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from tests.support import ServerTestCase, with_timeout

#: A WebSocket upgrade head without its final blank line.
UPGRADE = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
#: A complete one.
HANDSHAKE = UPGRADE + b"\r\n"


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
    def raw(self, data: bytes = b"", source: Optional[str] = None):
        """A raw connection; ``source`` picks the client address (127.0.0.2, ...)."""
        client = RawClient(data)
        bind = (source, 0) if source else None
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, bindAddress=bind)
        yield connectProtocol(endpoint, client)
        self.addCleanup(lambda: client.transport.abortConnection()
                        if not client.lost.called else None)
        return client

    @defer.inlineCallbacks
    def open_handshakes(self, count: int, source: str = "127.0.0.1", data: bytes = HANDSHAKE):
        """``count`` raw upgrade requests from ``source``, each answered (101 or a refusal)."""
        clients = []
        for _ in range(count):
            client = yield self.raw(data, source)
            clients.append(client)
        for client in clients:
            yield with_timeout(client.until(b"\r\n\r\n"), what="a handshake answer")
        return clients

    @defer.inlineCallbacks
    def peer_from(self, source: str, user: str, **fields):
        """An authenticated WebSocket peer connecting from ``source``."""
        peer = self.client_factory().buildProtocol(None)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port,
                                      bindAddress=(source, 0))
        yield connectProtocol(endpoint, peer)
        self.peers.append(peer)
        yield with_timeout(peer.opened, what="WebSocket handshake")
        yield peer.auth(user, **fields)
        return peer
