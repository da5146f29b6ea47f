"""A bare Autobahn/Twisted WebSocket server: the floor symple_tx is compared with.

Each connection's first frame is echoed (it stands in for auth/welcome).  Later
frames are echoed too, or with ``--broadcast`` sent to every other connection
(encoded once, like a room fan-out).  No JSON, no routing, no limits.

    python bench/baseline_echo.py --port 9000 [--broadcast]
"""

from __future__ import annotations

import argparse
import signal

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor


class EchoProtocol(WebSocketServerProtocol):
    greeted = False

    def onOpen(self) -> None:
        self.factory.clients.add(self)

    def onClose(self, wasClean: bool, code: int, reason: str) -> None:
        self.factory.clients.discard(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.greeted and self.factory.broadcast:
            prepared = self.factory.prepareMessage(payload, isBinary)
            for client in self.factory.clients:
                if client is not self:
                    client.sendPreparedMessage(prepared)
            return
        self.greeted = True
        self.sendMessage(payload, isBinary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--broadcast", action="store_true")
    args = parser.parse_args()
    factory = WebSocketServerFactory(f"ws://127.0.0.1:{args.port}")
    factory.protocol = EchoProtocol
    factory.clients = set()
    factory.broadcast = args.broadcast
    reactor.listenTCP(args.port, factory, backlog=1024, interface="127.0.0.1")
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
    reactor.run()


if __name__ == "__main__":
    main()
