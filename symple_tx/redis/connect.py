"""Every Redis connection, built one way: ``endpoint`` plus a kept-open ``Connection``.

txredisapi speaks the protocol; connecting is ours, for three reasons:

* TLS must verify the server (``optionsForClientTLS`` with the system's CAs
  or ``RedisAddress.ca_file``).  txredisapi's ``ssl_context_factory=True``
  verifies nothing, so it is never used.
* Whoever uses a connection must know at once whether it is usable (the
  bus drops instead of queueing) and a subscriber must subscribe again in
  every new connection; ``Connection`` and ``Subscription`` report ``ready``
  and ``lost``, and subscribe every time.
* An outage is one readable log line when it starts and one when it ends
  (``Outage``), not a line per retry.

``Pool`` wraps connections in txredisapi's command interface (``get``,
``publish``, ...) for the session store, ``Emitter``/``Sessions`` and the CLI.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Protocol

import txredisapi
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.defer import CancelledError, Deferred, fail, gatherResults, succeed
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.error import (ConnectError, ConnectionDone, ConnectionLost,
                                    ConnectionRefusedError, DNSLookupError)
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..endpoints import load_trust_root
from .address import RedisAddress

log = Logger()

#: Seconds a connection attempt may take.
CONNECT_TIMEOUT = 10.0
#: Reconnection backoff: first retry after this many seconds ...
INITIAL_DELAY = 0.25
#: ... growing by this factor to at most ``MAX_DELAY``.
FACTOR = 2.0
MAX_DELAY = 4.0
#: Seconds ``stop`` waits for a connection to close before dropping it.
STOP_TIMEOUT = 2.0
#: Seconds a backend tool's command (``Emitter``, ``Sessions``, the CLI) may wait.
COMMAND_TIMEOUT = 5.0


def _reactor(reactor: Any) -> Any:
    if reactor is None:
        from twisted.internet import reactor as default
        return default
    return reactor


def tls_options(address: RedisAddress) -> Any:
    """Client TLS that verifies the server's certificate and name (or IP address)."""
    if address.ca_file:
        try:
            trust = load_trust_root(address.ca_file)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot use the Redis CA file {address.ca_file!r}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
    else:
        trust = ssl.platformTrust()
    return ssl.optionsForClientTLS(address.tls_hostname, trustRoot=trust)


def endpoint(address: RedisAddress, reactor: Any = None,
             timeout: float = CONNECT_TIMEOUT) -> Any:
    """The one way to reach Redis: the address's stream, wrapped in verified TLS if asked."""
    stream = address.stream_endpoint(_reactor(reactor), timeout)
    if address.tls:
        return wrapClientTLS(tls_options(address), stream)
    return stream


def reason(failure: Failure) -> str:
    """A connection failure in a few words a person can read."""
    error = failure.value
    if isinstance(error, SSL.Error):
        details = [part for item in (error.args[0] if error.args else [])
                   if isinstance(item, tuple) for part in item[-1:] if part]
        return "TLS: " + ("; ".join(details) or "handshake failed")
    if type(error).__name__ == "VerificationError":  # service_identity: wrong name
        return "TLS: the certificate is not for this host"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectTimeout):
        return "timed out"
    if isinstance(error, DNSLookupError):
        return "unknown host"
    if isinstance(error, (ConnectionDone, ConnectionLost)):
        return "the server closed the connection"
    text = failure.getErrorMessage()
    if failure.check(ConnectError) and error.osError is not None:  # type: ignore[union-attr]
        text = str(error.osError)  # type: ignore[union-attr]
    return " ".join(text.split()) or type(error).__name__


class Listener(Protocol):
    """What a ``Connection`` tells the code that uses it."""

    def ready(self, connection: "Connection", protocol: Any) -> None:
        """The connection is usable (logged in, database selected, subscribed)."""

    def lost(self, connection: "Connection", protocol: Any) -> None:
        """A usable connection is gone; a new one is being made."""

    def failed(self, connection: "Connection", why: str) -> None:
        """An attempt to connect failed (``why`` is readable); another follows."""


