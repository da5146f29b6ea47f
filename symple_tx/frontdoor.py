"""HTTP on the WebSocket port, held to what it is for: GET and HEAD of small pages.

twisted.web's defaults suit a general web server: it reads any method, spools
request bodies over 100 KB to temporary files, restarts its idle timer on
every byte (so a trickled request lives for ever) and answers a path it cannot
open (``/index.html%00.js``) with a 500.  On a port that only serves a demo
page, ``/healthz`` and ``/metrics``, each of those is a way for a client that
never authenticates to cost disk, memory or a connection slot.  Here:

* any method but GET and HEAD gets 405, any request body 413, and the
  connection is closed without reading the body;
* each request has a whole-request deadline (head received and response
  written) instead of an idle timer;
* a malformed path (bad percent-encoding, NUL, not UTF-8) gets 400.
"""

from __future__ import annotations

import re
from typing import Any, Optional
from urllib.parse import unquote_to_bytes

from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

#: Methods the port serves; everything else is refused with 405.
METHODS = (b"GET", b"HEAD")

_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_REASONS = {400: "Bad Request", 405: "Method Not Allowed", 413: "Content Too Large",
            431: "Request Header Fields Too Large", 429: "Too Many Requests",
            503: "Service Unavailable"}


def refusal(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete ``Connection: close`` response, written before hanging up."""
    body = (message + "\n").encode()
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
             "Content-Type: text/plain; charset=utf-8",
             f"Content-Length: {len(body)}", "Connection: close",
             *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def path_problem(path: bytes) -> Optional[str]:
    """Why a request path (before ``?``) cannot name a page, or None when it can."""
    if _BAD_PERCENT.search(path):
        return "Bad request path: malformed percent-encoding"
    decoded = unquote_to_bytes(path)
    if any(byte < 0x20 or byte == 0x7F for byte in decoded):
        return "Bad request path: control characters"
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError:
        return "Bad request path: not UTF-8"
    return None


class FrontDoorRequest(Request):
    """Refuses a malformed path with 400 before any resource sees it."""

    def process(self) -> None:
        problem = path_problem(self.path)
        if problem is None:
            return super().process()
        self.site = self.channel.site
        self.site.count("http_path")
        self.channel.persistent = False
        self.setResponseCode(400)
        self.setHeader(b"content-type", b"text/plain; charset=utf-8")
        self.setHeader(b"connection", b"close")
        self.write(problem.encode() + b"\n")
        self.finish()


class FrontDoorChannel(HTTPChannel):
    """One HTTP connection: GET/HEAD only, no bodies, a deadline per request."""

    #: Seconds each request has, from when the connection is ready for it until
    #: its response is written (set by ``FrontDoorSite``).
    request_deadline: float = 10.0
    _deadline: Any = None
    _refused = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.callLater(self.request_deadline, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport is not None:
            self.site.count("http_deadline")
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        # Not super(): it restarts the idle timer on every byte.
        if self._refused:
            return
        super(HTTPChannel, self).dataReceived(data)

    def allHeadersReceived(self) -> None:
        if self._command not in METHODS:
            self.site.count("http_method")
            return self._refuse(405, "Only GET and HEAD are served on this port",
                                (("Allow", "GET, HEAD"),))
        if self.length != 0:  # a Content-Length above 0, or chunked
            self.site.count("http_body")
            return self._refuse(413, "Request bodies are not accepted on this port")
        super().allHeadersReceived()

    def _refuse(self, status: int, message: str,
                headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Answer and close, reading nothing more: no body is received or stored."""
        self._refused = True
        self.length = None  # not 0: HTTPChannel would go on to handle the request
        self.persistent = False
        self.transport.write(refusal(status, message, headers))
        self.transport.pauseProducing()
        self.transport.loseConnection()

    def rawDataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().rawDataReceived(data)

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        if self.persistent and self.transport is not None:
            self._arm()  # the next request gets a whole deadline of its own

    def connectionLost(self, reason: Any) -> None:
        self._disarm()
        super().connectionLost(reason)


class FrontDoorSite(Site):
    """A ``Site`` whose connections are ``FrontDoorChannel``s."""

    protocol = FrontDoorChannel
    requestFactory = FrontDoorRequest

    def __init__(self, resource: Any, request_deadline: float, metrics: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.request_deadline = request_deadline
        #: The server's ``Metrics``: refusals count as disconnects, by reason.
        self.metrics = metrics
        self.timeOut = None  # the deadline replaces twisted.web's idle timer
        self.displayTracebacks = False
        self.noisy = False

    def count(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.disconnects[reason].inc()

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        channel.request_deadline = self.request_deadline
        return channel
