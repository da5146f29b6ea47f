"""Redis connections (txredisapi) and the ``symple:session:<token>`` store.

The key layout and JSON are those of the Ruby ``symple`` gem, so Ruby and
Python backends can issue tokens for the same server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import unquote, urlsplit

import orjson
import txredisapi
from twisted.internet.defer import Deferred

SESSION_PREFIX = "symple:session:"


@dataclass(frozen=True)
class RedisAddress:
    """A parsed ``redis://``, ``rediss://`` or ``unix:`` URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    password: Optional[str] = None
    username: Optional[str] = None
    tls: bool = False
    unix_path: Optional[str] = None

    @classmethod
    def parse(cls, url: str) -> "RedisAddress":
        """Raise ValueError with one clear line for anything unusable."""
        parts = urlsplit(url)
        if parts.scheme == "unix":
            path = parts.path or parts.netloc
            if not path:
                raise ValueError(f"Redis URL {url!r} has no socket path")
            return cls(unix_path=path, db=_db(parts.query), password=_password(parts))
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"Redis URL {url!r} must start with redis://, rediss:// or unix:")
        try:
            port = parts.port or 6379
        except ValueError:
            raise ValueError(f"Redis URL {url!r} has an invalid port") from None
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"Redis URL {url!r}: the database must be a number")
        return cls(host=parts.hostname or "127.0.0.1", port=port,
                   db=int(path) if path else _db(parts.query),
                   password=_password(parts),
                   username=unquote(parts.username) if parts.username else None,
                   tls=parts.scheme == "rediss")

    def endpoint(self, reactor: Any) -> Any:
        """A client endpoint for a connection of our own (TLS verifies the host)."""
        from twisted.internet import ssl
        from twisted.internet.endpoints import UNIXClientEndpoint, wrapClientTLS

        from .endpoints import tcp_endpoint
        if self.unix_path:
            return UNIXClientEndpoint(reactor, self.unix_path)
        endpoint = tcp_endpoint(reactor, self.host, self.port)
        if self.tls:
            endpoint = wrapClientTLS(ssl.optionsForClientTLS(self.host), endpoint)
        return endpoint

    def connect(self, poolsize: int = 4) -> Any:
        """A lazy, self-reconnecting pool; numbers stay strings ("007" is not 7)."""
        options = dict(dbid=self.db or None, poolsize=poolsize, reconnect=True,
                       password=self.password, convertNumbers=False)
        if self.unix_path:
            return txredisapi.lazyUnixConnectionPool(self.unix_path, **options)
        return txredisapi.lazyConnectionPool(
            self.host, self.port, username=self.username,
            ssl_context_factory=self.tls, **options)


def _db(query: str) -> int:
    for item in query.split("&"):
        key, _, value = item.partition("=")
        if key == "db" and value.isdigit():
            return int(value)
    return 0


def _password(parts: Any) -> Optional[str]:
    return unquote(parts.password) if parts.password else None


class RedisSessionStore:
    """Reads and extends ``symple:session:<token>``."""

    def __init__(self, redis: Any, prefix: str = SESSION_PREFIX) -> None:
        self.redis = redis
        self.prefix = prefix

    def get(self, token: str) -> Deferred:
        def parse(raw: Any) -> Optional[dict]:
            if raw is None:
                return None
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return None
            return value if isinstance(value, dict) else None
        return self.redis.get(self.prefix + token).addCallback(parse)

    def touch(self, token: str, ttl: int) -> Deferred:
        return self.redis.expire(self.prefix + token, ttl)