class _Factory(txredisapi.RedisFactory):
    """Builds txredisapi protocols; our ``Connection`` does the (re)connecting.

    A refused AUTH or SELECT makes txredisapi stop trying for good; we keep
    trying with backoff (the operator may fix Redis) and say why instead.
    """

    owner: Optional["Connection"] = None
    #: Why Redis refused the last login (AUTH or SELECT), for the log line.
    refusal: Optional[str] = None

    def stopTrying(self) -> Deferred:
        return succeed(None)

    def buildProtocol(self, addr: Any) -> Any:
        # Not txredisapi's: it pools a connection as soon as it has logged in,
        # before TLS has verified the server; ``Pool.ready`` adds it once it has.
        protocol = self.protocol(self.charset, replyTimeout=self.replyTimeout,
                                 password=self.password, dbid=self.dbid,
                                 convertNumbers=self.convertNumbers, username=self.username)
        protocol.factory = self
        return protocol

    def connectionError(self, why: str) -> None:
        # Not txredisapi's: it fails a Deferred nobody waits for.
        self.refusal = why.removeprefix("Redis error: ")


@implementer(IHandshakeListener)
class _Verified:
    """Usable only once TLS has verified the server: until then nothing has been said."""

    _handshaken = False
    _handshake_waiting: tuple[Deferred, ...] = ()
    lost_reason: Optional[Failure] = None

    def handshakeCompleted(self) -> None:
        self._handshaken = True
        waiting, self._handshake_waiting = self._handshake_waiting, ()
        for d in waiting:
            d.callback(self)

    def when_verified(self, tls: bool) -> Deferred:
        if not tls or self._handshaken:
            return succeed(self)
        d: Deferred = Deferred()
        self._handshake_waiting += (d,)
        return d

    def connectionLost(self, why: Any) -> None:
        self.lost_reason = why
        super().connectionLost(why)  # type: ignore[misc]


class _Publisher(_Verified, txredisapi.RedisProtocol):
    pass


_CONFIRMATIONS = {b"subscribe": True, "subscribe": True,
                  b"unsubscribe": False, "unsubscribe": False}


class _Subscriber(_Verified, txredisapi.SubscriberProtocol):
    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        owner = self.factory.owner
        if owner is not None:
            owner.received(channel, message)

    def replyReceived(self, reply: Any) -> None:
        """(Un)subscribe confirmations go to the owner, one per channel.

        txredisapi pairs them with whichever command waits, which is wrong as
        soon as two (un)subscribe commands are in flight; ``Subscription``
        sends its own and counts the confirmations per channel instead.
        """
        owner = self.factory.owner
        if isinstance(reply, list) and len(reply) == 3 and owner is not None \
                and not isinstance(reply[0], list) and reply[0] in _CONFIRMATIONS:
            owner.confirmed(self, reply[1], _CONFIRMATIONS[reply[0]])
            return
        if isinstance(reply, Exception) and not self.replyQueue.waiting and owner is not None:
            owner.refused(self, reply)
            return
        super().replyReceived(reply)


class _Attempt(Factory):
    """The factory handed to the endpoint for one attempt (quiet: no line per attempt)."""

    noisy = False

    def __init__(self, factory: _Factory) -> None:
        self.factory = factory

    def buildProtocol(self, addr: Any) -> Any:
        return self.factory.buildProtocol(addr)


