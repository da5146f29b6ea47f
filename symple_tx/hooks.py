"""Application hooks: load them by name and call them whatever they return."""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Coroutine, cast

from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred


class HookRefused(Exception):
    """Raise from an auth or join hook to refuse with this message."""


class AuthRejected(HookRefused):
    """Raise from an auth hook: the peer receives ``error`` 401 with the message."""


class JoinRefused(HookRefused):
    """Raise from a join hook: the peer receives ``error`` 403 with the message."""


def call_hook(hook: Callable[..., Any], *args: Any) -> Deferred:
    """Call a plain, Deferred-returning or ``async def`` hook; always a Deferred."""
    def invoke() -> Any:
        result = hook(*args)
        if inspect.isawaitable(result) and not isinstance(result, Deferred):
            return ensureDeferred(cast(Coroutine[Any, Any, Any], result))
        return result
    return maybeDeferred(invoke)


def load_callable(spec: str) -> Callable[..., Any]:
    """Resolve ``package.module:attribute`` or raise ValueError with one clear line."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"hook {spec!r} must look like 'package.module:callable'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import hook module {module_name!r}: {exc}") from None
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise ValueError(f"hook {spec!r} is not callable")
    return target
