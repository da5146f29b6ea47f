"""Redis behind Sentinel: find the master before every connection, so a failover is followed.

``redis+sentinel://[[user]:password@]host1[:26379],host2[:26379]/service[/db]``
names the Sentinels and the service they monitor instead of one server.
``SentinelAddress.stream_endpoint`` is a ``SentinelEndpoint``: before each
connection attempt it asks the Sentinels in turn (``SENTINEL
get-master-addr-by-name``) where the master is, checks with ``ROLE`` that
the server named really is the master (a Sentinel cut off from the others
may still name the old one), and only then connects.  Every connection of
``connect`` — the session store's pool, the bus, the CLI — reconnects
through it, so after a failover the next attempt reaches the new master.

A master demoted while alive (``SENTINEL FAILOVER``, a healed partition)
keeps answering as one for a while, so waiting for connections to drop is
not enough: ``SwitchWatcher`` subscribes to ``+switch-master`` on every
Sentinel, and when the master announced for our service is not the one a
connection is on, that connection is closed and made again.

The password in the URL is the master's (``requirepass`` or an ACL user);
the ``sentinel_password`` and ``sentinel_username`` query parameters log in
to Sentinels that have a password of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import SplitResult, parse_qsl, unquote

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from ..endpoints import tcp_endpoint
from . import connect
from .address import SCHEMES, RedisAddress, _safe

DEFAULT_SENTINEL_PORT = 26379
#: Query parameters of a Sentinel URL.
SENTINEL_OPTIONS = ("db", "sentinel_password", "sentinel_username")
#: Seconds to connect to, and hear back from, one Sentinel or candidate master.
QUERY_TIMEOUT = 2.0
#: The channel on which every Sentinel announces a new master.
SWITCH_CHANNEL = "+switch-master"

log = Logger()


class MasterNotFound(ConnectionError):
    """No Sentinel named a master that answers as one; the message says what each said."""


@dataclass(frozen=True)
class SentinelAddress(RedisAddress):
    """The Sentinels to ask and the service to ask about; the master is found per connection."""

    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    sentinel_password: Optional[str] = None
    sentinel_username: Optional[str] = None

    #: Each connection finds the master afresh: a connection that finds itself
    #: on a replica (READONLY) is worth closing (``RedisBus`` does).
    follows_master = True

    def __str__(self) -> str:
        """How logs and errors name it: never a password."""
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.sentinels)
        return f"Sentinel service {self.service!r} via {hosts}"

    def stream_endpoint(self, reactor: Any, timeout: float) -> Any:
        return SentinelEndpoint(reactor, self, timeout)

    def server(self, host: str, port: int) -> RedisAddress:
        """The plain address of one server of the service (the master, once found)."""
        return RedisAddress(host=host, port=port, db=self.db, password=self.password,
                            username=self.username)

    def sentinel(self, host: str, port: int) -> RedisAddress:
        """The plain address of one Sentinel, with the Sentinels' own credentials."""
        return RedisAddress(host=host, port=port, password=self.sentinel_password,
                            username=self.sentinel_username)


def parse(url: str, parts: SplitResult) -> SentinelAddress:
    """``SCHEMES`` parser of ``redis+sentinel://``; ValueError with one clear line."""
    safe = _safe(url)
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    sentinels = tuple(_host_port(item, safe) for item in hosts.split(",") if item)
    if not sentinels:
        raise ValueError(f"Sentinel URL {safe!r} names no Sentinel")
    names = [p for p in parts.path.split("/") if p]
    if not names:
        raise ValueError(f"Sentinel URL {safe!r} names no service "
                         "(redis+sentinel://host:26379/mymaster)")
    if len(names) > 2 or (len(names) == 2 and not names[1].isdigit()):
        raise ValueError(f"Sentinel URL {safe!r}: expected /service or /service/db")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - set(SENTINEL_OPTIONS))
    if unknown:
        raise ValueError(f"Sentinel URL {safe!r}: unknown option {unknown[0]!r} "
                         f"(known: {', '.join(SENTINEL_OPTIONS)})")
    db = names[1] if len(names) == 2 else (options.get("db") or "0")
    if not db.isdigit():
        raise ValueError(f"Sentinel URL {safe!r}: the database must be a number")
    user, _, secret = userinfo.partition(":") if at else ("", "", "")
    return SentinelAddress(sentinels=sentinels, service=unquote(names[0]), db=int(db),
                           password=unquote(secret) if secret else None,
                           username=unquote(user) if user else None,
                           sentinel_password=options.get("sentinel_password") or None,
                           sentinel_username=options.get("sentinel_username") or None)