class Connection:
    """One Redis connection kept open; ``protocol`` is set only while it is usable."""

    protocol_class: type = _Publisher

    def __init__(self, address: RedisAddress, reactor: Any = None, *,
                 listeners: Iterable[Listener] = (), charset: Optional[str] = None,
                 factory: Optional[_Factory] = None, retry: bool = True,
                 timeout: float = CONNECT_TIMEOUT) -> None:
        self.address = address
        self.reactor = _reactor(reactor)
        self.listeners = list(listeners)
        self.retry = retry
        if factory is None:
            factory = _Factory(None, address.db or None, 1, isLazy=True, charset=charset,
                               password=address.password, convertNumbers=False,
                               username=address.username)
            factory.protocol = self.protocol_class
            factory.owner = self
        self.factory = factory
        self.endpoint: Any = endpoint(address, self.reactor, timeout)
        self.timeout = timeout
        self._login_timer: Any = None
        #: The usable protocol, or None.
        self.protocol: Optional[Any] = None
        #: Failed attempts in a row (the backoff's exponent).
        self.attempts = 0
        self._current: Any = None
        self._connecting: Optional[Deferred] = None
        self._retry_call: Any = None
        self._running = False

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        # An endpoint that watches something (Sentinel's announcements) lives as we do.
        watch = getattr(self.endpoint, "start", None)
        if watch is not None:
            watch()
        self._attempt()

    def stop(self) -> Deferred:
        """Stop reconnecting and close the connection; fires once it is closed."""
        self._running = False
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        if self._connecting is not None:
            self._connecting.cancel()
        self._stop_login_timer()
        unwatch = getattr(self.endpoint, "stop", None)
        unwatched = unwatch() if unwatch is not None else succeed(None)
        current, self._current = self._current, None
        self.protocol = None
        if current is None:
            return unwatched
        closed = current.whenDisconnected()
        current.transport.loseConnection()
        # A server that never completes the close (a stalled TLS peer) is dropped.
        timer = self.reactor.callLater(STOP_TIMEOUT, current.transport.abortConnection)

        def done(_: Any) -> Deferred:
            if timer.active():
                timer.cancel()
            return unwatched
        return closed.addCallback(done)

    @property
    def running(self) -> bool:
        return self._running

    # -- connecting ----------------------------------------------------------------

    def _attempt(self) -> None:
        self._retry_call = None
        self.factory.refusal = None
        d = self.endpoint.connect(_Attempt(self.factory))
        self._connecting = d
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, protocol: Any) -> None:
        self._connecting = None
        if not self._running:
            protocol.transport.loseConnection()
            return
        self._current = protocol
        # A server that accepts but never finishes TLS or AUTH must not hold us.
        self._login_timer = self.reactor.callLater(self.timeout, self._login_expired, protocol)
        protocol.whenDisconnected().addCallback(self._disconnected)
        tls = self.address.tls
        protocol.whenConnected().addCallback(lambda p: p.when_verified(tls)).addCallback(
            self._logged_in)

    def _login_expired(self, protocol: Any) -> None:
        self._login_timer = None
        if protocol is self._current and self.protocol is None:
            self.factory.refusal = "no answer (is it a Redis server, with TLS if rediss://?)"
            protocol.transport.abortConnection()

    def _stop_login_timer(self) -> None:
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()
        self._login_timer = None

    def _logged_in(self, protocol: Any) -> None:
        if protocol is self._current and self._running:
            self._usable(protocol)

    def _usable(self, protocol: Any) -> None:
        """AUTH and SELECT are done; a PING proves the far end is a Redis that answers
        (without a password txredisapi counts a bare TCP connection as ready)."""
        d = protocol.ping()
        d.addCallback(self._answered, protocol)
        d.addErrback(self._ping_failed, protocol)

    def _answered(self, reply: Any, protocol: Any) -> None:
        if isinstance(reply, Exception):  # an error reply, should one come back as a value
            return self._ping_failed(Failure(reply), protocol)
        if protocol is self._current and self._running:
            self._ready(protocol)

    def _ping_failed(self, failure: Failure, protocol: Any) -> None:
        if protocol is self._current and protocol.transport is not None:
            self.factory.refusal = f"PING failed: {failure.getErrorMessage()}"
            protocol.transport.loseConnection()

    def _ready(self, protocol: Any) -> None:
        self._stop_login_timer()
        self.attempts = 0
        self.protocol = protocol
        for listener in list(self.listeners):
            listener.ready(self, protocol)

    def _disconnected(self, protocol: Any) -> None:
        if protocol is not self._current:
            return
        self._stop_login_timer()
        self._current = None
        if self.protocol is protocol:
            self.protocol = None
            if self._running:
                for listener in list(self.listeners):
                    listener.lost(self, protocol)
        elif self._running:
            lost = protocol.lost_reason
            why = self.factory.refusal or (reason(lost) if lost is not None else None)
            self._report(why or "the connection closed while logging in")
        self._schedule()

    def _failed(self, failure: Failure) -> None:
        self._connecting = None
        if failure.check(CancelledError) and not self._running:
            return
        self._report(reason(failure))
        self._schedule()

    def _report(self, why: str) -> None:
        self.attempts += 1
        for listener in list(self.listeners):
            listener.failed(self, why)

    def _schedule(self) -> None:
        if not self._running or not self.retry:
            self._running = False
            return
        delay = min(INITIAL_DELAY * FACTOR ** min(self.attempts, 16), MAX_DELAY)
        self._retry_call = self.reactor.callLater(delay, self._attempt)

    # -- subscribers ---------------------------------------------------------------

    def received(self, channel: Any, message: Any) -> None:
        """A published message (subscribers only)."""


