"""Several server processes over Redis behave as one server (PROTOCOL.md section 10)."""

from .redis_bus import NODE_TIMEOUT, RedisBus

__all__ = ["NODE_TIMEOUT", "RedisBus"]
