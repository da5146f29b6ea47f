"""A cheap WebSocket load generator: raw non-blocking sockets and epoll.

Client frames are built once (masked with a fixed key, as RFC 6455 allows) and
sent as plain bytes, so the generator spends its time in system calls, not in a
WebSocket library.  Receivers that only need to count identical frames count
bytes.  Each ``*_worker`` function runs in its own process and talks to the
controller (``run.py``) over a ``multiprocessing`` pipe:

* the controller sends commands (tuples whose first item names the step),
* the worker answers each step with a dict of results, or ``{"error": ...}``.

Every loop is bounded by a deadline, so a stuck server never hangs a run.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from typing import Any, Callable, Optional

import orjson

MASK = b"\x5a\x13\xc7\x2e"
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA
_EAGAIN = (errno.EAGAIN, errno.EWOULDBLOCK)
_IN, _OUT, _ERR = select.EPOLLIN, select.EPOLLOUT, select.EPOLLERR | select.EPOLLHUP


class LoadError(Exception):
    """The server refused, closed or did not answer in time."""


# -- frames ----------------------------------------------------------------------


def _masked(payload: bytes) -> bytes:
    n = len(payload)
    key = (MASK * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One masked client-to-server frame, ready to send."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + MASK + _masked(payload)


def server_frame_size(payload_len: int) -> int:
    """Bytes on the wire of an unmasked server frame with this payload length."""
    if payload_len < 126:
        return 2 + payload_len
    if payload_len < 65536:
        return 4 + payload_len
    return 10 + payload_len


def take_frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """Remove the complete server frames at the start of ``buf``: (opcode, payload)."""
    frames = []
    pos, size = 0, len(buf)
    while size - pos >= 2:
        opcode, length = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
        head = 2
        if length == 126:
            if size - pos < 4:
                break
            length, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
        elif length == 127:
            if size - pos < 10:
                break
            length, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
        end = pos + head + length
        if end > size:
            break
        frames.append((opcode, bytes(buf[pos + head:end])))
        pos = end
    del buf[:pos]
    return frames


def upgrade_request(host: str, port: int) -> bytes:
    return (f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


def auth_frame(user: str, rooms: list[str]) -> bytes:
    return client_frame(orjson.dumps({"type": "auth", "user": user, "rooms": rooms}))


# -- connecting and authenticating many clients ---------------------------------


class Client:
    """One connection's socket, read buffer and state while it is set up."""

    __slots__ = ("sock", "fd", "auth", "state", "buf", "welcome", "started", "done")

    def __init__(self, auth: bytes) -> None:
        self.sock: Optional[socket.socket] = None
        self.fd = -1
        self.auth = auth
        self.state = "connecting"
        self.buf = bytearray()
        self.welcome: Optional[dict] = None
        self.started = self.done = 0.0


def _recv_all(sock: socket.socket, into: bytearray) -> bool:
    """Read what is there; False once the peer has closed."""
    while True:
        try:
            data = sock.recv(262144)
        except BlockingIOError:
            return True
        except ConnectionError:
            return False
        if not data:
            return False
        into += data
        if len(data) < 262144:
            return True


