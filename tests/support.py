"""Test helpers: a real server on a loopback port and a real WebSocket test peer."""

from __future__ import annotations

import itertools
import os
from typing import Any, Callable, Optional

import orjson
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from symple_tx.autobahn_support import ReactorTimer, cancel_timers
from symple_tx.config import Settings
from symple_tx.service import SympleServer, SympleService

#: Seconds a test waits for an expected frame before failing.
WAIT = 5.0

_markers = itertools.count()


def with_timeout(d: Deferred, seconds: float = WAIT, what: str = "event") -> Deferred:
    """Fail ``d`` with a readable error instead of hanging the suite."""
    result: Deferred = Deferred()

    def expire() -> None:
        if not result.called:
            result.errback(AssertionError(f"timed out after {seconds}s waiting for {what}"))

    timer = reactor.callLater(seconds, expire)

    def done(value: Any) -> Any:
        if timer.active():
            timer.cancel()
        if not result.called:
            result.callback(value)
        return None

    d.addBoth(done)
    return result


class TestPeer(WebSocketClientProtocol):
    """A raw WebSocket peer that records every frame and its close."""

    #: Autobahn reads this in connectionMade before copying the factory's
    #: options, so only a class attribute turns Nagle's algorithm off.
    tcpNoDelay = True

    def __init__(self) -> None:
        super().__init__()
        self.frames: DeferredQueue = DeferredQueue()
        self.received: list[dict] = []
        self.opened: Deferred = Deferred()
        self.closed: Deferred = Deferred()
        self.close_code: Optional[int] = None
        self.welcome: Optional[dict] = None

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        frame = orjson.loads(payload)
        self.received.append(frame)
        self.frames.put(frame)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.close_code = code
        cancel_timers(self)
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"handshake failed: {reason}"))
        if not self.closed.called:
            self.closed.callback((code, reason))

    # -- sending ------------------------------------------------------------

    def send_json(self, frame: Any) -> None:
        self.sendMessage(orjson.dumps(frame))

    def send_raw(self, payload: bytes, binary: bool = False) -> None:
        self.sendMessage(payload, isBinary=binary)

    # -- waiting ------------------------------------------------------------

    def next(self, what: str = "frame", seconds: float = WAIT) -> Deferred:
        return with_timeout(self.frames.get(), seconds, what=what)

    @defer.inlineCallbacks
    def expect(self, match: Callable[[dict], bool] | str, what: str = "",
               seconds: float = WAIT):
        """The next frame that matches (type name or predicate); earlier ones are skipped."""
        if isinstance(match, str):
            kind = match
            match = lambda frame: frame.get("type") == kind  # noqa: E731
            what = what or kind
        while True:
            frame = yield self.next(what or "matching frame", seconds)
            if match(frame):
                return frame

    @defer.inlineCallbacks
    def auth(self, user: str, **fields: Any):
        self.send_json({"type": "auth", "user": user, **fields})
        frame = yield self.expect(lambda f: f.get("type") in ("welcome", "error"), "welcome")
        if frame["type"] != "welcome":
            raise AssertionError(f"auth refused: {frame}")
        self.welcome = frame
        return frame

    @property
    def address(self) -> str:
        peer = self.welcome["peer"]  # type: ignore[index]
        return f"{peer['user']}|{peer['id']}"

    @property
    def session_id(self) -> str:
        return self.welcome["peer"]["id"]  # type: ignore[index]

    def drain(self) -> list[dict]:
        """Frames already queued, without waiting."""
        frames = []
        while self.frames.pending:
            frames.append(self.frames.pending.pop(0))
        return frames

    def wait_closed(self) -> Deferred:
        return with_timeout(self.closed, what="close")

    @defer.inlineCallbacks
    def round_trip(self):
        """Echo a frame through the server; fires with every frame that arrived before it.

        Unlike ``expect`` nothing is thrown away, so callers can assert on
        exactly what the peer received (the echo itself is not returned).
        """
        marker = f"__round_trip_{next(_markers)}__"
        self.send_json({"type": "message", "to": self.address, "subtype": marker})
        frames = []
        while True:
            frame = yield self.next("round-trip echo")
            if frame.get("subtype") == marker:
                return frames
            frames.append(frame)


