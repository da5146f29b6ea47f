"""Hostile clients on plain blocking sockets (standard library only).

Each attack is one client on one connection, bounded by bytes and seconds,
and returns what happened.  The tests run them in a thread against a real
server process; ``bench/attack.py`` runs them to measure what they cost.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Optional

UPGRADE = ("GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")

#: Longest room name the server accepts (wire.MAX_ROOM_NAME).
ROOM_NAME = 256


@dataclass
class Outcome:
    """What one attack did: bytes it got the server to take, and how it ended."""

    name: str
    sent: int = 0
    seconds: float = 0.0
    closed_by_server: bool = False
    status: Optional[int] = None
    notes: dict = field(default_factory=dict)


def frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 section 5.2)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def text(value: object) -> bytes:
    return frame(0x1, json.dumps(value).encode())


def connect(host: str, port: int, receive_buffer: Optional[int] = None,
            timeout: float = 5.0, source: Optional[str] = None) -> socket.socket:
    """A TCP connection; ``source`` picks the client address (127.0.0.2, ... on loopback)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source:
        sock.bind((source, 0))
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(timeout)
    sock.connect((host, port))
    return sock


def read_head(sock: socket.socket) -> bytes:
    """Read up to the end of a response head (a little of what follows may come too)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def status_of(head: bytes) -> Optional[int]:
    parts = head.split(b" ", 2)
    if len(parts) > 1 and head.startswith(b"HTTP/1.") and parts[1].isdigit():
        return int(parts[1])
    return None


def websocket(host: str, port: int, receive_buffer: Optional[int] = None,
              source: Optional[str] = None) -> tuple[socket.socket, bytes]:
    """A socket past a successful WebSocket handshake, and what followed the 101's head."""
    sock = connect(host, port, receive_buffer, source=source)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((UPGRADE.format(host=host, key=key) + "\r\n").encode())
    head = read_head(sock)
    if status_of(head) != 101:
        sock.close()
        raise ConnectionError(f"handshake refused: {head[:80]!r}")
    return sock, head.split(b"\r\n\r\n", 1)[1]


def _pump(sock: socket.socket, chunk: bytes, total: int, seconds: float,
          outcome: Outcome) -> None:
    """Send ``chunk`` again and again, never reading, up to ``total`` bytes or ``seconds``."""
    started = time.monotonic()
    deadline = started + seconds
    sock.settimeout(0.2)
    while outcome.sent < total and time.monotonic() < deadline:
        try:
            outcome.sent += sock.send(chunk)
        except socket.timeout:
            continue  # the server stopped reading: keep trying until the deadline
        except OSError:
            outcome.closed_by_server = True
            break
    outcome.seconds = time.monotonic() - started


def pings_unread(host: str, port: int, total: int = 64 << 20, seconds: float = 5.0,
                 authenticate: bool = False, source: Optional[str] = None) -> Outcome:
    """Pings without end from a client that never reads the pongs (small receive buffer)."""
    outcome = Outcome("pings unread" + (" after auth" if authenticate else " before auth"))
    sock, _ = websocket(host, port, receive_buffer=4096, source=source)
    try:
        if authenticate:
            sock.sendall(text({"type": "auth", "user": "pinger"}))
        _pump(sock, frame(0x9, b"p" * 125) * 64, total, seconds, outcome)
    finally:
        sock.close()
    return outcome


def endless_head(host: str, port: int, total: int = 8 << 20, seconds: float = 5.0,
                 source: Optional[str] = None) -> Outcome:
    """An upgrade head that never ends: ``X-Pad:`` and endless bytes."""
    outcome = Outcome("endless head")
    sock = connect(host, port, source=source)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((UPGRADE.format(host=host, key=key) + "X-Pad: ").encode())
        _pump(sock, b"x" * 4096, total, seconds, outcome)
        outcome.status = _status_after(sock)
    finally:
        sock.close()
    return outcome


def big_body(host: str, port: int, total: int = 150 << 20, seconds: float = 5.0,
             source: Optional[str] = None) -> Outcome:
    """``POST /`` announcing and sending a large body."""
    outcome = Outcome("POST body")
    sock = connect(host, port, source=source)
    try:
        sock.sendall(f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: {total}\r\n\r\n"
                     .encode())
        _pump(sock, b"b" * 65536, total, seconds, outcome)
        outcome.status = _status_after(sock)
    finally:
        sock.close()
    return outcome


def _status_after(sock: socket.socket) -> Optional[int]:
    try:
        sock.settimeout(2.0)
        return status_of(read_head(sock))
    except OSError:
        return None