def _send_all(sock: socket.socket, data: bytes, deadline: float) -> None:
    """Send everything, waiting (bounded) when the socket buffer is full."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            sent = 0
        view = view[sent:]
        if view:
            if time.monotonic() > deadline:
                raise LoadError("send timed out")
            select.select([], [sock], [], 0.05)


def _welcome_of(payload: bytes, echo: bool) -> dict:
    if echo:
        return {"echo": True}
    frame = orjson.loads(payload)
    if frame.get("type") != "welcome":
        raise LoadError(f"expected welcome, got {payload[:200]!r}")
    return frame


def connect_many(host: str, port: int, auths: list[bytes], concurrency: int,
                 deadline: float, echo: bool = False) -> list[Client]:
    """Connect, upgrade and authenticate every client, ``concurrency`` at a time.

    Returns the clients (sockets open and idle, unregistered from epoll) with
    the monotonic times each one started connecting and got its welcome.
    """
    upgrade = upgrade_request(host, port)
    pending = [Client(a) for a in auths]
    clients = list(pending)
    pending.reverse()
    ep = select.epoll()
    active: dict[int, Client] = {}

    def start_one() -> None:
        c = pending.pop()
        c.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.sock.setblocking(False)
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.fd = c.sock.fileno()
        c.started = time.monotonic()
        err = c.sock.connect_ex((host, port))
        if err not in (0, errno.EINPROGRESS):
            raise LoadError(f"connect failed: {errno.errorcode.get(err, err)}")
        active[c.fd] = c
        ep.register(c.fd, _OUT)

    try:
        while pending and len(active) < concurrency:
            start_one()
        while active:
            if time.monotonic() > deadline:
                raise LoadError(f"setup timed out with {len(active) + len(pending)} "
                                f"of {len(clients)} clients not welcomed")
            for fd, ev in ep.poll(0.5):
                c = active[fd]
                if c.state == "connecting":
                    err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise LoadError(f"connect failed: {errno.errorcode.get(err, err)}")
                    c.sock.send(upgrade)
                    c.state = "upgrading"
                    ep.modify(fd, _IN)
                    continue
                if not _recv_all(c.sock, c.buf):
                    raise LoadError(f"server closed during {c.state}: {bytes(c.buf[:200])!r}")
                if c.state == "upgrading":
                    end = c.buf.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    if not c.buf.startswith(b"HTTP/1.1 101"):
                        raise LoadError(f"upgrade refused: {bytes(c.buf[:200])!r}")
                    del c.buf[:end + 4]
                    c.sock.send(c.auth)
                    c.state = "authenticating"
                for opcode, payload in take_frames(c.buf):
                    if opcode == OP_CLOSE:
                        raise LoadError(f"server closed: {payload[2:200]!r}")
                    if opcode == OP_TEXT and c.state == "authenticating":
                        c.welcome = _welcome_of(payload, echo)
                        c.state = "open"
                if c.state == "open":
                    c.done = time.monotonic()
                    ep.unregister(fd)
                    del active[fd]
                    if pending:
                        start_one()
    finally:
        ep.close()
    return clients


def close_all(clients: list[Client]) -> None:
    for c in clients:
        if c.sock is not None:
            c.sock.close()


def _serve(pipe: Any, steps: dict[str, Callable[..., dict]], cleanup: Callable[[], None]) -> None:
    """Answer the controller's commands until it says ``quit`` or goes away."""
    try:
        while True:
            if not pipe.poll(120):
                return
            command, *args = pipe.recv()
            if command == "quit":
                return
            try:
                pipe.send(steps[command](*args))
            except Exception as exc:  # reported to the controller, which fails the run
                pipe.send({"error": f"{type(exc).__name__}: {exc}"})
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass
    finally:
        cleanup()


# -- scenario 1: connection rate and idle memory ---------------------------------


def connect_worker(pipe: Any, host: str, port: int, first: int, count: int,
                   concurrency: int, timeout: float, echo: bool) -> None:
    """``connect``: open ``count`` authenticated connections; ``close``: drop them."""
    clients: list[Client] = []

    def connect() -> dict:
        auths = [auth_frame(f"u{i}", []) for i in range(first, first + count)]
        clients[:] = connect_many(host, port, auths, concurrency,
                                  time.monotonic() + timeout, echo)
        return {"count": len(clients), "start": min(c.started for c in clients),
                "end": max(c.done for c in clients)}

    def close() -> dict:
        close_all(clients)
        clients.clear()
        return {}

    _serve(pipe, {"connect": connect, "close": close}, lambda: close_all(clients))


# -- resident members: connected clients that only read -------------------------


def resident_worker(pipe: Any, host: str, port: int, members: list[tuple[str, list[str]]],
                    concurrency: int, timeout: float) -> None:
    """``connect`` the ``(user, rooms)`` members, then read (and count) what they are sent.

    Between commands the worker keeps reading, so a server that sends
    presence to these members never holds it back for a slow reader;
    ``bytes`` answers how much they have received so far.
    """
    clients: list[Client] = []
    counter: list[ByteCounter] = []

    def connect() -> dict:
        auths = [auth_frame(user, rooms) for user, rooms in members]
        started = time.monotonic()
        clients[:] = connect_many(host, port, auths, concurrency, started + timeout)
        counter.append(ByteCounter([c.sock for c in clients]))
        return {"count": len(clients), "elapsed": time.monotonic() - started}

    steps = {"connect": connect, "bytes": lambda: {"bytes": counter[0].total if counter else 0}}
    try:
        while True:
            if counter:
                counter[0].poll(0.05)
            if not pipe.poll(0 if counter else 120):
                if counter:
                    continue
                return
            command, *args = pipe.recv()
            if command == "quit":
                return
            try:
                pipe.send(steps[command](*args))
            except Exception as exc:  # reported to the controller, which fails the run
                pipe.send({"error": f"{type(exc).__name__}: {exc}"})
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass
    finally:
        if counter:
            counter[0].close()
        close_all(clients)