def peer_factory(url: str, headers: Optional[dict] = None, origin: Optional[str] = None,
                 protocol: type = TestPeer) -> WebSocketClientFactory:
    """A factory of ``TestPeer``s for ``url``: close codes reported, no pings, exact timers."""
    factory = WebSocketClientFactory(url, headers=headers, origin=origin)
    factory.protocol = protocol
    factory.setProtocolOptions(failByDrop=False, autoPingInterval=0)
    factory._batched_timer = ReactorTimer(reactor)
    return factory


class ServerTestCase(unittest.TestCase):
    """Starts a real server on an ephemeral loopback port for each test."""

    settings: Settings = Settings()

    def make_settings(self) -> Settings:
        settings = Settings(**{**self.settings.__dict__})
        if settings.redis_url and settings.cluster_prefix is None:
            # Test processes running side by side on one Redis must not form a cluster.
            settings.cluster_prefix = f"{settings.key_prefix}test-{os.getpid()}:cluster:"
        return settings

    def sample(self, name: str, **labels: str) -> float:
        """A value of the server's Prometheus metrics, 0 when never counted."""
        return self.server.metrics.registry.get_sample_value(name, labels) or 0

    def listen_on(self) -> str:
        """The server endpoint description (TLS tests override it)."""
        return "tcp:0:interface=127.0.0.1"

    def client_endpoint(self) -> Any:
        """How peers reach the server (TLS tests wrap it)."""
        return TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)

    @defer.inlineCallbacks
    def setUp(self):
        self.server = SympleServer(self.make_settings())
        endpoint = self.server.endpoint(self.listen_on())
        self.service = SympleService(self.server, [endpoint])
        self.service.startService()
        ports = yield self.service.listening()
        self.serve_peers_on(ports[0].getHost().port)

    def serve_peers_on(self, port: int, path: str = "/") -> None:
        """Point peers at ``port``; at cleanup they are aborted and the server stopped."""
        self.port = port
        self.url = f"ws://127.0.0.1:{port}{path}"
        self.peers: list[TestPeer] = []
        self.addCleanup(self._stop)

    def abort_peers(self) -> None:
        """Drop the peers still connected, so stopping never waits for them to drain."""
        for peer in self.peers:
            # TLS transports fail to abort once closed, so skip closed peers.
            if peer.transport is not None and not peer.closed.called:
                peer.transport.abortConnection()

    @defer.inlineCallbacks
    def _stop(self):
        self.abort_peers()
        yield self.stop_server()

    def stop_server(self) -> Optional[defer.Deferred]:
        """Stop what ``setUp`` started; tests that embed the server stop their application."""
        return self.service.stopService()

    def client_factory(self, headers: Optional[dict] = None, origin: Optional[str] = None,
                       protocol: type = TestPeer) -> WebSocketClientFactory:
        """A client factory for this server whose peers report close codes."""
        return peer_factory(self.url, headers, origin, protocol)

    @defer.inlineCallbacks
    def connect(self, headers: Optional[dict] = None, origin: Optional[str] = None,
                protocol: type = TestPeer):
        factory = self.client_factory(headers, origin, protocol)
        peer = factory.buildProtocol(None)
        yield connectProtocol(self.client_endpoint(), peer)
        self.peers.append(peer)
        yield with_timeout(peer.opened, what="WebSocket handshake")
        return peer

    @defer.inlineCallbacks
    def connect_small_window(self, receive_buffer: int = 4096):
        """A peer whose socket has a tiny receive buffer: a paused reader stalls the server fast."""
        import socket
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.connect(("127.0.0.1", self.port))  # the kernel completes it from the backlog
        sock.setblocking(False)
        factory = self.client_factory()
        try:
            transport = reactor.adoptStreamConnection(sock.fileno(), socket.AF_INET, factory)
        finally:
            sock.close()  # the reactor holds its own duplicate
        peer = transport.protocol
        self.peers.append(peer)
        yield with_timeout(peer.opened, what="WebSocket handshake")
        return peer

    @defer.inlineCallbacks
    def peer(self, user: str, **fields: Any):
        """A connected, authenticated peer."""
        peer = yield self.connect()
        yield peer.auth(user, **fields)
        return peer

    @defer.inlineCallbacks
    def settle(self, *peers: TestPeer):
        """Round-trip a frame through the server for each peer, so earlier sends are processed."""
        for peer in peers:
            peer.send_json({"type": "message", "to": peer.address, "subtype": "__settle__"})
            yield peer.expect(lambda f: f.get("subtype") == "__settle__", "settle echo")

    @defer.inlineCallbacks
    def collect(self, *peers: TestPeer):
        """Wait until the server has handled everything the peers sent so far.

        Fires with ``{peer: [frames received meanwhile]}``, nothing skipped.
        The first echo of every peer proves its earlier frames were handled;
        the second proves every frame those caused reached its recipient.
        """
        received: dict[TestPeer, list[dict]] = {peer: [] for peer in peers}
        for _ in range(2):
            for peer in peers:
                frames = yield peer.round_trip()
                received[peer].extend(frames)
        return received

    def assert_no_logged_errors(self) -> None:
        """The server logged no unhandled error (trial would flag them only at the end)."""
        self.assertEqual(self.flushLoggedErrors(), [])


