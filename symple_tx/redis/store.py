"""The session store: ``<prefix>session:<token>`` holds a JSON object per token.

The key layout and JSON are those of the Ruby ``symple`` gem, so Ruby and
Python backends can issue tokens for the same server.
"""

from __future__ import annotations

from typing import Any, Optional

import orjson
from twisted.internet.defer import Deferred

from .keys import Keys

#: The default prefix of stored sessions (``Keys().session_prefix``).
SESSION_PREFIX = Keys().session_prefix


class RedisSessionStore:
    """Reads and extends stored sessions through a txredisapi command interface."""

    def __init__(self, redis: Any, prefix: str = SESSION_PREFIX) -> None:
        self.redis = redis
        self.prefix = prefix

    def get(self, token: str) -> Deferred:
        """Fires with the stored object, or None when unknown (or not a JSON object)."""
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