# -- scenario 2: room fan-out ----------------------------------------------------


class ByteCounter:
    """Reads every registered socket and counts the bytes; nothing is parsed."""

    def __init__(self, socks: list[socket.socket]) -> None:
        self.ep = select.epoll()
        self.socks = {s.fileno(): s for s in socks}
        for fd in self.socks:
            self.ep.register(fd, _IN)
        self.buf = bytearray(1 << 20)
        self.total = 0

    def poll(self, timeout: float) -> int:
        """Read whatever arrives within ``timeout``; the number of bytes read."""
        got = 0
        buf, socks = self.buf, self.socks
        for fd, ev in self.ep.poll(timeout):
            try:
                n = socks[fd].recv_into(buf)
            except BlockingIOError:
                continue
            if n == 0:
                raise LoadError("server closed a receiver")
            got += n
        self.total += got
        return got

    def drain(self, quiet: float, deadline: float) -> None:
        """Read until nothing has arrived for ``quiet`` seconds."""
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            if self.poll(quiet / 4):
                last = time.monotonic()
            if last > deadline:
                raise LoadError("the server kept sending while it should be idle")

    def close(self) -> None:
        self.ep.close()


def fanout_receiver_worker(pipe: Any, host: str, port: int, first: int, count: int,
                           room: str, timeout: float, echo: bool) -> None:
    """``connect``, then ``reset`` (drain setup traffic), then ``receive`` N bytes each."""
    clients: list[Client] = []
    counter: list[ByteCounter] = []

    def connect() -> dict:
        auths = [auth_frame(f"r{i}", [room]) for i in range(first, first + count)]
        clients[:] = connect_many(host, port, auths, 32, time.monotonic() + timeout, echo)
        counter.append(ByteCounter([c.sock for c in clients]))
        return {"count": len(clients)}

    def reset() -> dict:
        counter[0].drain(0.3, time.monotonic() + timeout)
        counter[0].total = 0
        return {}

    def receive(per_client: int) -> dict:
        c = counter[0]
        target = per_client * len(clients)
        deadline = time.monotonic() + timeout
        while c.total < target:
            c.poll(0.2)
            if time.monotonic() > deadline:
                raise LoadError(f"received {c.total} of {target} bytes")
        return {"end": time.monotonic(), "bytes": c.total}

    def cleanup() -> None:
        if counter:
            counter[0].close()
        close_all(clients)

    _serve(pipe, {"connect": connect, "reset": reset, "receive": receive}, cleanup)


def fanout_sender_worker(pipe: Any, host: str, port: int, room: str, window: int,
                         timeout: float, echo: bool) -> None:
    """One sender plus one probe receiver in the room.

    ``send`` posts ``messages`` frames to the room, keeping at most ``window``
    of them ahead of what the probe has received, so the server always has
    work queued but is never flooded beyond what it can deliver.
    """
    state: dict[str, Any] = {}

    def connect() -> dict:
        sender, probe = connect_many(
            host, port, [auth_frame("sender", [room]), auth_frame("probe", [room])],
            2, time.monotonic() + timeout, echo)
        message = {"type": "message", "to": room, "subtype": "bench",
                   "data": {"text": "hello room", "n": 12345}}
        payload = orjson.dumps(message)
        if not echo:  # the server appends the sender's address
            peer = sender.welcome["peer"]
            payload = orjson.dumps({**message, "from": f"{peer['user']}|{peer['id']}"})
        state.update(sender=sender, probe=probe, frame=client_frame(orjson.dumps(message)),
                     size=server_frame_size(len(payload)),
                     counter=ByteCounter([sender.sock, probe.sock]))
        return {"frame_size": state["size"]}

    def reset() -> dict:
        state["counter"].drain(0.3, time.monotonic() + timeout)
        return {}

    def send(messages: int) -> dict:
        counter: ByteCounter = state["counter"]
        sender: socket.socket = state["sender"].sock
        frame, size = state["frame"], state["size"]
        counter.total = 0
        sent = 0
        start = time.monotonic()
        deadline = start + timeout
        target = messages * size
        while counter.total < target:
            received = counter.total // size
            burst = min(window - (sent - received), messages - sent)
            if burst > 0:
                _send_all(sender, frame * burst, deadline)
                sent += burst
            counter.poll(0.2)
            if time.monotonic() > deadline:
                raise LoadError(f"probe received {counter.total // size} of {messages}")
        return {"start": start, "end": time.monotonic()}

    def cleanup() -> None:
        if "counter" in state:
            state["counter"].close()
            close_all([state["sender"], state["probe"]])

    _serve(pipe, {"connect": connect, "reset": reset, "send": send}, cleanup)