def _host_port(item: str, safe: str) -> tuple[str, int]:
    if item.startswith("["):  # [v6]:port
        host, _, port = item[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = item.partition(":")
    if not host:
        raise ValueError(f"Sentinel URL {safe!r} has an empty host")
    if not port:
        return host, DEFAULT_SENTINEL_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"Sentinel URL {safe!r} has an invalid port {port!r}")
    return host, int(port)


SCHEMES["redis+sentinel"] = parse


class MasterResolver:
    """Asks the Sentinels, in turn, where the master is, and checks that it is one."""

    def __init__(self, reactor: Any, address: SentinelAddress,
                 timeout: float = QUERY_TIMEOUT) -> None:
        self.reactor = reactor
        self.address = address
        self.timeout = timeout
        #: Asked first next time: the Sentinel that answered last.
        self.order = list(address.sentinels)
        #: Where the master was last found.
        self.master: Optional[tuple[str, int]] = None

    @inlineCallbacks
    def resolve(self):
        """Fires with the master's (host, port); fails with ``MasterNotFound``."""
        address = self.address
        problems = []
        for sentinel in list(self.order):
            where = f"Sentinel {sentinel[0]}:{sentinel[1]}"
            login = address.sentinel(*sentinel)
            try:
                reply = yield self._ask(login, "SENTINEL", "get-master-addr-by-name",
                                        address.service)
            except Exception as exc:
                problems.append(f"{where}: {_why(exc)}")
                continue
            if not isinstance(reply, list) or len(reply) != 2:
                problems.append(f"{where} does not know {address.service!r}")
                continue
            master = (_text(reply[0]), int(_text(reply[1])))
            named = f"{where} names {master[0]}:{master[1]}"
            try:
                role = yield self._ask(address.server(*master), "ROLE")
            except Exception as exc:
                problems.append(f"{named}, which does not answer ({_why(exc)})")
                continue
            role_name = _text(role[0]) if isinstance(role, list) and role else "?"
            if role_name != "master":
                problems.append(f"{named}, which is a {role_name}, not the master")
                continue
            self.order.remove(sentinel)
            self.order.insert(0, sentinel)
            self.master = master
            return master
        raise MasterNotFound(f"no master for {address.service!r}: " + "; ".join(problems))

    @inlineCallbacks
    def _ask(self, server: RedisAddress, *command: str):
        """One command on a short-lived connection of its own."""
        redis = yield connect.connect_once(server, self.reactor, self.timeout)
        try:
            reply = yield redis.execute_command(*command).addTimeout(self.timeout,
                                                                     self.reactor)
        finally:
            redis.disconnect().addErrback(lambda _: None)
        return reply


