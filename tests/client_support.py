"""SympleClient instances for tests: fast reconnects, always disconnected at the end."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from symple_tx.client import SympleClient
from tests.support import with_timeout

#: Reconnect delays short enough for tests.
FAST = dict(reconnect_delay=0.05, max_reconnect_delay=0.2, jitter=0.05)


class ClientMixin:
    """Clients that are always disconnected at the end of a test."""

    url: str

    def make_client(self, user: str, url: str = "", **options: Any) -> SympleClient:
        client = SympleClient(url or self.url, user, **{**FAST, **options})
        self.addCleanup(client.disconnect)
        return client

    @defer.inlineCallbacks
    def online(self, user: str, **options: Any):
        client = self.make_client(user, **options)
        yield with_timeout(client.connect(), what=f"{user} welcome")
        return client
