"""HTTP on the WebSocket port: demo page, ``/healthz`` and ``/metrics``.

``SymplePortFactory`` is what listens: it reads a connection's request head
and hands the connection either to the Autobahn factory (an Upgrade request)
or to a ``twisted.web`` site.  WebSocket connections so skip twisted.web's
HTTP parsing entirely, which keeps connection set-up cheap.

``SympleResource`` is the embedding variant: a ``twisted.web`` resource that
upgrades at its own path and serves the same pages beneath it.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Callable, Optional

import orjson
from autobahn.twisted.resource import WebSocketResource
from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import File

from . import __version__
from .budgets import FREE, AddressBudgets, Refused, Ticket
from .frontdoor import refusal
from .metrics import CONTENT_TYPE_LATEST
from .proxyaddress import LOCAL, client_host
from .websocket import SympleServerFactory

#: Refuse (431) a request head larger than this many bytes.
MAX_HEAD = 16 * 1024


def head_fields(head: bytes) -> dict[str, str]:
    """A request head's header fields by lower-case name.

    A repeated field's values are joined with ``", "`` (RFC 9110 §5.3), as
    Autobahn does: a client's own ``X-Forwarded-For`` line before the one its
    proxy added must not hide the proxy's.
    """
    fields: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        key = name.strip().lower().decode("latin-1")
        text = value.strip().decode("latin-1")
        fields[key] = f"{fields[key]}, {text}" if key in fields else text
    return fields


def _wants_upgrade(fields: dict[str, str]) -> bool:
    return "websocket" in fields.get("upgrade", "").lower()


class Health:
    """Whether this process is serving: ``checks`` may add conditions (the Redis bus)."""

    def __init__(self, router: Any) -> None:
        self.router = router
        self.checks: list[Callable[[], Optional[str]]] = []

    def status(self) -> tuple[int, dict]:
        problems = [p for p in (check() for check in self.checks) if p]
        if self.router.draining:
            problems.append("draining")
        body = {"status": "ok" if not problems else "unavailable",
                "version": __version__, "problems": problems,
                "connections": len(self.router.links),
                "peers": self.router.local_sessions(), "rooms": self.router.local_rooms()}
        return (503 if problems else 200), body


class HealthResource(Resource):
    isLeaf = True

    def __init__(self, health: Health) -> None:
        super().__init__()
        self.health = health

    def render_GET(self, request: Any) -> bytes:
        code, body = self.health.status()
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return orjson.dumps(body)


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, metrics: Any) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return self.metrics.render()


class StatusText(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return f"symple_tx {__version__}: Symple v4 WebSocket server\n".encode()


def static_root() -> str:
    return str(resources.files("symple_tx") / "static")


class DemoFiles(File):
    """The demo app's files.

    Types are explicit because browsers refuse ES modules served with a
    non-JavaScript type and ``mimetypes`` depends on the host's tables;
    ``no-cache`` makes browsers revalidate, so an upgraded server never runs
    with stale modules; directories are not listed.
    """

    contentTypes = {**File.contentTypes,
                    ".html": "text/html; charset=utf-8",
                    ".js": "text/javascript; charset=utf-8",
                    ".mjs": "text/javascript; charset=utf-8",
                    ".css": "text/css; charset=utf-8",
                    ".json": "application/json",
                    ".svg": "image/svg+xml",
                    ".png": "image/png"}

    def render_GET(self, request: Any) -> Any:
        request.setHeader(b"cache-control", b"no-cache")
        return super().render_GET(request)

    render_HEAD = render_GET

    def getChild(self, path: bytes, request: Any) -> Resource:
        # A name the file system refuses (NUL in a mounted site, which does not
        # check paths) is a missing page, not a 500.
        try:
            return super().getChild(path, request)
        except (ValueError, OSError, UnicodeError):
            return self.childNotFound

    def directoryListing(self) -> Resource:
        return self.childNotFound


def http_root(router: Any, health: Health, demo: bool) -> Resource:
    """The resource tree for ``/``: demo (or status text), healthz, metrics."""
    if demo:
        root: Resource = DemoFiles(static_root())
    else:
        root = _Root(StatusText())
    root.putChild(b"healthz", HealthResource(health))
    root.putChild(b"metrics", MetricsResource(router.metrics))
    return root


class _Root(Resource):
    """Serves ``leaf`` for ``/`` itself and named children below it."""

    def __init__(self, leaf: Resource) -> None:
        super().__init__()
        self.leaf = leaf

    def getChild(self, path: bytes, request: Any) -> Resource:
        if path == b"":
            return self.leaf
        return super().getChild(path, request)

    def render_GET(self, request: Any) -> bytes:
        return self.leaf.render_GET(request)


class _Sniffer(Protocol):
    """Reads the request head, then becomes a WebSocket or an HTTP connection.

    The head must be complete, within ``MAX_HEAD`` bytes, before the auth
    timeout (one deadline for the whole head, not an idle timer): a larger
    head gets 431 and the connection is closed at once, a slow one is
    dropped.  Each read is scanned once (linear time whatever the head's
    size), and Autobahn and twisted.web only ever see a complete head.
    """

    inner: Optional[Protocol] = None
    _timer: Any = None
    _done = False
    #: This connection's hold on its address's unauthenticated budget.
    ticket: Ticket = FREE
    _scanned = 0
    #: Whether this is an HTTP connection counted in ``router.http_connections``.
    counted = False

    def __init__(self, port_factory: "SymplePortFactory") -> None:
        self.port_factory = port_factory
        self.buffer = bytearray()

    def connectionMade(self) -> None:
        factory = self.port_factory
        if not factory.settings.trust_proxy and self._admit(
                getattr(self.transport.getPeer(), "host", None)):
            return
        self._timer = factory.reactor.callLater(factory.head_timeout, self._expired)

    def _admit(self, host: Optional[str]) -> bool:
        """Count the connection against its address's budgets; True when it is refused."""
        if host is None:  # a UNIX socket: a local client
            return False
        try:
            self.ticket = self.port_factory.budgets.admit(host)
        except Refused as exc:
            self.port_factory.router.metrics.disconnects["address_budget"].inc()
            self._refuse(429, str(exc))
            return True
        return False

    def _expired(self) -> None:
        self._timer = None
        self._done = True
        self.transport.abortConnection()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def dataReceived(self, data: bytes) -> None:
        if self.inner is not None:
            return self.inner.dataReceived(data)
        if self._done:
            return
        buffer = self.buffer
        buffer += data
        # Only the new bytes (and the three before them) can complete b"\r\n\r\n".
        end = buffer.find(b"\r\n\r\n", max(0, self._scanned - 3))
        self._scanned = len(buffer)
        if end < 0 and len(buffer) <= MAX_HEAD:
            return
        if end < 0 or end + 4 > MAX_HEAD:
            self.port_factory.router.metrics.disconnects["head_too_large"].inc()
            return self._refuse(431, f"Request head too large: the limit is {MAX_HEAD} bytes")
        self._stop_timer()
        factory = self.port_factory
        fields = head_fields(bytes(buffer[:end]))
        peer = self.transport.getPeer()
        if factory.settings.trust_proxy:
            host = client_host(fields, peer, True, factory.settings.proxy_hops)
            if self._admit(None if host == LOCAL else host):
                return
        if _wants_upgrade(fields):
            inner = factory.websocket.buildProtocol(peer)
            if inner is None:
                self.transport.loseConnection()
            else:
                # An admitted session no longer counts as unauthenticated.
                inner.on_session = self.ticket.release
        else:
            inner = factory.open_http(self)
        if inner is None:
            return
        self.inner = inner
        # Later reads go straight to the inner protocol, not through this layer.
        self.dataReceived = inner.dataReceived  # type: ignore[method-assign]
        inner.makeConnection(self.transport)
        buffered, self.buffer = bytes(buffer), bytearray()
        inner.dataReceived(buffered)

    def _refuse(self, status: int, message: str) -> None:
        """Answer with ``status`` and hang up without reading further."""
        self._done = True
        self._stop_timer()
        self.buffer = bytearray()
        self.transport.write(refusal(status, message))
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self._stop_timer()
        self.ticket.close()
        if self.inner is not None:
            self.inner.connectionLost(reason)
        if self.counted:
            self.counted = False
            self.port_factory.router.http_connections -= 1