def presences(frames: list[dict]) -> list[dict]:
    """The presence frames among ``frames``."""
    return [f for f in frames if f.get("type") == "presence"]


def presence_of(frames: list[dict], peer: TestPeer) -> list[dict]:
    """The presence frames among ``frames`` that announce ``peer``."""
    return [f for f in presences(frames) if f.get("from") == peer.address]


def redis_required(test: unittest.TestCase) -> None:
    """Skip when no Redis is reachable, except in CI where it must fail instead."""
    if os.environ.get("SYMPLE_REQUIRE_REDIS"):
        return
    import socket
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        raise unittest.SkipTest("no Redis on 127.0.0.1:6379 (set SYMPLE_REQUIRE_REDIS=1 to fail)")


@defer.inlineCallbacks
def eventually(condition: Callable[[], Any], seconds: float = WAIT, what: str = "condition",
               interval: float = 0.02):
    """Poll ``condition`` until it is true (returns its value) or fail after ``seconds``."""
    from twisted.internet.task import deferLater
    deadline = reactor.seconds() + seconds
    while True:
        value = condition()
        if value:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        yield deferLater(reactor, interval, lambda: None)


def free_port() -> int:
    """A loopback TCP port that nobody listens on right now."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def silent_server(test: unittest.TestCase,
                  answer_ping: bool = False) -> tuple[int, list[bytes]]:
    """A loopback port that accepts connections and never answers: (port, bytes received).

    With ``answer_ping`` it answers PING and nothing else, like a Redis that stalls."""
    from twisted.internet.protocol import Factory, Protocol
    received: list[bytes] = []
    connections: list[Any] = []

    class Silent(Protocol):
        def connectionMade(self) -> None:
            connections.append(self.transport)

        def dataReceived(self, data: bytes) -> None:
            received.append(data)
            if answer_ping and b"PING" in data.upper():
                self.transport.write(b"+PONG\r\n")

    listening = reactor.listenTCP(0, Factory.forProtocol(Silent), interface="127.0.0.1")

    def stop() -> Deferred:
        for transport in connections:
            transport.abortConnection()
        return listening.stopListening()
    test.addCleanup(stop)
    return listening.getHost().port, received


def self_signed_cert(directory: str, host: str = "localhost") -> tuple[str, str]:
    """Write a fresh self-signed key and certificate (PEM) for ``host``; returns their paths."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_path = os.path.join(directory, "key.pem")
    cert_path = os.path.join(directory, "cert.pem")
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@implementer(IPolicyForHTTPS)
class LoopbackPolicy:
    """Verify the certificate for ``localhost`` although Agent connects to the name."""

    def __init__(self, policy: BrowserLikePolicyForHTTPS) -> None:
        self.policy = policy

    def creatorForNetloc(self, hostname: bytes, port: int):
        return self.policy.creatorForNetloc(b"localhost", port)


