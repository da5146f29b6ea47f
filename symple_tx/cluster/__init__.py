"""Several server processes over Redis behave as one server (docs/spec.md §10)."""

from .redis_bus import NODE_TIMEOUT, RedisBus

__all__ = ["NODE_TIMEOUT", "RedisBus"]