class Subscription(Connection):
    """A subscribed connection: subscribes to all its channels again in every new connection.

    It counts as ready only once subscribed, so nothing published after its
    ``ready`` is missed.  Channels may be added and removed at any time;
    ``add`` tells when Redis has confirmed the subscription, and
    ``is_subscribed`` whether it has (on the current connection): a message
    published after that confirmation is received.
    """

    protocol_class = _Subscriber

    def __init__(self, address: RedisAddress, reactor: Any = None, **options: Any) -> None:
        super().__init__(address, reactor, **options)
        self.handlers: dict[bytes, Callable[[bytes], Any]] = {}
        #: Times the channels were (re)subscribed: one per Redis connection.
        self.subscriptions = 0
        self._waiting: list[tuple[int, Deferred]] = []
        #: The connection our (UN)SUBSCRIBE commands go to, once it is logged in.
        self._wire: Optional[Any] = None
        #: Channels whose subscription Redis has confirmed on ``_wire``.
        self._confirmed: set[bytes] = set()
        #: (Un)subscribe commands sent per channel and not confirmed yet.
        self._outstanding: dict[bytes, int] = {}
        #: Channels of the connection's first SUBSCRIBE not confirmed yet.
        self._first: set[bytes] = set()
        self._confirming: dict[bytes, list[Deferred]] = {}

    def add(self, channel: str, handler: Callable[[bytes], Any]) -> Deferred:
        """Hand each message on ``channel`` to ``handler``.

        Fires once Redis has confirmed the subscription, on this connection
        or (while Redis is away) on the next one.
        """
        name = channel.encode()
        known = name in self.handlers
        self.handlers[name] = handler
        if self.is_subscribed(channel):
            return succeed(channel)
        d: Deferred = Deferred()
        self._confirming.setdefault(name, []).append(d)
        if not known:
            self._send("SUBSCRIBE", name)
        return d

    def remove(self, channel: str) -> None:
        """Stop receiving ``channel`` (a message already on its way is dropped)."""
        name = channel.encode()
        if self.handlers.pop(name, None) is None:
            return
        self._confirmed.discard(name)
        self._confirming.pop(name, None)
        self._send("UNSUBSCRIBE", name)

    def is_subscribed(self, channel: str) -> bool:
        """Whether Redis has confirmed ``channel`` on the current connection."""
        return channel.encode() in self._confirmed

    def _send(self, command: str, name: bytes) -> None:
        wire = self._wire
        if wire is None or wire.transport is None:
            return  # the next connection subscribes to what ``handlers`` holds then
        self._outstanding[name] = self._outstanding.get(name, 0) + 1
        wire.transport.write(wire._build_command(command, name))

    def _usable(self, protocol: Any) -> None:
        channels = list(self.handlers)
        self._wire = protocol
        self._confirmed = set()
        self._outstanding = {name: 1 for name in channels}
        self._first = set(channels)
        if not channels:
            return self._subscribed(protocol)
        protocol.transport.write(protocol._build_command("SUBSCRIBE", *channels))

    def confirmed(self, protocol: Any, channel: Any, subscribed: bool) -> None:
        """Redis confirmed one channel of a SUBSCRIBE (or an UNSUBSCRIBE) we sent."""
        if protocol is not self._wire:
            return
        name = channel.encode() if isinstance(channel, str) else channel
        left = self._outstanding.get(name, 0) - 1
        if left > 0:
            self._outstanding[name] = left
        else:
            # Every command we sent for it is answered: it is what we asked last.
            self._outstanding.pop(name, None)
            if name in self.handlers:
                self._confirmed.add(name)
                for d in self._confirming.pop(name, ()):
                    d.callback(name.decode())
            else:
                self._confirmed.discard(name)
                if subscribed:  # removed while the connection was still subscribing
                    self._send("UNSUBSCRIBE", name)
        if self._first:
            self._first.discard(name)
            if not self._first:
                self._subscribed(protocol)

    def refused(self, protocol: Any, error: Exception) -> None:
        """Redis refused a (un)subscribe command: try again on a new connection."""
        if protocol is self._wire:
            self._subscribe_failed(Failure(error), protocol)

    def _disconnected(self, protocol: Any) -> None:
        if protocol is self._wire:
            self._wire = None
            self._confirmed = set()
            self._outstanding = {}
            self._first = set()
        super()._disconnected(protocol)

    def _subscribed(self, protocol: Any) -> None:
        if protocol is not self._current or not self._running:
            return
        self.subscriptions += 1
        self._ready(protocol)
        waiting, self._waiting = self._waiting, []
        for count, d in waiting:
            if self.subscriptions >= count:
                d.callback(self.subscriptions)
            else:
                self._waiting.append((count, d))

    def _subscribe_failed(self, failure: Failure, protocol: Any) -> None:
        self.factory.refusal = f"SUBSCRIBE failed: {failure.getErrorMessage()}"
        if protocol.transport is not None:
            protocol.transport.loseConnection()

    def when_subscribed(self, count: int = 1) -> Deferred:
        """Fires once the channels have been subscribed ``count`` times in all."""
        if self.subscriptions >= count:
            return succeed(self.subscriptions)
        d: Deferred = Deferred()
        self._waiting.append((count, d))
        return d

    def received(self, channel: Any, message: Any) -> None:
        if isinstance(channel, str):
            channel = channel.encode()
        handler = self.handlers.get(channel)
        if handler is not None:
            handler(message)