# -- scenario 3: request/response round trips ------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def rtt_worker(pipe: Any, host: str, port: int, timeout: float, echo: bool,
               responder_port: Optional[int] = None) -> None:
    """A requester and a responder peer in one process (one core for the generator).

    ``run`` sends requests open-loop at ``rate``/s for ``seconds`` (after
    ``warmup`` seconds not counted) and returns the round-trip percentiles.
    Against the echo baseline the server itself answers, so there is no responder.
    With ``responder_port`` the responder connects to that server instead.
    """
    state: dict[str, Any] = {}

    def connect() -> dict:
        if responder_port is None:  # both on one server
            requester, responder = connect_many(
                host, port, [auth_frame("req", ["rtt"]), auth_frame("resp", ["rtt"])],
                2, time.monotonic() + timeout, echo)
        else:  # the responder on another process of a cluster
            [requester] = connect_many(host, port, [auth_frame("req", ["rtt"])], 1,
                                       time.monotonic() + timeout, echo)
            [responder] = connect_many(host, responder_port, [auth_frame("resp", ["rtt"])], 1,
                                       time.monotonic() + timeout, echo)
        state.update(req=requester, resp=responder)
        counter = ByteCounter([requester.sock, responder.sock])
        counter.drain(0.3, time.monotonic() + timeout)  # presence of each other
        counter.close()
        return {}

    def run(rate: float, seconds: float, warmup: float) -> dict:
        req, resp = state["req"], state["resp"]
        if echo:
            to = "echo"
        else:
            to = f"{resp.welcome['peer']['user']}|{resp.welcome['peer']['id']}"
        total = int(rate * (seconds + warmup))
        skip = int(rate * warmup)
        frames = [client_frame(b'{"type":"message","to":"%s","id":%d}' % (to.encode(), i))
                  for i in range(total)]
        sent_at = [0.0] * total
        due_at = [0.0] * total
        rtts: list[float] = []
        late: list[float] = []
        req_sock, resp_sock = req.sock, resp.sock
        req_fd, resp_fd = req_sock.fileno(), resp_sock.fileno()
        req_buf, resp_buf = bytearray(), bytearray()
        ep = select.epoll()
        ep.register(req_fd, _IN)
        if not echo:
            ep.register(resp_fd, _IN)
        interval = 1.0 / rate
        now = time.monotonic
        start = now()
        deadline = start + seconds + warmup + timeout
        nxt = 0
        answered = 0
        try:
            while answered < total:
                t = now()
                if t > deadline:
                    raise LoadError(f"{answered} of {total} requests answered")
                while nxt < total and start + nxt * interval <= t:
                    sent_at[nxt] = now()
                    due_at[nxt] = start + nxt * interval
                    req_sock.send(frames[nxt])
                    nxt += 1
                wait = (start + nxt * interval - now()) if nxt < total else 0.05
                for fd, ev in ep.poll(max(wait, 0.0)):
                    if fd == resp_fd and not echo:
                        if not _recv_all(resp_sock, resp_buf):
                            raise LoadError("server closed the responder")
                        for opcode, payload in take_frames(resp_buf):
                            if opcode != OP_TEXT:
                                continue
                            request = orjson.loads(payload)
                            answer = b'{"type":"message","to":"%s","id":%d}' % (
                                request["from"].encode(), request["id"])
                            resp_sock.send(client_frame(answer))
                        continue
                    if not _recv_all(req_sock, req_buf):
                        raise LoadError("server closed the requester")
                    for opcode, payload in take_frames(req_buf):
                        if opcode != OP_TEXT:
                            continue
                        t = now()
                        i = orjson.loads(payload)["id"]
                        answered += 1
                        if i >= skip:
                            rtts.append(t - sent_at[i])
                            late.append(t - due_at[i])
        finally:
            ep.close()
        elapsed = now() - start
        rtts.sort()
        late.sort()
        return {"count": len(rtts), "rate": total / elapsed,
                "p50": percentile(rtts, 0.50), "p99": percentile(rtts, 0.99),
                "p999": percentile(rtts, 0.999), "max": rtts[-1] if rtts else float("nan"),
                "p99_scheduled": percentile(late, 0.99)}

    def cleanup() -> None:
        close_all([c for c in (state.get("req"), state.get("resp")) if c is not None])

    _serve(pipe, {"connect": connect, "run": run}, cleanup)


