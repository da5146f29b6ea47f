"""Frames that backends publish on ``<prefix>broadcast``, delivered to local sessions.

docs/spec.md §9: any backend (the Ruby gem, ``symple_tx.emitter``, ``symple emit``) may
``PUBLISH`` a Symple frame on ``symple:broadcast``; each process routes it to
its own sessions by ``to``, trusting it (no shared-room check, ``from`` kept).

The channel is subscribed on the cluster bus's subscriber connection
(``RedisBus.subscribe``), so it is subscribed again with the bus's channels
after every reconnect and ``/healthz`` is ok only once it is.
"""

from __future__ import annotations

from typing import Any

import orjson
from twisted.logger import Logger

from .router import Router

log = Logger()


class Broadcast:
    """Hands each frame published on the broadcast channel to ``Router.deliver_trusted``."""

    def __init__(self, router: Router, channel: str = "symple:broadcast") -> None:
        self.router = router
        self.channel = channel

    def received(self, message: Any) -> int:
        """Deliver one published message; garbage is logged and dropped."""
        try:
            frame = orjson.loads(message)
        except (orjson.JSONDecodeError, TypeError):
            return self._reject("invalid JSON")
        if not isinstance(frame, dict):
            return self._reject("not a JSON object")
        try:
            return self.router.deliver_trusted(frame)
        except Exception:
            log.failure("Error while delivering a broadcast frame")
            return 0

    def _reject(self, why: str) -> int:
        self.router.metrics.drops["invalid"].inc()
        log.warn("Dropped a frame published on {channel}: {why}", channel=self.channel, why=why)
        return 0
