"""Helpers for the media peer's tests: the extra's presence, a bridge, an MJPEG reader."""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from twisted.internet import defer, protocol, reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest

from tests.support import WAIT


def require_media() -> None:
    """Skip without the media extra; fail instead when SYMPLE_REQUIRE_MEDIA is set (CI)."""
    from symple_tx.media import MediaUnavailable, require
    try:
        require()
    except MediaUnavailable as exc:
        if os.environ.get("SYMPLE_REQUIRE_MEDIA", "").strip().lower() not in ("", "0", "false"):
            raise AssertionError(f"media tests required but cannot run: {exc}") from None
        raise unittest.SkipTest(str(exc)) from None


class MediaTestMixin:
    """An asyncio bridge per test (its own loop thread under trial's reactor)."""

    def start_bridge(self) -> Any:
        from symple_tx.media.bridge import AsyncioBridge
        bridge = AsyncioBridge(reactor)
        self.addCleanup(bridge.stop)  # type: ignore[attr-defined]
        return bridge


@defer.inlineCallbacks
def wait_until(condition: Callable[[], Any], what: str, timeout: float = WAIT):
    """Poll ``condition`` every few milliseconds; fail after ``timeout`` seconds."""
    deadline = reactor.seconds() + timeout
    while True:
        value = condition()
        if value:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        yield deferLater(reactor, 0.01, lambda: None)


class MultipartReader(protocol.Protocol):
    """Collects the parts of a ``multipart/x-mixed-replace`` body as (headers, payload)."""

    def __init__(self, boundary: str, wanted: int) -> None:
        self.delimiter = b"--" + boundary.encode()
        self.wanted = wanted
        self.buffer = b""
        self.parts: list[tuple[dict[str, str], bytes]] = []
        self.done: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while not self.done.called and self._one_part():
            if len(self.parts) >= self.wanted:
                self.done.callback(self.parts)
                self.transport.stopProducing()

    def _one_part(self) -> bool:
        start = self.buffer.find(self.delimiter)
        head_end = self.buffer.find(b"\r\n\r\n", start)
        if start < 0 or head_end < 0:
            return False
        lines = self.buffer[start + len(self.delimiter):head_end].decode("ascii").split("\r\n")
        headers = dict((k.strip().lower(), v.strip())
                       for k, _, v in (line.partition(":") for line in lines if ":" in line))
        length = int(headers["content-length"])
        body_start = head_end + 4
        if len(self.buffer) < body_start + length + 2:
            return False
        self.parts.append((headers, self.buffer[body_start:body_start + length]))
        if self.buffer[body_start + length:body_start + length + 2] != b"\r\n":
            raise AssertionError("a part does not end with CRLF after Content-Length bytes")
        self.buffer = self.buffer[body_start + length + 2:]
        return True

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.errback(AssertionError(f"stream ended after {len(self.parts)} parts: "
                                             f"{reason.getErrorMessage() if reason else ''}"))


def boundary_of(content_type: Optional[str]) -> str:
    kind, _, params = (content_type or "").partition(";")
    if kind.strip() != "multipart/x-mixed-replace":
        raise AssertionError(f"not a multipart stream: {content_type!r}")
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key == "boundary":
            return value.strip('"')
    raise AssertionError(f"no boundary in {content_type!r}")
