"""Cluster test helpers: a private redis-server, server processes, peers on any port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from typing import Any, Optional

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from symple_tx.config import Settings
from symple_tx.service import SympleServer, SympleService
from tests.support import (clean_environment, eventually, free_port, http_get, peer_factory,
                           spawn_twistd, wait_serving, with_timeout)

#: The source tree under test: server processes run this code, like the test process.
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class RedisServer:
    """A redis-server of our own on a free port, so a test may stop and restart it."""

    def __init__(self, password: Optional[str] = None, *options: str) -> None:
        self.port = free_port()
        self.password = password
        self.options = options
        self.process: Optional[subprocess.Popen] = None
        self.directory = tempfile.mkdtemp(prefix="symple-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> defer.Deferred:
        auth = ["--requirepass", self.password] if self.password else []
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.directory, *auth,
             *self.options],
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
        auth = ["--no-auth-warning", "-a", self.password] if self.password else []
        return subprocess.run(["redis-cli", "-p", str(self.port), *auth, *args], check=True,
                              capture_output=True, text=True, timeout=5).stdout


def require_redis_server(test: unittest.TestCase) -> None:
    if shutil.which("redis-server") is None and not os.environ.get("SYMPLE_REQUIRE_REDIS"):
        raise unittest.SkipTest("redis-server is not installed")


@defer.inlineCallbacks
def private_redis(test: unittest.TestCase, password: Optional[str] = None):
    """A started ``RedisServer`` owned by ``test`` and removed at its cleanup.

    Skips the test where redis-server is missing (fails under SYMPLE_REQUIRE_REDIS).
    """
    require_redis_server(test)
    redis = RedisServer(password)
    test.addCleanup(redis.cleanup)
    yield redis.start()
    return redis


class Node:
    """``twistd -n symple`` in a child process on its own port, sharing ``redis_url``."""

    def __init__(self, test: unittest.TestCase, redis_url: str, *args: str) -> None:
        self.test = test
        self.port = free_port()
        self.args = ["symple", "--listen", f"tcp:{self.port}:interface=127.0.0.1",
                     "--redis", redis_url, "--no-demo", *args]
        self.process: Any = None

    def start(self) -> defer.Deferred:
        self.process = spawn_twistd(self.test, self.args,
                                    env=clean_environment(PYTHONPATH=SOURCE_ROOT))
        return self.healthy()

    def healthy(self) -> defer.Deferred:
        return wait_serving(self.process, self.port, seconds=20)

    @defer.inlineCallbacks
    def health(self):
        """(status code, body) of /healthz."""
        code, _, body = yield http_get(f"http://127.0.0.1:{self.port}/healthz")
        return code, body

    @defer.inlineCallbacks
    def metric(self, name: str):
        """The sum of every sample of ``name`` on /metrics."""
        _, _, body = yield http_get(f"http://127.0.0.1:{self.port}/metrics")
        return metric_sum(body.decode(), name)

    def kill(self) -> None:
        self.process.signal("KILL")

    def exited(self) -> defer.Deferred:
        return self.process.wait(15)


def metric_sum(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"))


class PeersMixin:
    """Connect ``TestPeer``s to any port; they are aborted at cleanup."""

    @defer.inlineCallbacks
    def connect_to(self, port: int):
        peer = peer_factory(f"ws://127.0.0.1:{port}/").buildProtocol(None)
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


def is_message(text: str):
    """A frame predicate: a message whose data is ``text``."""
    return lambda f: f.get("type") == "message" and f.get("data") == text


def presence_of(peer, online: bool):
    """A frame predicate: ``peer``'s presence, online or offline."""
    return lambda f: (f.get("type") == "presence" and f["data"].get("id") == peer.session_id
                      and f["data"].get("online") is online)
