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

The password in the URL is the master's (``requirepass`` or an ACL user);
the ``sentinel_password`` and ``sentinel_username`` query parameters log in
to Sentinels that have a password of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import SplitResult, parse_qsl, unquote

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IStreamClientEndpoint
from zope.interface import implementer

from ..endpoints import tcp_endpoint
from . import connect
from .address import SCHEMES, RedisAddress, _safe

DEFAULT_SENTINEL_PORT = 26379
#: Query parameters of a Sentinel URL.
SENTINEL_OPTIONS = ("db", "sentinel_password", "sentinel_username")
#: Seconds to connect to, and hear back from, one Sentinel or candidate master.
QUERY_TIMEOUT = 2.0


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
            login = RedisAddress(host=sentinel[0], port=sentinel[1],
                                 password=address.sentinel_password,
                                 username=address.sentinel_username)
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


@implementer(IStreamClientEndpoint)
class SentinelEndpoint:
    """Connects to the service's current master, found afresh for every attempt."""

    def __init__(self, reactor: Any, address: SentinelAddress, timeout: float) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.resolver = MasterResolver(reactor, address, min(timeout, QUERY_TIMEOUT))

    def connect(self, factory: Any) -> Deferred:
        d = self.resolver.resolve()
        d.addCallback(lambda master: tcp_endpoint(self.reactor, master[0], master[1],
                                                  self.timeout).connect(factory))
        return d


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _why(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