@defer.inlineCallbacks
def http_get(url: str, headers: Optional[dict] = None, method: bytes = b"GET",
             context: Any = None):
    """One HTTP request on a fresh connection; fires with (code, headers, body)."""
    from twisted.web.client import Agent, readBody
    from twisted.web.http_headers import Headers
    agent = Agent(reactor) if context is None else Agent(reactor, contextFactory=context)
    response = yield with_timeout(
        agent.request(method, url.encode(), Headers({k: [v] for k, v in (headers or {}).items()})),
        what=f"HTTP response from {url}")
    body = yield with_timeout(readBody(response), what=f"HTTP body from {url}")
    return response.code, response.headers, body


def twistd_command() -> list[str]:
    """The twistd of the interpreter running the tests (a tox venv's own, in CI)."""
    import sys
    import sysconfig
    script = os.path.join(sysconfig.get_path("scripts"), "twistd")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def clean_environment(**extra: str) -> dict[str, str]:
    """os.environ without the variables the server reads, plus ``extra``.

    PYTHONPATH goes too (trial's --jobs workers set it to their sys.path), so
    a child finds the package where it is installed, not in the checkout.
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SYMPLE_") and k not in ("PORT", "REDIS_URL", "PYTHONPATH")}
    env.update(extra)
    return env


class ServerProcess:
    """A real ``twistd`` child process: its output, exit code and when it ended."""

    def __init__(self) -> None:
        from twisted.internet.protocol import ProcessProtocol

        self.output: list[bytes] = []
        self.ended: Deferred = Deferred()
        self.exit_code: Optional[int] = None
        #: twistd stopped by a signal re-raises it at exit, so this is set instead.
        self.exit_signal: Optional[int] = None
        self.ended_at: Optional[float] = None
        owner = self

        class _Protocol(ProcessProtocol):
            def outReceived(self, data: bytes) -> None:
                owner.output.append(data)

            errReceived = outReceived

            def processEnded(self, reason: Any) -> None:
                owner.exit_code = reason.value.exitCode
                owner.exit_signal = reason.value.signal
                owner.ended_at = reactor.seconds()
                owner.ended.callback(owner.exit_code)

        self.protocol = _Protocol()
        self.transport: Any = None

    @property
    def text(self) -> str:
        return b"".join(self.output).decode("utf-8", "replace")

    def signal(self, name: str) -> None:
        self.transport.signalProcess(name)

    def wait(self, seconds: float = WAIT) -> Deferred:
        return with_timeout(self.ended, seconds, what="the server process to exit")


def spawn_twistd(test: unittest.TestCase, args: list[str], cwd: Optional[str] = None,
                 env: Optional[dict] = None, command: Optional[list[str]] = None
                 ) -> ServerProcess:
    """Start ``twistd -n --pidfile= <args>``; the test's cleanup kills it if still running."""
    process = ServerProcess()
    argv = (command or twistd_command()) + ["-n", "--pidfile="] + args
    if cwd is None:
        cwd = test.mktemp()
        os.makedirs(cwd)
    process.transport = reactor.spawnProcess(
        process.protocol, argv[0], argv, env=env if env is not None else clean_environment(),
        path=cwd)

    def stop() -> Optional[Deferred]:
        if process.ended.called:
            return None
        process.signal("KILL")
        return process.ended
    test.addCleanup(stop)
    return process


@defer.inlineCallbacks
def wait_serving(process: ServerProcess, port: int, seconds: float = 15.0):
    """Poll /healthz until the child answers 200; fail early if it exits."""
    from twisted.internet.error import ConnectError
    from twisted.internet.task import deferLater
    deadline = reactor.seconds() + seconds
    while True:
        if process.ended.called:
            raise AssertionError(f"server exited ({process.exit_code}):\n{process.text}")
        try:
            code, _, body = yield http_get(f"http://127.0.0.1:{port}/healthz")
        except ConnectError:
            code = None
        if code == 200:
            return orjson.loads(body)
        if reactor.seconds() > deadline:
            raise AssertionError(f"server not serving after {seconds}s:\n{process.text}")
        yield deferLater(reactor, 0.1, lambda: None)