# -- scenario 4: many request/response pairs ("echo") ------------------------------


def _address(client: Client) -> str:
    peer = client.welcome["peer"]  # type: ignore[index]
    return f"{peer['user']}|{peer['id']}"


def _drain_setup_traffic(clients: list[Client], timeout: float) -> None:
    """Read (and forget) the presence frames the clients caused each other."""
    counter = ByteCounter([c.sock for c in clients])
    try:
        counter.drain(0.3, time.monotonic() + timeout)
    finally:
        counter.close()


def pairs_worker(pipe: Any, host: str, port: int, first: int, pairs: int, timeout: float,
                 echo: bool) -> None:
    """``pairs`` requester/responder pairs, each pair in a room of its own.

    ``run`` sends requests open-loop at ``rate``/s in total, round-robin over
    the pairs, for ``seconds`` (after ``warmup`` seconds not counted); each
    responder answers ``to`` the ``from`` it received.  Against the echo
    baseline the server answers itself.  Requests not answered within
    ``timeout`` after the last one was sent are reported as lost.
    """
    state: dict[str, Any] = {}

    def connect() -> dict:
        auths = []
        for i in range(first, first + pairs):
            auths += [auth_frame(f"req{i}", [f"pair{i}"]), auth_frame(f"resp{i}", [f"pair{i}"])]
        clients = connect_many(host, port, auths, 32, time.monotonic() + timeout, echo)
        _drain_setup_traffic(clients, timeout)
        state.update(requesters=clients[0::2], responders=clients[1::2])
        return {}

    def run(rate: float, seconds: float, warmup: float) -> dict:
        requesters, responders = state["requesters"], state["responders"]
        targets = [b"echo" if echo else _address(r).encode() for r in responders]
        total = int(rate * (seconds + warmup))
        skip = int(rate * warmup)
        frames = [client_frame(b'{"type":"message","to":"%s","id":%d}' % (targets[i % pairs], i))
                  for i in range(total)]
        sent_at = [0.0] * total
        rtts: list[float] = []
        ep = select.epoll()
        socks: dict[int, tuple[socket.socket, bytearray, bool]] = {}
        for c in requesters:
            socks[c.fd] = (c.sock, bytearray(), True)
            ep.register(c.fd, _IN)
        if not echo:
            for c in responders:
                socks[c.fd] = (c.sock, bytearray(), False)
                ep.register(c.fd, _IN)
        req_socks = [c.sock for c in requesters]
        interval = 1.0 / rate
        now = time.monotonic
        start = now()
        give_up = start + seconds + warmup + timeout
        nxt = answered = 0
        try:
            while answered < total:
                t = now()
                if t > give_up:
                    break
                while nxt < total and start + nxt * interval <= t:
                    sent_at[nxt] = now()
                    req_socks[nxt % pairs].send(frames[nxt])
                    nxt += 1
                wait = (start + nxt * interval - now()) if nxt < total else 0.05
                for fd, ev in ep.poll(max(wait, 0.0)):
                    sock, buf, is_requester = socks[fd]
                    if not _recv_all(sock, buf):
                        raise LoadError("server closed a pair's connection")
                    for opcode, payload in take_frames(buf):
                        if opcode != OP_TEXT:
                            continue
                        frame = orjson.loads(payload)
                        if is_requester:
                            t = now()
                            i = frame["id"]
                            answered += 1
                            if i >= skip:
                                rtts.append(t - sent_at[i])
                        else:
                            sock.send(client_frame(b'{"type":"message","to":"%s","id":%d}' % (
                                frame["from"].encode(), frame["id"])))
        finally:
            ep.close()
        elapsed = now() - start
        rtts.sort()
        return {"count": len(rtts), "sent": total, "lost": total - answered,
                "rate": total / elapsed, "p50": percentile(rtts, 0.50),
                "p99": percentile(rtts, 0.99), "p999": percentile(rtts, 0.999)}

    def cleanup() -> None:
        close_all(state.get("requesters", []) + state.get("responders", []))

    _serve(pipe, {"connect": connect, "run": run}, cleanup)