class SwitchWatcher:
    """Hears ``+switch-master`` from every Sentinel and tells the endpoints of the service.

    One per reactor and address, shared by every connection of a process
    (started with the first, stopped with the last).
    """

    _running: dict[tuple[int, SentinelAddress], "SwitchWatcher"] = {}

    def __init__(self, reactor: Any, address: SentinelAddress) -> None:
        self.reactor = reactor
        self.address = address
        self.endpoints: set["SentinelEndpoint"] = set()
        #: The master last announced, and how many announcements so far.
        self.announced: Optional[tuple[str, int]] = None
        self.announcements = 0
        self.subscriptions = [connect.Subscription(address.sentinel(*sentinel), reactor)
                              for sentinel in address.sentinels]
        for subscription in self.subscriptions:
            subscription.add(SWITCH_CHANNEL, self.heard)

    @classmethod
    def join(cls, reactor: Any, address: SentinelAddress,
             endpoint: "SentinelEndpoint") -> "SwitchWatcher":
        key = (id(reactor), address)
        watcher = cls._running.get(key)
        if watcher is None:
            watcher = cls._running[key] = cls(reactor, address)
            for subscription in watcher.subscriptions:
                subscription.start()
        watcher.endpoints.add(endpoint)
        return watcher

    def leave(self, endpoint: "SentinelEndpoint") -> Deferred:
        """Fires once the subscriptions are closed, if ``endpoint`` was the last one."""
        self.endpoints.discard(endpoint)
        if self.endpoints or self._running.get((id(self.reactor), self.address)) is not self:
            return succeed(None)
        del self._running[(id(self.reactor), self.address)]
        stopped = gatherResults([s.stop() for s in self.subscriptions], consumeErrors=True)
        return stopped.addCallback(lambda _: None)

    def heard(self, message: Any) -> None:
        """``<service> <old ip> <old port> <new ip> <new port>``."""
        parts = _text(message).split()
        if len(parts) != 5 or parts[0] != self.address.service or not parts[4].isdigit():
            return
        master = (parts[3], int(parts[4]))
        if master == self.announced:
            return  # every Sentinel says it: once is enough
        self.announced = master
        self.announcements += 1
        moved = [e for e in self.endpoints if e.leave_unless(master)]
        if moved:
            log.info("Sentinel announced {host}:{port} as master of {service!r}: "
                     "reconnecting {count} connection(s)", host=master[0], port=master[1],
                     service=self.address.service, count=len(moved))


@implementer(IStreamClientEndpoint)
class SentinelEndpoint:
    """Connects to the service's current master, found afresh for every attempt.

    ``start``/``stop`` (called by ``connect.Connection``) join and leave the
    process's ``SwitchWatcher``, which closes the connection when Sentinel
    announces another master.
    """

    def __init__(self, reactor: Any, address: SentinelAddress, timeout: float) -> None:
        self.reactor = reactor
        self.address = address
        self.timeout = timeout
        self.resolver = MasterResolver(reactor, address, min(timeout, QUERY_TIMEOUT))
        self.watcher: Optional[SwitchWatcher] = None
        #: The connection made last, and the master it is on.
        self.protocol: Any = None
        self.master: Optional[tuple[str, int]] = None

    def start(self) -> None:
        if self.watcher is None:
            self.watcher = SwitchWatcher.join(self.reactor, self.address, self)

    def stop(self) -> Deferred:
        watcher, self.watcher = self.watcher, None
        return watcher.leave(self) if watcher is not None else succeed(None)

    def connect(self, factory: Any) -> Deferred:
        heard = self.watcher.announcements if self.watcher is not None else 0
        d = self.resolver.resolve()

        def found(master: tuple[str, int]) -> Deferred:
            connected = tcp_endpoint(self.reactor, master[0], master[1],
                                     self.timeout).connect(factory)
            return connected.addCallback(self._connected, master, heard)
        return d.addCallback(found)

    def _connected(self, protocol: Any, master: tuple[str, int], heard: int) -> Any:
        self.protocol, self.master = protocol, master
        watcher = self.watcher
        if watcher is not None and watcher.announcements != heard:
            # announced while we were connecting to what may be the old one
            self.leave_unless(watcher.announced)
        return protocol

    def leave_unless(self, master: Optional[tuple[str, int]]) -> bool:
        """Close the connection unless it is on ``master``; True if it was closed."""
        protocol = self.protocol
        if master is None or self.master == master or protocol is None \
                or protocol.transport is None or not protocol.connected:
            return False
        protocol.transport.loseConnection()
        return True


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _why(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
