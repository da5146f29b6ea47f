"""The WebSocket transport: the only module that touches Autobahn and bytes.

It enforces the per-connection protections of docs/spec.md §7 (origin,
auth timeout, frame size, rate, slow consumers, keepalive), decodes frames,
processes each connection's frames strictly in order, and hands them to the
router.  It is the router's ``Link`` for its session.
"""

from __future__ import annotations

import inspect
from collections import deque
from typing import Any, Callable, Optional

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from . import logcontext, wire
from .autobahn_support import ReactorTimer, cancel_timers, defer_option_pformat
from .auth import Authenticator
from .fastframe import FastTextFrames, server_text_frame
from .outbound import FlushScheduler, Outbound
from .proxyaddress import client_host
from .budgets import address_key
from .ratelimit import Budgets
from .router import Router
from .session import Session
from .wire import ProtocolError

log = Logger()


#: Stands in for Autobahn's send queue: always empty, never appended to.
_NO_SEND_QUEUE = ()
_HANDSHAKE_STATE = ("http_request_data", "http_headers", "http_response_data",
                    "http_request_params")


@implementer(IPushProducer)
class SympleServerProtocol(FastTextFrames, WebSocketServerProtocol):
    """One peer connection."""

    factory: "SympleServerFactory"
    session: Optional[Session] = None
    host = ""
    _opened = False
    _sealed = False
    _too_big = False
    _paused = False
    _queued_bytes = 0
    _busy = False
    _auth_timer: Any = None
    _backlog: Optional[deque] = None
    #: Bytes of the frames in ``_backlog``.
    _backlog_bytes = 0
    #: Whether reading is held back because the backlog is full.
    _held = False
    #: Called once the connection has a session (the port releases its
    #: address's unauthenticated budget).
    on_session: Optional[Callable[[], None]] = None
    _out: Outbound

    # -- handshake and lifecycle ----------------------------------------------

    def connectionMade(self) -> None:
        self._out = Outbound(self.transport, self.factory.flusher)
        if self._out.direct:  # the reactor's selectable itself (not TLS)
            logcontext.mark(self.transport)
        super().connectionMade()
        # Every write goes through self._out, so Autobahn's queue for chopped
        # and synchronous sends (a deque, 0.7 KB) is never used; nor is its
        # UTF-8 validator (a native object) while validation is off.
        self.send_queue = _NO_SEND_QUEUE
        if not self.utf8validateIncoming:
            self.utf8validator = None

    def connectionLost(self, reason: Any = None) -> None:
        self._out.discard()
        super().connectionLost(reason)

    def onConnect(self, request: Any) -> None:
        settings = self.factory.settings
        # Version 8 (and older) handshakes carry the origin as Sec-WebSocket-Origin:
        # every origin header given must pass.
        headers = request.headers
        if not all(settings.origin_allowed(headers.get(name))
                   for name in ("origin", "sec-websocket-origin")):
            self.factory.router.metrics.drops["origin"].inc()
            raise ConnectionDeny(403, "Origin not allowed")
        self.host = client_host(request.headers, self.transport.getPeer(),
                                settings.trust_proxy, settings.proxy_hops)

    def onOpen(self) -> None:
        # Autobahn keeps the request head, its parsed headers and the response
        # for the life of the connection; only the handshake reads them.
        for name in _HANDSHAKE_STATE:
            setattr(self, name, None)
        router = self.factory.router
        if router.draining:
            return self._refuse_connection(503, "Server is shutting down")
        if router.at_capacity():
            router.metrics.disconnects["capacity"].inc()
            return self._refuse_connection(503, "Server is at its connection limit")
        self._opened = True
        router.link_opened(self)
        settings = self.factory.settings
        # Until auth says who it is, the connection has a budget of its own;
        # then it shares its (address, user)'s, which outlives reconnects.
        self._budget = self.factory.budgets.new()
        self._auth_timer = self.factory.reactor.callLater(
            settings.auth_timeout, self._auth_expired)
        transport = self.transport
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        transport.registerProducer(self, True)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        # Autobahn calls this for connections that never opened too.
        self._sealed = True
        cancel_timers(self)
        if not self._opened:
            return
        self._opened = False
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        router = self.factory.router
        if self.session is not None:
            self.factory.budgets.release(self._budget)
            router.close_session(self.session)
        router.link_closed(self)

    def _refuse_connection(self, status: int, message: str) -> None:
        self._write(wire.error(status, message))
        self.close(4000 + status, message)

    def _auth_expired(self) -> None:
        if self.session is None:
            self.factory.router.metrics.auth_failures["408"].inc()
            self._refuse(ProtocolError(408, "Authentication timeout", close=True))

    # -- Link ------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue an encoded frame (``SympleServerFactory.prepare``), dropping the peer if it
        stops reading."""
        if not self._sealed:
            self._queue(frame)

    def sendData(self, data: bytes, sync: bool = False, chopsize: Optional[int] = None) -> None:
        # Everything Autobahn writes (handshake response, pongs, pings, close
        # frames) takes the same queue, and counts against the same bound, as
        # the frames the router sends.
        self._queue(data)

    def _queue(self, data: bytes) -> None:
        """Queue bytes for the end of the reactor turn, within the peer's send bound.

        While the transport's buffer is full (it paused us: the peer is not
        reading), every further byte counts; past ``max_send_buffer`` the peer
        is cut.  A single turn that queues more than the bound cuts it too.
        """
        out = self._out
        out.write(data)
        if self._paused:
            self._queued_bytes += len(data)
            over = self._queued_bytes > self.factory.settings.max_send_buffer
        else:
            over = out.size > self.factory.settings.max_send_buffer
        if over and not self._sealed:
            self._slow_consumer()

    def _closeConnection(self, abort: bool = False) -> None:
        # What this turn queued (a close frame, an HTTP refusal) goes out before the
        # transport is closed; an abort throws it away.
        if abort:
            self._out.discard()
        else:
            self._out.flush()
        super()._closeConnection(abort)

    def close(self, code: int, reason: str) -> None:
        if self._sealed:
            return
        self._sealed = True
        # sendCloseFrame, not sendClose: the latter refuses 1001 (going away).
        self.sendCloseFrame(code, reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode())

    def abort(self) -> None:
        """Drop the connection at once (the drain timeout passed)."""
        self._sealed = True
        if self.transport is not None:
            self.transport.abortConnection()

    def _write(self, payload: bytes) -> None:
        self.send(self.factory.router.encode(payload))

    def _slow_consumer(self) -> None:
        metrics = self.factory.router.metrics
        metrics.drops["slow_consumer"].inc()
        metrics.disconnects["slow_consumer"].inc()
        self.close(4008, "Slow consumer: too much unsent data")

    # IPushProducer: the transport tells us when its buffer is full or drained.
    # While it is full the peer is not read either: a peer that never reads
    # cannot make the server queue pongs (or anything else) for it without end.
    def pauseProducing(self) -> None:
        if not self._paused:
            self._paused = True
            if not self._held:
                self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self._paused:
            self._paused = False
            self._queued_bytes = 0
            if not self._held:  # a full backlog keeps the peer unread
                self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self._paused = True

    # -- incoming frames ---------------------------------------------------------

    def onMessageBegin(self, isBinary: bool) -> None:
        super().onMessageBegin(isBinary)
        self._too_big = False

    def onMessageFrameBegin(self, length: int) -> None:
        super().onMessageFrameBegin(length)
        limit = self.factory.settings.max_message_size
        if not self._too_big and self.message_data_total_length > limit:
            self._too_big = True
            self.factory.router.metrics.drops["too_large"].inc()
            self._refuse(ProtocolError(
                413, f"Frame too large: the limit is {limit} bytes", close=True))

    def onMessageFrameData(self, payload: bytes) -> None:
        if not self._too_big:
            super().onMessageFrameData(payload)

    def onMessageEnd(self) -> None:
        if self._too_big:
            self.message_data = []
            return
        # Not super(): Autobahn's version also fires its observable "message"
        # event through txaio (a Deferred per frame) that nothing here listens to.
        if not self.failedByMe:
            self._onMessage(b"".join(self.message_data), self.message_is_binary)
        self.message_data = None

    @property
    def _fast_frame_limit(self) -> int:
        # Larger frames take Autobahn's path, where onMessageFrameBegin refuses them (413).
        return self.factory.settings.max_message_size

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._sealed:
            return
        if not self._budget.frame():
            return self._rate_limited(payload)
        if isBinary:
            return self._refuse(ProtocolError(
                400, "Binary frames are not supported: send JSON in text frames"))
        if self._busy:
            # Held back as bytes, decoded in turn: a frame's Python objects can
            # take 20 times its JSON.  Past one frame's worth the peer is not read
            # until the backlog drains, so memory stays bounded while an auth or
            # join hook (or Redis) takes its time.
            if self._backlog is None:
                self._backlog = deque()
            self._backlog.append(payload)
            self._backlog_bytes += len(payload)
            if self._backlog_bytes >= self.factory.settings.max_message_size:
                self._hold_reading(True)
        else:
            self._decode_and_process(payload)

    def _decode_and_process(self, payload: bytes) -> None:
        try:
            frame = wire.decode(payload)
        except ProtocolError as exc:
            self.factory.router.metrics.drops["invalid"].inc()
            return self._refuse(exc)
        self._process(frame)

    def _hold_reading(self, held: bool) -> None:
        """Stop (or restart) reading the peer for the backlog; the send side may also pause it."""
        if held == self._held:
            return
        self._held = held
        if not self._paused and self.transport is not None:
            if held:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()

    def _rate_limited(self, payload: bytes) -> None:
        self.factory.router.metrics.drops["rate_limit"].inc()
        try:  # the error repeats the dropped frame's id, when it has one
            frame: Optional[dict] = wire.decode(payload)
        except ProtocolError:
            frame = None
        settings = self.factory.settings
        self._refuse(ProtocolError(
            429, f"Rate limit exceeded ({settings.rate_limit} frames per "
                 f"{settings.rate_period:g} s): frame dropped"), frame)

    def _process(self, frame: dict) -> None:
        """Handle one frame; an asynchronous step holds the later frames back."""
        try:
            if self.session is None:
                result = self._authenticate(frame)
            else:
                result = self.factory.router.handle(self.session, frame)
        except ProtocolError as exc:
            return self._refuse(exc, frame)
        except Exception:
            log.failure("Error while handling a frame")
            return self._refuse(ProtocolError(500, "Internal server error"), frame)
        # None first: Deferred is generic, so isinstance() is an ABC check.
        if result is not None and isinstance(result, Deferred):
            self._busy = True
            result.addErrback(self._refuse_failure, frame)
            result.addBoth(self._resume)

    def _resume(self, _: Any) -> None:
        self._busy = False
        backlog = self._backlog
        while backlog and not self._busy and not self._sealed:
            payload = backlog.popleft()
            self._backlog_bytes -= len(payload)
            self._decode_and_process(payload)
        if not self._busy or self._sealed:
            self._backlog = None  # most connections never need one again
            self._backlog_bytes = 0
        if self._backlog_bytes < self.factory.settings.max_message_size:
            self._hold_reading(False)

    def _refuse_failure(self, failure: Failure, frame: dict) -> None:
        if failure.check(ProtocolError):
            self._refuse(failure.value, frame)
        else:
            log.failure("Error while handling a frame", failure)
            self._refuse(ProtocolError(500, "Internal server error"), frame)

    def _refuse(self, error: ProtocolError, frame: Optional[dict] = None) -> None:
        """Send the ``error`` frame; close with ``4000 + status`` when it is fatal."""
        frame_id = error.frame_id
        if frame_id is None and frame is not None:
            frame_id = frame.get("id")
        if error.status == 429 and not error.close and not self._budget.strike():
            # Every frame refused for a budget spends a strike: a client that
            # keeps sending far over its budget is closed (4429).
            self.factory.router.metrics.disconnects["rate_limit"].inc()
            error = ProtocolError(429, "Rate limit exceeded repeatedly: closing", close=True)
        self._write(wire.error(error.status, error.message, frame_id))
        if error.close:
            self.close(error.close_code, error.message)

    # -- authentication ----------------------------------------------------------

    def _authenticate(self, frame: dict) -> Deferred:
        metrics = self.factory.router.metrics
        if frame["type"] != "auth":
            metrics.auth_failures["401"].inc()
            raise ProtocolError(401, "Not authenticated", close=True)
        metrics.frames_in["auth"].inc()
        d = self.factory.authenticator.authenticate(frame, self.host)

        def admitted(identity: Any) -> None:
            if self._sealed:
                return
            if self._auth_timer is not None and self._auth_timer.active():
                self._auth_timer.cancel()
            self._budget = self.factory.budgets.acquire(
                (address_key(self.host), identity.user), self._budget)
            self.session = self.factory.router.open_session(self, identity, self.host)
            self.session.budget = self._budget
            if self.on_session is not None:
                self.on_session()

        def refused(failure: Failure) -> None:
            if failure.check(ProtocolError):
                error = failure.value
                error.close = True
            else:
                log.failure("Authentication error", failure)
                error = ProtocolError(503, "Authentication service unavailable", close=True)
            metrics.auth_failures[str(error.status)].inc()
            raise error

        return d.addCallbacks(admitted, refused)


def _class_attribute(value: Any) -> Any:
    """A function stored on a class would become a method; keep it a plain callable."""
    return staticmethod(value) if inspect.isfunction(value) else value


class SympleServerFactory(WebSocketServerFactory):
    """Builds ``SympleServerProtocol`` connections bound to one router."""

    protocol = SympleServerProtocol

    def __init__(self, router: Router, authenticator: Authenticator,
                 reactor: Any = None, url: Optional[str] = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        defer_option_pformat()
        logcontext.install()
        super().__init__(url=url, reactor=reactor)
        self.router = router
        self.settings = router.settings
        self.budgets = Budgets(router.settings.rate_limit, router.settings.delivery_limit,
                               router.settings.rate_period, self.reactor.seconds)
        self.authenticator = authenticator
        settings = self.settings
        self.setProtocolOptions(
            failByDrop=False,
            allowNullOrigin=True,  # "null" (file://, sandboxed pages) meets the allow-list: 403
            utf8validateIncoming=False,  # orjson rejects bad UTF-8 with a clear 400
            maxFramePayloadSize=0,
            maxMessagePayloadSize=0,  # enforced by the protocol: 413, not 1009
            autoPingInterval=settings.ping_interval,
            autoPingTimeout=settings.ping_timeout,
            closeHandshakeTimeout=2,
            openHandshakeTimeout=max(settings.auth_timeout, 5),
        )
        self._batched_timer = ReactorTimer(self.reactor)
        #: Flushes the connections written to in a reactor turn, once each.
        self.flusher = FlushScheduler(self.reactor)

    def setProtocolOptions(self, **options: Any) -> None:
        super().setProtocolOptions(**options)
        self._freeze_options()

    def _freeze_options(self) -> None:
        """Give connections the options as class attributes of a per-factory subclass.

        Autobahn copies every option it does not find on the protocol onto each
        new connection (some 40 instance attributes, 3 KB per peer).  It also
        reads ``tcpNoDelay`` in ``connectionMade`` before that copy, so without
        this Nagle's algorithm stays on and small replies wait for ACKs.
        """
        base = self.__dict__.setdefault("_protocol_base", self.protocol)
        options = {name: _class_attribute(getattr(self, name))
                   for name in base.CONFIG_ATTRS if hasattr(self, name)}
        self.protocol = type(base.__name__, (base,), options)

    @staticmethod
    def prepare(payload: bytes) -> bytes:
        """The router's encoder: one WebSocket frame, built once, for every recipient."""
        return server_text_frame(payload)
