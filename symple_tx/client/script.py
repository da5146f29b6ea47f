"""``run(main)``: the entry point for scripts without a running reactor."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from twisted.internet.defer import Deferred, ensureDeferred, succeed


def run(main: Callable[..., Any], *args: Any) -> None:
    """Run ``main(reactor, *args)`` (plain, Deferred or ``async def``) and exit.

    The entry point for scripts: it starts the reactor, stops it when ``main``
    finishes and exits with status 1 if it failed.
    """
    from twisted.internet import task

    def start(reactor: Any, *a: Any) -> Deferred:
        result = main(reactor, *a)
        if inspect.isawaitable(result) and not isinstance(result, Deferred):
            return ensureDeferred(result)
        return result if isinstance(result, Deferred) else succeed(result)

    task.react(start, args)