# -- scenario 5: WebRTC call set-up --------------------------------------------------

CANDIDATES = 12


def sample_sdp(size: int = 4096) -> str:
    """A plausible browser offer (audio + video, the usual codec list), padded to ``size``."""
    lines = ["v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0",
             "a=group:BUNDLE 0 1", "a=extmap-allow-mixed", "a=msid-semantic: WMS stream"]
    for mid, (kind, codecs) in enumerate((
            ("audio", ["111 opus/48000/2", "63 red/48000/2", "9 G722/8000", "0 PCMU/8000",
                       "8 PCMA/8000", "13 CN/8000", "110 telephone-event/48000"]),
            ("video", ["96 VP8/90000", "97 rtx/90000", "98 VP9/90000", "99 rtx/90000",
                       "100 H264/90000", "101 rtx/90000", "102 AV1/90000", "103 rtx/90000",
                       "104 red/90000", "105 rtx/90000", "106 ulpfec/90000"]))):
        payloads = " ".join(c.split()[0] for c in codecs)
        lines += [f"m={kind} 9 UDP/TLS/RTP/SAVPF {payloads}", "c=IN IP4 0.0.0.0",
                  "a=rtcp:9 IN IP4 0.0.0.0", "a=ice-ufrag:Zx3q", "a=ice-pwd:Jh8Rk2mVq0aP5cT1",
                  "a=ice-options:trickle", "a=fingerprint:sha-256 " + ":".join(["A7"] * 32),
                  "a=setup:actpass", f"a=mid:{mid}", "a=sendrecv", "a=rtcp-mux"]
        for codec in codecs:
            number, name = codec.split()
            lines.append(f"a=rtpmap:{number} {name}")
            lines.append(f"a=rtcp-fb:{number} transport-cc")
        lines.append(f"a=ssrc:{1000 + mid} cname:bench")
    sdp = "\r\n".join(lines) + "\r\n"
    while len(sdp) < size:
        sdp += "a=ssrc:%d msid:stream track%d\r\n" % (2000 + len(sdp), len(sdp))
    return sdp[:size]


