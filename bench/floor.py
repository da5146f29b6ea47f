"""The thinnest servers for the echo workload: what Python, and Twisted, cost alone.

Each one speaks just enough Symple for ``bench/wsload.py``'s request/response
pairs: a minimal WebSocket handshake, the first frame (``auth``) answered with
a ``welcome`` that names the peer's ``user|id``, and then, for every masked
text frame, the ``to`` address found with one ``bytes.find``, looked up in a
dict, and the payload forwarded unmasked to that connection with
``,"from":"<sender>"`` spliced in before its closing brace.  No JSON decoding
after auth, no validation, no rooms, no limits, no logging, no metrics.

Modes (``--mode``):

* ``twisted``: a plain ``Protocol`` on Twisted's default (epoll) reactor; each
  forwarded frame goes straight to the receiver's socket with one ``send``
  (``transport.write`` only for what the kernel does not take).
* ``twisted-nolog``: the same, with the reactor's legacy log context around
  each event (``log.callWithLogger``) replaced by a plain call, to show what
  that context costs.
* ``epoll``: the same logic on a bare ``select.epoll`` loop: the cost of
  Python alone.

    python bench/floor.py --mode twisted --port 9000
    python bench/run.py --only echo --floor twisted,epoll --node ../symple-server
"""

from __future__ import annotations

import argparse
import base64
import errno
import hashlib
import select
import signal
import socket
import sys
from typing import Any, Callable, Optional

import orjson

MODES = ("twisted", "twisted-nolog", "epoll")
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TO = b'"to":"'


def handshake_response(head: bytes) -> Optional[bytes]:
    """The 101 response to an upgrade request head, or None if it has no key."""
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            accept = base64.b64encode(hashlib.sha1(value.strip() + _GUID).digest())
            return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    return None


def server_frame(payload: bytes) -> bytes:
    """An unmasked FIN text frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def take_payloads(buf: bytes) -> tuple[list[bytes], bytes]:
    """The unmasked payloads of the complete masked text frames in ``buf``, and the rest."""
    payloads = []
    pos, size = 0, len(buf)
    while size - pos >= 6:
        length = buf[pos + 1] & 0x7F
        start = pos + 6
        if length == 126:
            if size - pos < 8:
                break
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            start = pos + 8
        elif length == 127:
            if size - pos < 14:
                break
            length = int.from_bytes(buf[pos + 2:pos + 10], "big")
            start = pos + 14
        end = start + length
        if end > size:
            break
        if length:
            key = (buf[start - 4:start] * ((length >> 2) + 1))[:length]
            payloads.append((int.from_bytes(buf[start:end], "little")
                             ^ int.from_bytes(key, "little")).to_bytes(length, "little"))
        pos = end
    return payloads, buf[pos:]


class Peers:
    """Who is connected, by ``user|id``; the welcome each one gets."""

    def __init__(self) -> None:
        self.by_address: dict[bytes, Any] = {}
        self.next_id = 0

    def admit(self, conn: Any, payload: bytes) -> bytes:
        """Register ``conn`` under the user its auth frame names; the welcome frame."""
        auth = orjson.loads(payload)
        self.next_id += 1
        user, peer_id = str(auth.get("user", "anonymous")), f"p{self.next_id}"
        conn.address = f"{user}|{peer_id}".encode()
        self.by_address[conn.address] = conn
        return server_frame(orjson.dumps({
            "type": "welcome", "protocol": "symple/4", "status": 200,
            "peer": {"user": user, "id": peer_id, "online": True},
            "rooms": [user, *auth.get("rooms", [])]}))

    def forward(self, sender: Any, payload: bytes) -> None:
        """Send ``payload`` to the connection its ``to`` names, with the sender's ``from``."""
        i = payload.find(_TO)
        if i < 0:
            return
        i += 6
        target = self.by_address.get(payload[i:payload.find(b'"', i)])
        if target is not None:
            target.send(server_frame(payload[:-1] + b',"from":"' + sender.address + b'"}'))

    def gone(self, conn: Any) -> None:
        if conn.address is not None:
            self.by_address.pop(conn.address, None)


# -- Twisted ---------------------------------------------------------------------


