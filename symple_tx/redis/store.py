"""The session store: ``<prefix>session:<token>`` holds a JSON object per token.

The key layout and JSON are those of the Ruby ``symple`` gem, so Ruby and
Python backends can issue tokens for the same server.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import orjson
from twisted.internet.defer import Deferred, fail

from .keys import Keys

#: The default prefix of stored sessions (``Keys().session_prefix``).
SESSION_PREFIX = Keys().session_prefix


class StoreUnavailable(ConnectionError):
    """The session store cannot be asked right now (Redis is unreachable)."""


class RedisSessionStore:
    """Reads and extends stored sessions through a txredisapi command interface.

    With ``available`` (the server's pool: is Redis known to be away?), a
    lookup while Redis is away fails at once with ``StoreUnavailable`` instead
    of waiting for a connection, so the peer hears why instead of timing out.
    """

    def __init__(self, redis: Any, prefix: str = SESSION_PREFIX,
                 available: Optional[Callable[[], bool]] = None) -> None:
        self.redis = redis
        self.prefix = prefix
        self.available = available

    def get(self, token: str) -> Deferred:
        """Fires with the stored object, or None when unknown (or not a JSON object)."""
        if self.available is not None and not self.available():
            return fail(StoreUnavailable("the session store (Redis) is unreachable"))

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