class _Handler(txredisapi.ConnectionHandler):
    """txredisapi's command interface; ``disconnect`` also stops our reconnecting."""

    @property
    def pool(self) -> "Pool":
        """The connections behind it."""
        return self._factory.pool_owner

    def disconnect(self) -> Deferred:
        return self.pool.stop()


class Pool:
    """``poolsize`` kept-open connections behind txredisapi's command interface (``redis``).

    Commands issued while Redis is away wait for a connection (txredisapi's
    lazy pool); ``connected`` says whether every connection is usable.
    """

    def __init__(self, address: RedisAddress, reactor: Any = None, poolsize: int = 1, *,
                 listeners: Iterable[Listener] = (), retry: bool = True,
                 timeout: float = CONNECT_TIMEOUT, charset: Optional[str] = "utf-8") -> None:
        self.address = address
        factory = _Factory(None, address.db or None, poolsize, isLazy=True, handler=_Handler,
                           charset=charset, password=address.password,
                           convertNumbers=False, username=address.username)
        factory.protocol = _Publisher
        factory.pool_owner = self
        factory.reconnect = retry
        self.factory = factory
        self.redis: Any = factory.handler
        self.connections = [Connection(address, reactor, listeners=[self, *listeners],
                                       factory=factory, retry=retry, timeout=timeout)
                            for _ in range(poolsize)]
        self._first: Optional[Deferred] = None
        self._unreachable = False
        #: Why the last attempt failed or the last connection went, while none is usable.
        self.last_problem: Optional[str] = None
        # txredisapi hands out commands once its pool holds every connection.
        self._filled = False
        factory.deferred.addCallback(self._now_filled)

    def _now_filled(self, handler: Any) -> None:
        self._filled = True

    @property
    def connected(self) -> bool:
        return all(c.protocol is not None for c in self.connections)

    @property
    def reachable(self) -> bool:
        """False from a failed or lost connection while none is usable, until one is.

        Still connecting for the first time counts as reachable: a command then
        waits for the connection instead of failing."""
        return not self._unreachable or any(c.protocol is not None for c in self.connections)

    def start(self) -> None:
        for connection in self.connections:
            connection.start()

    def stop(self) -> Deferred:
        stopped = [c.stop() for c in self.connections]
        d = gatherResults(stopped, consumeErrors=True)
        d.addCallback(lambda _: self.factory.disconnect())
        return d.addCallback(lambda _: None)

    def when_ready(self) -> Deferred:
        """Fires with ``redis`` once connected; fails with ``ConnectionError`` if an
        attempt fails and the pool does not retry."""
        if self.connected and self._filled:
            return succeed(self.redis)
        if self._first is None:
            self._first = Deferred()
        return self._first

    # Listener: the pool's own connections.
    def ready(self, connection: Connection, protocol: Any) -> None:
        self._unreachable = False
        self.last_problem = None
        self.factory.addConnection(protocol)
        if self.connected and self._filled and self._first is not None:
            d, self._first = self._first, None
            d.callback(self.redis)

    def lost(self, connection: Connection, protocol: Any) -> None:
        self._unreachable = not any(c.protocol is not None for c in self.connections)
        self.last_problem = "the connection was lost"

    def failed(self, connection: Connection, why: str) -> None:
        self._unreachable = not any(c.protocol is not None for c in self.connections)
        self.last_problem = why
        if not connection.retry and self._first is not None:
            d, self._first = self._first, None
            d.errback(ConnectionError(f"cannot connect to Redis at {self.address}: {why}"))


    def problem(self) -> str:
        """Why a command is still waiting, in a few words."""
        if any(c.protocol is not None for c in self.connections):
            return "connected, but no reply"
        if self.last_problem:
            return self.last_problem
        if any(c._current is not None for c in self.connections):
            return "connected, but no answer (is it a Redis server, with TLS if rediss://?)"
        return "still connecting"