def max_holdings(host: str, port: int, rooms: int, presence_size: int,
                 user: str = "hoarder",
                 source: Optional[str] = None) -> tuple[socket.socket, Outcome]:
    """Authenticate anonymously holding the most rooms and presence data allowed.

    Room names are as long as allowed, and the presence data is made of many
    small members (what costs the server most per byte of JSON).  Returns the
    open socket: the holdings last as long as it does.
    """
    outcome = Outcome("max rooms and presence")
    names = [f"{n:04d}".ljust(ROOM_NAME, "r") for n in range(rooms)]
    # ``[[],[],...]``: 3 bytes of JSON each, 64 bytes of Python objects each.
    data = {"l": [[] for _ in range((presence_size - 16) // 3)]}
    sock, _ = websocket(host, port, source=source)
    auth = text({"type": "auth", "user": user, "rooms": names, "data": data})
    sock.sendall(auth)
    outcome.sent = len(auth)
    reply = sock.recv(65536)
    outcome.notes["welcomed"] = b'"welcome"' in reply
    return sock, outcome


def slow_reader(host: str, port: int, messages: int = 100, size: int = 60_000,
                user: str = "slow") -> Outcome:
    """Two connections of one client: one never reads, the other sends it big messages.

    The server queues what the reader does not take, up to its send bound,
    then cuts it (4008).
    """
    outcome = Outcome("slow reader")
    reader_sock, buffered = websocket(host, port, receive_buffer=4096)
    reader = Reader(reader_sock, buffered)
    reader_sock.sendall(text({"type": "auth", "user": user + "-reader", "rooms": [user]}))
    while (welcome := reader.json()).get("type") != "welcome":
        pass
    peer = welcome["peer"]
    address = f"{peer['user']}|{peer['id']}"
    sender = Bystander(host, port, user + "-sender", rooms=[user])
    try:
        body = "x" * size
        for _ in range(messages):
            message = text({"type": "message", "to": address, "data": body})
            sender.sock.sendall(message)
            outcome.sent += len(message)
        outcome.closed_by_server = sender.wait_offline(address)
    finally:
        sender.close()
        reader_sock.close()
    return outcome


class Reader:
    """Reads the server's (unmasked) frames from a socket."""

    def __init__(self, sock: socket.socket, buffered: bytes = b"") -> None:
        self.sock = sock
        self.data = buffered

    def _fill(self, size: int) -> None:
        while len(self.data) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.data += chunk

    def frame(self) -> tuple[int, bytes]:
        self._fill(2)
        opcode, length = self.data[0] & 0x0F, self.data[1] & 0x7F
        offset = 2
        if length == 126:
            self._fill(4)
            length, offset = struct.unpack("!H", self.data[2:4])[0], 4
        elif length == 127:
            self._fill(10)
            length, offset = struct.unpack("!Q", self.data[2:10])[0], 10
        self._fill(offset + length)
        payload, self.data = self.data[offset:offset + length], self.data[offset + length:]
        return opcode, payload

    def json(self) -> dict:
        """The next text frame, decoded (control frames are skipped)."""
        while True:
            opcode, payload = self.frame()
            if opcode == 0x1:
                return json.loads(payload)
            if opcode == 0x9:  # the server's keepalive: answer, or be dropped
                self.sock.sendall(frame(0xA, payload))
            if opcode == 0x8:
                raise ConnectionError(f"closed by the server: {payload[2:]!r}")


class Bystander:
    """An authenticated client that times round trips of a message to itself."""

    def __init__(self, host: str, port: int, user: str = "bystander",
                 rooms: Optional[list] = None, source: Optional[str] = None) -> None:
        self.sock, buffered = websocket(host, port, source=source)
        self.reader = Reader(self.sock, buffered)
        self.sock.sendall(text({"type": "auth", "user": user, "rooms": rooms or []}))
        while True:
            welcome = self.reader.json()
            if welcome.get("type") == "welcome":
                break
        peer = welcome["peer"]
        self.address = f"{peer['user']}|{peer['id']}"
        self.count = 0

    def round_trip(self) -> float:
        """Seconds for one message to come back."""
        self.count += 1
        marker = f"rt{self.count}"
        started = time.perf_counter()
        self.sock.sendall(text({"type": "message", "to": self.address, "subtype": marker}))
        while self.reader.json().get("subtype") != marker:
            pass
        return time.perf_counter() - started

    def wait_offline(self, address: str, seconds: float = 10.0) -> bool:
        """Whether ``address`` goes offline (its presence says so) within ``seconds``."""
        deadline = time.monotonic() + seconds
        self.sock.settimeout(1.0)
        try:
            while time.monotonic() < deadline:
                try:
                    frame = self.reader.json()
                except socket.timeout:
                    continue
                if (frame.get("type") == "presence" and frame.get("from") == address
                        and frame.get("data", {}).get("online") is False):
                    return True
            return False
        finally:
            self.sock.settimeout(5.0)

    def close(self) -> None:
        self.sock.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def rss_bytes(pid: int) -> int:
    """A process's resident set size now (/proc/<pid>/status)."""
    return _status_field(pid, "VmRSS")


def peak_rss_bytes(pid: int) -> int:
    """The process's peak RSS since start or since ``reset_peak_rss``."""
    return _status_field(pid, "VmHWM")


def reset_peak_rss(pid: int) -> None:
    """Start a new peak (Linux: write 5 to /proc/<pid>/clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def _status_field(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(name)