def _candidate(i: int) -> dict:
    return {"candidate": f"candidate:{842163049 + i} 1 udp {1677729535 - i} 203.0.113.{i + 5} "
                         f"{46154 + i} typ srflx raddr 10.0.0.2 rport {46154 + i} generation 0 "
                         "ufrag Zx3q network-cost 999",
            "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "Zx3q"}


class Call:
    """One caller/callee pair placing calls one after another."""

    __slots__ = ("caller", "callee", "caller_to", "callee_to", "n", "started", "got_answer",
                 "caller_candidates", "callee_candidates", "setup_done")

    def __init__(self, caller: Client, callee: Client) -> None:
        self.caller, self.callee = caller, callee
        self.caller_to = _address(callee)  # where the caller sends
        self.callee_to = _address(caller)
        self.n = 0
        self.started = 0.0
        self.got_answer = False
        self.caller_candidates = self.callee_candidates = 0
        self.setup_done = False


def _signal(sock: socket.socket, to: str, subtype: str, data: dict) -> None:
    frame = client_frame(orjson.dumps({"type": "message", "to": to, "subtype": subtype,
                                       "data": data}))
    _send_all(sock, frame, time.monotonic() + 10.0)


def call_worker(pipe: Any, host: str, port: int, first: int, pairs: int, timeout: float) -> None:
    """``pairs`` caller/callee pairs, each calling its callee again as soon as a call ends.

    A call is the demo's sequence: ``call:init`` -> ``call:accept`` ->
    ``call:offer`` (4 KB SDP) and the caller's 12 ``call:candidate`` ->
    ``call:answer`` and the callee's 12 candidates -> ``call:hangup``.  Its set-up
    time runs from sending ``call:init`` until both sides hold the remote SDP and
    every remote candidate; the next call starts when the callee has the hangup.
    """
    state: dict[str, Any] = {}
    sdp = sample_sdp()
    offer = {"type": "offer", "sdp": sdp}
    answer = {"type": "answer", "sdp": sdp}
    candidates = [_candidate(i) for i in range(CANDIDATES)]

    def connect() -> dict:
        auths = []
        for i in range(first, first + pairs):
            auths += [auth_frame(f"caller{i}", [f"call{i}"]), auth_frame(f"callee{i}", [f"call{i}"])]
        clients = connect_many(host, port, auths, 32, time.monotonic() + timeout)
        _drain_setup_traffic(clients, timeout)
        state["calls"] = [Call(clients[i], clients[i + 1]) for i in range(0, len(clients), 2)]
        return {}

    def run(seconds: float, warmup: float) -> dict:
        calls: list[Call] = state["calls"]
        now = time.monotonic
        ep = select.epoll()
        owners: dict[int, tuple[Call, bool, bytearray]] = {}
        for call in calls:
            for client, is_caller in ((call.caller, True), (call.callee, False)):
                owners[client.fd] = (call, is_caller, bytearray())
                ep.register(client.fd, _IN)
        start = now()
        measure_from = start + warmup
        stop_at = measure_from + seconds
        give_up = stop_at + timeout
        setups: list[float] = []
        completed = ended = 0
        in_flight = 0

        def place(call: Call) -> None:
            nonlocal in_flight
            call.n += 1
            call.started = now()
            call.got_answer = call.setup_done = False
            call.caller_candidates = call.callee_candidates = 0
            in_flight += 1
            _signal(call.caller.sock, call.caller_to, "call:init", {"callId": call.n})

        def check_setup(call: Call) -> None:
            nonlocal completed
            if (not call.setup_done and call.got_answer
                    and call.caller_candidates == CANDIDATES
                    and call.callee_candidates == CANDIDATES):
                call.setup_done = True
                if call.started >= measure_from and call.started < stop_at:
                    setups.append(now() - call.started)
                    completed += 1
                _signal(call.caller.sock, call.caller_to, "call:hangup",
                        {"callId": call.n, "reason": "hangup"})

        try:
            for call in calls:
                place(call)
            while in_flight:
                if now() > give_up:
                    raise LoadError(f"{in_flight} calls did not finish")
                for fd, ev in ep.poll(0.2):
                    call, is_caller, buf = owners[fd]
                    sock = call.caller.sock if is_caller else call.callee.sock
                    if not _recv_all(sock, buf):
                        raise LoadError("server closed a caller or callee")
                    for opcode, payload in take_frames(buf):
                        if opcode != OP_TEXT:
                            continue
                        subtype = orjson.loads(payload).get("subtype")
                        if is_caller:
                            if subtype == "call:accept":
                                _signal(sock, call.caller_to, "call:offer",
                                        {"callId": call.n, "sdp": offer})
                                for c in candidates:
                                    _signal(sock, call.caller_to, "call:candidate",
                                            {"callId": call.n, "candidate": c})
                            elif subtype == "call:answer":
                                call.got_answer = True
                            elif subtype == "call:candidate":
                                call.callee_candidates += 1
                            check_setup(call)
                        else:
                            if subtype == "call:init":
                                _signal(sock, call.callee_to, "call:accept", {"callId": call.n})
                            elif subtype == "call:offer":
                                _signal(sock, call.callee_to, "call:answer",
                                        {"callId": call.n, "sdp": answer})
                                for c in candidates:
                                    _signal(sock, call.callee_to, "call:candidate",
                                            {"callId": call.n, "candidate": c})
                            elif subtype == "call:candidate":
                                call.caller_candidates += 1
                                check_setup(call)
                            elif subtype == "call:hangup":
                                in_flight -= 1
                                ended += 1
                                if now() < stop_at:
                                    place(call)
        finally:
            ep.close()
        return {"calls": completed, "all_calls": ended, "setups": setups}

    def cleanup() -> None:
        for call in state.get("calls", []):
            close_all([call.caller, call.callee])

    _serve(pipe, {"connect": connect, "run": run}, cleanup)