class SymplePortFactory(Factory):
    """The factory to listen with: WebSocket at ``/``, HTTP pages beside it."""

    noisy = False

    def __init__(self, websocket: SympleServerFactory, site: Site) -> None:
        self.websocket = websocket
        self.site = site
        self.router = websocket.router
        self.reactor = websocket.reactor
        self.settings = settings = websocket.settings
        self.budgets = AddressBudgets(settings.max_unauthenticated_per_address,
                                      settings.address_connection_rate,
                                      settings.budget_exempt, self.reactor.seconds,
                                      settings.max_connections_per_address)
        #: Seconds a new connection has to send its request head.
        self.head_timeout = websocket.settings.auth_timeout

    def buildProtocol(self, addr: Any) -> Protocol:
        return _Sniffer(self)

    def open_http(self, sniffer: _Sniffer) -> Optional[Protocol]:
        """An HTTP connection, counted against the connection limit like a WebSocket."""
        router = self.router
        if router.at_capacity():
            router.metrics.disconnects["capacity"].inc()
            sniffer._refuse(503, "Server is at its connection limit")
            return None
        inner = self.site.buildProtocol(sniffer.transport.getPeer())
        if inner is None:
            sniffer.transport.loseConnection()
            return None
        router.http_connections += 1
        sniffer.counted = True
        return inner

    def doStart(self) -> None:
        super().doStart()
        self.site.doStart()

    def doStop(self) -> None:
        self.site.doStop()
        super().doStop()


def _is_upgrade(request: Any) -> bool:
    return (request.getHeader(b"upgrade") or b"").lower() == b"websocket"


class SympleResource(WebSocketResource):
    """Embedding: upgrade requests at this resource, pages (healthz, metrics) below it."""

    # WebSocketResource is a leaf; this one has the pages as children.
    isLeaf = False

    def __init__(self, websocket: SympleServerFactory, pages: Resource) -> None:
        super().__init__(websocket)
        self.pages = pages

    def getChildWithDefault(self, path: bytes, request: Any) -> Resource:
        if path == b"" and _is_upgrade(request):
            return self  # ws://host/mount/ as well as ws://host/mount
        return self.pages.getChildWithDefault(path, request)

    def render(self, request: Any) -> Any:
        if _is_upgrade(request):
            return super().render(request)
        return self.pages.render(request)
