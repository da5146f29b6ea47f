"""The reactor's log context for a WebSocket connection, built once instead of per event.

Twisted's reactors run every I/O event inside ``log.callWithLogger``: it asks
the selectable for its log prefix, copies the current legacy log context,
adds ``system`` and pushes the copy (some nine Python calls) so that a legacy
``log.msg``/``log.err`` made during the event carries the connection's prefix.
For a signalling server every routed message is its own event, and this
wrapper cost about as much as the frame decoding.

``mark(transport)`` gives one connection a cheaper but equal wrapper: on the
connection's first event the pushed context is built exactly as Twisted builds
it and kept, and later events push that same context, as long as the context
around the event is the one it was built in and the prefix is unchanged;
otherwise Twisted's own ``callWithLogger`` runs.  Every legacy log line keeps
its prefix.  Selectables that were not marked (listening ports, HTTP
connections, clients, anything not ours) always take Twisted's path.

``install()`` puts the dispatching ``callWithLogger`` in place of Twisted's
(module attribute ``twisted.python.log.callWithLogger``, which the reactors
look up per event); it relies on ``ThreadedContextTracker`` and
``ContextTracker.contexts``, and stays out of the way when another context
tracker has been installed.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.python import context, log

__all__ = ["install", "installed", "mark"]

#: Attribute of a marked transport: ``_UNBUILT`` until its first event, then the
#: (threaded tracker, thread's tracker, outer context, pushed context, prefix)
#: to reuse, or None (Twisted's path).
_CACHE = "_symple_log_context"
_UNBUILT: tuple = ()

_original: Optional[Callable[..., Any]] = None


def _build(logger: Any) -> Optional[tuple]:
    """What Twisted would push for ``logger`` now, as ``log.callWithContext`` builds it."""
    threaded = context.theContextTracker
    if type(threaded) is not context.ThreadedContextTracker:
        return None
    tracker = threaded.currentContext()
    if not tracker.contexts:
        return None
    prefix = logger.logPrefix()
    log_context = context.get(log.ILogContext).copy()
    log_context.update({"system": prefix})
    return (threaded, tracker, tracker.contexts[-1], {log.ILogContext: log_context}, prefix)


def call_with_logger(logger: Any, func: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """``log.callWithLogger``, with the context of a marked connection reused."""
    cache = getattr(logger, _CACHE, None)
    if cache is not None:
        if cache is _UNBUILT:
            try:
                cache = _build(logger)
            except Exception:  # a buggy logPrefix: Twisted's path reports it
                cache = None
            setattr(logger, _CACHE, cache)
        if cache is not None:
            threaded, tracker, outer, pushed, prefix = cache
            contexts = tracker.contexts
            # The same tracker, the same context around the event (so also the
            # reactor's thread, whose tracker this is) and the same prefix.
            if (context.theContextTracker is threaded and contexts and contexts[-1] is outer
                    and logger.logPrefix() == prefix):
                try:
                    contexts.append(pushed)
                    try:
                        return func(*args, **kw)
                    finally:
                        contexts.pop()
                except KeyboardInterrupt:
                    raise
                except BaseException:
                    log.err(system=prefix)
                    return None
    assert _original is not None
    return _original(logger, func, *args, **kw)


def install() -> None:
    """Dispatch the reactors' per-event wrapper through ``call_with_logger`` (idempotent)."""
    global _original
    if log.callWithLogger is call_with_logger:
        return
    _original = log.callWithLogger
    log.callWithLogger = call_with_logger


def installed() -> bool:
    return log.callWithLogger is call_with_logger


def mark(transport: Any) -> None:
    """Let ``transport``'s later events reuse one prebuilt log context."""
    if installed():
        setattr(transport, _CACHE, _UNBUILT)