class RedisUnavailable(ConnectionError):
    """A command Redis did not answer in time; the message says where and why."""

    def __init__(self, address: Any, timeout: float, why: str) -> None:
        super().__init__(f"no answer from Redis at {address} within {timeout:g}s: {why}")
        self.address = address
        self.timeout = timeout
        self.why = why


class Bounded:
    """txredisapi's command interface where each command waits at most ``timeout`` s.

    A backend tool must not hang when Redis is away: a command still waiting
    then is cancelled (never sent later) and fails with ``RedisUnavailable``.
    """

    def __init__(self, connections: Pool, timeout: float, reactor: Any = None) -> None:
        self.pool = connections
        self.timeout = timeout
        self._reactor = _reactor(reactor)
        self._waiting: set[Deferred] = set()

    def disconnect(self) -> Deferred:
        """Close the connections; commands still waiting fail now (``CancelledError``)."""
        for d in list(self._waiting):
            d.cancel()
        return self.pool.stop()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        method = getattr(self.pool.redis, name)

        def bounded(*args: Any, **kwargs: Any) -> Deferred:
            return self.bound(method(*args, **kwargs))
        return bounded

    def bound(self, d: Deferred) -> Deferred:
        """``d``, cancelled and failed with ``RedisUnavailable`` after ``timeout`` s."""
        def expired(result: Any, timeout: float) -> Any:
            if isinstance(result, Failure) and result.check(CancelledError):
                raise RedisUnavailable(self.pool.address, timeout, self.pool.problem())
            return result

        def done(result: Any) -> Any:
            self._waiting.discard(d)
            return result
        self._waiting.add(d)
        return d.addTimeout(self.timeout, self._reactor, onTimeoutCancel=expired).addBoth(done)


def pool(address: RedisAddress, poolsize: int = 1, reactor: Any = None,
         timeout: Optional[float] = COMMAND_TIMEOUT) -> Any:
    """A started, self-reconnecting pool's command interface (``Emitter``, ``Sessions``).

    Each command waits at most ``timeout`` seconds (None: for ever).
    """
    connections = Pool(address, reactor, poolsize)
    connections.start()
    if timeout is None:
        return connections.redis
    return Bounded(connections, timeout, reactor)


def connect_once(address: RedisAddress, reactor: Any = None,
                 timeout: float = CONNECT_TIMEOUT,
                 command_timeout: Optional[float] = None) -> Deferred:
    """One connection that fails fast (no retrying): for the command line.

    Fires with txredisapi's command interface (each command bounded by
    ``command_timeout`` s if given), or fails with a ``ConnectionError`` that
    says where and why.
    """
    try:
        connections = Pool(address, reactor, 1, retry=False, timeout=timeout)
    except ValueError as exc:  # an unreadable CA file
        return fail(ConnectionError(str(exc)))
    d = connections.when_ready()
    connections.start()
    if command_timeout is not None:
        d.addCallback(lambda _: Bounded(connections, command_timeout, reactor))
    return d


class Outage:
    """Watches a process's Redis connections: one log line when Redis goes, one when back.

    ``problem`` is what ``/healthz`` reports: None only while every watched
    connection is usable (the subscription subscribed).
    """

    def __init__(self, address: RedisAddress, served: str = "local sessions are served") -> None:
        self.address = address
        self.served = served
        self.connections: list[Connection] = []
        self._said_down = False

    def watch(self, *connections: Connection) -> None:
        for connection in connections:
            self.connections.append(connection)
            connection.listeners.append(self)

    def problem(self) -> Optional[str]:
        if all(c.protocol is not None for c in self.connections):
            return None
        return "redis unreachable"

    def ready(self, connection: Connection, protocol: Any) -> None:
        if self._said_down and self.problem() is None:
            self._said_down = False
            log.info("Redis at {address} is back", address=str(self.address))

    def lost(self, connection: Connection, protocol: Any) -> None:
        self._down("connection lost")

    def failed(self, connection: Connection, why: str) -> None:
        self._down(why)

    def _down(self, why: str) -> None:
        if self._said_down or not any(c.running for c in self.connections):
            return
        self._said_down = True
        log.warn("Cannot reach Redis at {address} ({why}); retrying; {served}",
                 address=str(self.address), why=why, served=self.served)

