"""What a client's Deferreds fail with and its ``error`` event carries."""

from __future__ import annotations

from typing import Optional


class ClientError(Exception):
    """An ``error`` frame from the server."""

    def __init__(self, status: int, message: str, frame: Optional[dict] = None) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.frame = frame or {}


class AuthError(ClientError):
    """The server refused the credentials; the client does not retry."""


class ConnectError(Exception):
    """The server could not be reached or closed before welcoming the client."""


class NotConnected(Exception):
    """The client is not online, so it cannot send."""


#: Error statuses before ``welcome`` that retrying cannot fix (bad or refused
#: credentials); others (408, 503 while a server drains or is full) are retried.
REJECTED = frozenset({400, 401, 403})