def run_twisted(port: int, nolog: bool) -> None:
    from twisted.internet import protocol, reactor

    if nolog:
        from twisted.internet import epollreactor
        from twisted.python import log

        def call(logger: Any, func: Callable[..., Any], *args: Any, **kw: Any) -> Any:
            return func(*args, **kw)
        # Only this process: the reactor's events run without a log context.
        epollreactor.log = type("NoContextLog", (), {"callWithLogger": staticmethod(call),
                                                       "err": staticmethod(log.err)})

    peers = Peers()

    class Floor(protocol.Protocol):
        address: Optional[bytes] = None

        def connectionMade(self) -> None:
            self.buf = b""
            self.upgraded = False
            self.sock = self.transport.socket
            self.transport.setTcpNoDelay(True)

        def send(self, frame: bytes) -> None:
            transport = self.transport
            if transport.dataBuffer or transport._tempDataLen:
                transport.write(frame)
                return
            try:
                sent = self.sock.send(frame)
            except OSError:
                sent = 0
            if sent < len(frame):
                transport.write(frame[sent:])

        def dataReceived(self, data: bytes) -> None:
            buf = self.buf + data if self.buf else data
            if not self.upgraded:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    self.buf = buf
                    return
                response = handshake_response(buf[:end])
                if response is None:
                    self.transport.loseConnection()
                    return
                self.transport.write(response)
                self.upgraded = True
                buf = buf[end + 4:]
            payloads, self.buf = take_payloads(buf)
            for payload in payloads:
                if self.address is None:
                    self.send(peers.admit(self, payload))
                else:
                    peers.forward(self, payload)

        def connectionLost(self, reason: Any = None) -> None:
            peers.gone(self)

    factory = protocol.Factory.forProtocol(Floor)
    reactor.listenTCP(port, factory, backlog=1024, interface="127.0.0.1")
    reactor.run()


# -- bare epoll ----------------------------------------------------------------------


class EpollConn:
    __slots__ = ("sock", "fd", "buf", "upgraded", "address", "pending", "loop")

    def __init__(self, sock: socket.socket, loop: "EpollLoop") -> None:
        self.sock, self.fd, self.loop = sock, sock.fileno(), loop
        self.buf = b""
        self.upgraded = False
        self.address: Optional[bytes] = None
        self.pending = b""

    def send(self, frame: bytes) -> None:
        if self.pending:
            self.pending += frame
            return
        try:
            sent = self.sock.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            return
        if sent < len(frame):
            self.pending = frame[sent:]
            self.loop.ep.modify(self.fd, select.EPOLLIN | select.EPOLLOUT)


class EpollLoop:
    def __init__(self, port: int) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(1024)
        self.listener.setblocking(False)
        self.ep = select.epoll()
        self.ep.register(self.listener.fileno(), select.EPOLLIN)
        self.conns: dict[int, EpollConn] = {}
        self.peers = Peers()

    def accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = EpollConn(sock, self)
            self.conns[conn.fd] = conn
            self.ep.register(conn.fd, select.EPOLLIN)

    def close(self, conn: EpollConn) -> None:
        self.ep.unregister(conn.fd)
        del self.conns[conn.fd]
        self.peers.gone(conn)
        conn.sock.close()

    def read(self, conn: EpollConn) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            return self.close(conn)
        buf = conn.buf + data if conn.buf else data
        if not conn.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                conn.buf = buf
                return
            response = handshake_response(buf[:end])
            if response is None:
                return self.close(conn)
            conn.send(response)
            conn.upgraded = True
            buf = buf[end + 4:]
        payloads, conn.buf = take_payloads(buf)
        peers = self.peers
        for payload in payloads:
            if conn.address is None:
                conn.send(peers.admit(conn, payload))
            else:
                peers.forward(conn, payload)

    def write(self, conn: EpollConn) -> None:
        try:
            sent = conn.sock.send(conn.pending)
        except BlockingIOError:
            return
        except OSError:
            return self.close(conn)
        conn.pending = conn.pending[sent:]
        if not conn.pending:
            self.ep.modify(conn.fd, select.EPOLLIN)

    def run(self) -> None:
        listen_fd, conns = self.listener.fileno(), self.conns
        poll = self.ep.poll
        while True:
            for fd, event in poll():
                if fd == listen_fd:
                    self.accept()
                    continue
                conn = conns.get(fd)
                if conn is None:
                    continue
                if event & select.EPOLLOUT:
                    self.write(conn)
                if event & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) \
                        and fd in conns:
                    self.read(conn)


def run_epoll(port: int) -> None:
    loop = EpollLoop(port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    loop.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=MODES, default="twisted")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.mode == "epoll":
        run_epoll(args.port)
    else:
        run_twisted(args.port, nolog=args.mode == "twisted-nolog")


if __name__ == "__main__":
    main()
