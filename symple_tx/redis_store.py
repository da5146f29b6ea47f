"""Kept for code that imports it: the Redis layer is ``symple_tx.redis``."""

from .redis.address import RedisAddress
from .redis.store import SESSION_PREFIX, RedisSessionStore

__all__ = ["SESSION_PREFIX", "RedisAddress", "RedisSessionStore"]
