"""``twistd symple --workers N``: N server processes behind the same listening ports.

The supervisor binds every ``--listen`` socket itself and hands the open
sockets to N worker processes (the same command line, run again); the
kernel spreads incoming connections over the workers that accept on them.
The workers are ordinary cluster members joined by the Redis bus, so a
message crosses between two connections accepted by different workers.  A
worker that dies is restarted; stopping the supervisor stops the workers
gracefully (SIGTERM, then SIGKILL after the drain timeout).
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any, Optional, Sequence

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import (AdoptedStreamServerEndpoint, SSL4ServerEndpoint,
                                        TCP4ServerEndpoint, TCP6ServerEndpoint)
from twisted.internet import fdesc
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.main import CONNECTION_DONE
from twisted.internet.protocol import ProcessProtocol
from zope.interface import implementer
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

log = Logger()

#: Set for a worker: the inherited listening descriptors, one per endpoint.
WORKER_FDS = "SYMPLE_WORKER_FDS"
#: Seconds before restarting a worker; doubled while workers die young.
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
#: A worker that lived this long counts as healthy again.
HEALTHY_AFTER = 10.0
TWISTD = ("-c", "from twisted.scripts.twistd import run; run()")


def bind(endpoint: Any) -> socket.socket:
    """A listening socket for a ``tcp:``/``ssl:`` endpoint, inheritable by children."""
    if isinstance(endpoint, (TCP4ServerEndpoint, SSL4ServerEndpoint)):
        family = socket.AF_INET
    elif isinstance(endpoint, TCP6ServerEndpoint):
        family = socket.AF_INET6
    else:
        raise ValueError("--workers supports tcp:, tcp6: and ssl: listeners only")
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((endpoint._interface, endpoint._port))
    sock.listen(endpoint._backlog)
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock


class InheritedEndpoint:
    """Listens on a socket the supervisor opened, with the original endpoint's TLS."""

    def __init__(self, reactor: Any, fileno: int, original: Any) -> None:
        family = socket.AF_INET6 if isinstance(original, TCP6ServerEndpoint) else socket.AF_INET
        self.adopted = AdoptedStreamServerEndpoint(reactor, fileno, family)
        self.tls = getattr(original, "_sslContextFactory", None)

    def listen(self, factory: Any) -> defer.Deferred:
        if self.tls is not None:
            factory = TLSMemoryBIOFactory(self.tls, False, factory)
        return self.adopted.listen(factory)


def worker_endpoints(reactor: Any, endpoints: Sequence[Any]) -> Optional[list]:
    """In a worker: the inherited sockets in place of ``endpoints``; otherwise None.

    A worker also stops when its supervisor goes, however it went: the
    supervisor holds the other end of the worker's stdin.
    """
    value = os.environ.get(WORKER_FDS)
    if not value:
        return None
    fds = [int(fd) for fd in value.split(",")]
    if len(fds) != len(endpoints):
        raise ValueError(f"{WORKER_FDS} names {len(fds)} sockets for {len(endpoints)} listeners")
    reactor.addReader(_SupervisorWatch(reactor))
    return [InheritedEndpoint(reactor, fd, ep) for fd, ep in zip(fds, endpoints)]


@implementer(IReadDescriptor)
class _SupervisorWatch:
    """Reads the worker's stdin: end of file means the supervisor is gone, so stop."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.gone = False
        fdesc.setNonBlocking(0)

    def fileno(self) -> int:
        return 0

    def doRead(self) -> Any:
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return None
        return None if data else CONNECTION_DONE

    def connectionLost(self, reason: Any) -> None:
        if not self.gone and self.reactor.running:
            self.gone = True
            log.warn("The supervisor is gone: stopping")
            self.reactor.stop()

    def logPrefix(self) -> str:
        return "supervisor-watch"


class _Worker(ProcessProtocol):
    def __init__(self, supervisor: "Supervisor", index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.started = supervisor.reactor.seconds()
        self.ended: defer.Deferred = defer.Deferred()

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)
        self.supervisor.ended(self, reason.value)


class Supervisor(Service):
    """Runs and restarts the worker processes; owns the listening sockets."""

    def __init__(self, count: int, endpoints: Sequence[Any], argv: Sequence[str],
                 drain_timeout: float, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.count = count
        self.endpoints = list(endpoints)
        self.argv = list(argv)
        self.drain_timeout = drain_timeout
        self.sockets: list[socket.socket] = []
        self.workers: dict[int, _Worker] = {}
        self.delays = [RESTART_DELAY] * count
        self.stopping = False

    def privilegedStartService(self) -> None:
        for endpoint in self.endpoints:
            try:
                self.sockets.append(bind(endpoint))
            except (OSError, ValueError) as exc:
                where = f"{getattr(endpoint, '_interface', '') or '*'}:" \
                        f"{getattr(endpoint, '_port', '?')}"
                raise SystemExit(f"twistd symple: cannot listen on {where}: {exc}") from None
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        for index in range(self.count):
            self.spawn(index)

    def spawn(self, index: int) -> None:
        if self.stopping:
            return
        fds = [sock.fileno() for sock in self.sockets]
        env = dict(os.environ, **{WORKER_FDS: ",".join(map(str, fds))})
        child_fds: dict[int, Any] = {0: "w", 1: 1, 2: 2}
        child_fds.update({fd: fd for fd in fds})
        worker = _Worker(self, index)
        argv = [sys.executable, *TWISTD, "-n", "--pidfile=", "symple", *self.argv]
        worker.transport = self.reactor.spawnProcess(worker, sys.executable, argv, env=env,
                                                     childFDs=child_fds)
        self.workers[index] = worker
        log.info("Started worker {index} (pid {pid})", index=index, pid=worker.transport.pid)

    def ended(self, worker: _Worker, status: Any) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        if self.stopping:
            return
        lived = self.reactor.seconds() - worker.started
        delay = self.delays[worker.index]
        self.delays[worker.index] = (RESTART_DELAY if lived > HEALTHY_AFTER
                                     else min(delay * 2, MAX_RESTART_DELAY))
        log.warn("Worker {index} ended ({status}); restarting in {delay:.1f}s",
                 index=worker.index, status=status, delay=delay)
        self.reactor.callLater(delay, self.spawn, worker.index)

    @defer.inlineCallbacks
    def stopService(self):
        """SIGTERM every worker (each drains and says goodbye), SIGKILL the late ones."""
        self.stopping = True
        super().stopService()
        workers = list(self.workers.values())
        for worker in workers:
            _signal(worker, "TERM")
        def kill_late() -> None:
            for worker in workers:
                _signal(worker, "KILL")
        late = self.reactor.callLater(self.drain_timeout + 5, kill_late)
        yield defer.DeferredList([w.ended for w in workers])
        if late.active():
            late.cancel()
        for sock in self.sockets:
            sock.close()


def _signal(worker: _Worker, name: str) -> None:
    transport: Any = worker.transport  # zope's IProcessTransport reads badly to mypy
    try:
        transport.signalProcess(name)
    except Exception:  # already gone
        pass
