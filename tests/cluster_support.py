"""Cluster test helpers: a private redis-server, server processes, peers on any port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from typing import Any, Optional

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest
from twisted.web.client import Agent, readBody

from symple_tx.config import Settings
from symple_tx.service import SympleServer, SympleService
from symple_tx.websocket import ReactorTimer
from tests.support import WAIT, TestPeer, with_timeout

try:
    from tests.support import eventually, free_port
except ImportError:  # pragma: no cover - older support module
    @defer.inlineCallbacks
    def eventually(condition, seconds: float = WAIT, what: str = "condition",
                   interval: float = 0.02):
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
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: ``twistd`` of this interpreter (``python -m twisted.scripts.twistd`` has no main).
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class RedisServer:
    """A redis-server of our own on a free port, so a test may stop and restart it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: Optional[subprocess.Popen] = None
        self.directory = tempfile.mkdtemp(prefix="symple-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> defer.Deferred:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.directory],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return eventually(lambda: _listening(self.port), what="redis-server to listen")

    def stop(self) -> defer.Deferred:
        """Kill it; fires once the port is closed."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
        return eventually(lambda: not _listening(self.port), what="redis-server to stop")

    def cleanup(self) -> defer.Deferred:
        d = self.stop()
        d.addBoth(lambda _: shutil.rmtree(self.directory, ignore_errors=True))
        return d

    def command(self, *args: str) -> str:
        """Run one redis-cli command against it (test set-up only)."""
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], check=True,
                              capture_output=True, text=True, timeout=5).stdout


def require_redis_server(test: unittest.TestCase) -> None:
    if shutil.which("redis-server") is None and not os.environ.get("SYMPLE_REQUIRE_REDIS"):
        raise unittest.SkipTest("redis-server is not installed")


class ServerProcess:
    """``twistd -n symple`` in a child process, on its own port."""

    def __init__(self, redis_url: str, *args: str, port: Optional[int] = None) -> None:
        self.port = port or free_port()
        self.args = args
        self.redis_url = redis_url
        self.process: Optional[subprocess.Popen] = None
        self.log = tempfile.NamedTemporaryFile(prefix="symple-node-", suffix=".log",
                                               delete=False)

    def start(self) -> defer.Deferred:
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.process = subprocess.Popen(
            [*TWISTD, "-n", "--pidfile=",
             "symple", "--listen", f"tcp:{self.port}:interface=127.0.0.1",
             "--redis", self.redis_url, "--no-demo", *self.args],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        return self.healthy()

    @defer.inlineCallbacks
    def health(self):
        """(status code, body) of /healthz."""
        response = yield Agent(reactor).request(
            b"GET", f"http://127.0.0.1:{self.port}/healthz".encode())
        body = yield readBody(response)
        return response.code, body

    def healthy(self) -> defer.Deferred:
        return wait_healthy(self.port, self)

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def exited(self) -> defer.Deferred:
        return eventually(lambda: self.process is None or self.process.poll() is not None,
                          seconds=15, what="server process to exit")

    def output(self) -> str:
        with open(self.log.name) as f:
            return f.read()

    def cleanup(self) -> None:
        self.kill()
        self.log.close()
        os.unlink(self.log.name)


@defer.inlineCallbacks
def wait_healthy(port: int, process: Any = None, seconds: float = 20.0):
    """Poll /healthz until it answers 200."""
    agent = Agent(reactor)
    url = f"http://127.0.0.1:{port}/healthz".encode()
    deadline = reactor.seconds() + seconds
    while True:
        if process is not None and process.process.poll() is not None:
            raise AssertionError(f"server exited early:\n{process.output()}")
        try:
            response = yield agent.request(b"GET", url)
            yield readBody(response)
            if response.code == 200:
                return
        except Exception:
            pass
        if reactor.seconds() > deadline:
            raise AssertionError(f"server on port {port} never became healthy")
        yield deferLater(0.05)


def deferLater(seconds: float) -> defer.Deferred:
    from twisted.internet.task import deferLater as later
    return later(reactor, seconds, lambda: None)


class PeersMixin:
    """Connect ``TestPeer``s to any port; they are aborted at cleanup."""

    @defer.inlineCallbacks
    def connect_to(self, port: int):
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/")
        factory.protocol = TestPeer
        factory.setProtocolOptions(failByDrop=False, autoPingInterval=0)
        factory._batched_timer = ReactorTimer(reactor)
        peer = factory.buildProtocol(None)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), peer)
        self.addCleanup(lambda: peer.transport and peer.transport.abortConnection())
        yield with_timeout(peer.opened, what="WebSocket handshake")
        return peer

    @defer.inlineCallbacks
    def peer_on(self, port: int, user: str, **fields: Any):
        peer = yield self.connect_to(port)
        yield peer.auth(user, **fields)
        return peer


class InProcessCluster:
    """Several ``SympleServer``s in this process sharing one Redis: fast routing tests."""

    def __init__(self, redis_url: str, count: int, **settings: Any) -> None:
        self.redis_url = redis_url
        self.settings = settings
        self.count = count
        self.servers: list[SympleServer] = []
        self.services: list[SympleService] = []
        self.ports: list[int] = []

    @defer.inlineCallbacks
    def start(self):
        for _ in range(self.count):
            yield self.add()

    @defer.inlineCallbacks
    def add(self):
        server = SympleServer(Settings(redis_url=self.redis_url, demo=False, **self.settings))
        service = SympleService(server, [server.endpoint("tcp:0:interface=127.0.0.1")])
        service.startService()
        ports = yield service.listening()
        self.servers.append(server)
        self.services.append(service)
        self.ports.append(ports[0].getHost().port)
        yield eventually(lambda: server.router.bus.up, what="bus up")
        return server

    def stop(self) -> defer.Deferred:
        return defer.gatherResults([s.stopService() for s in self.services if s.running],
                                   consumeErrors=True)

    def nodes_known(self, count: int) -> bool:
        """Every server mirrors ``count`` - 1 other processes."""
        return all(len(s.router.bus.membership.nodes) == count - 1 for s in self.servers)
