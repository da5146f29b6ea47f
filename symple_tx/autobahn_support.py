"""Autobahn helpers shared by the client and the server transport.

Nothing here changes Autobahn on import: the server factory applies
``defer_option_pformat`` itself, so a client process keeps Autobahn as it is.
"""

from __future__ import annotations

from pprint import pformat
from typing import Any

from autobahn.websocket import protocol as autobahn_protocol


class ReactorTimer:
    """Exact, cancellable timers for Autobahn's timeouts.

    Autobahn batches its timers into whole-second buckets whose reactor calls
    outlive the cancelled timeouts they served; plain ``callLater`` keeps a
    10 s ping timeout at 10 s and leaves nothing behind when a peer goes.
    Factories set it as their ``_batched_timer``.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def call_later(self, delay: float, func: Any, *args: Any, **kwargs: Any) -> Any:
        return self.reactor.callLater(delay, func, *args, **kwargs)


_AUTOBAHN_TIMERS = ("openHandshakeTimeoutCall", "closeHandshakeTimeoutCall",
                    "autoPingPendingCall", "autoPingTimeoutCall")


def cancel_timers(protocol: Any) -> None:
    """Cancel Autobahn's timeouts of a connection that is gone (it leaves some behind)."""
    for name in _AUTOBAHN_TIMERS:
        call = getattr(protocol, name, None)
        if call is not None and call.active():
            call.cancel()


class _DeferredPformat:
    """Formats on demand: Autobahn pretty-prints its ~40 options for a debug
    line on every new connection, logged or not (a third of a connection's CPU)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return pformat(self.value)

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _pformat_when_logged(value: Any) -> Any:
    # Only the options list (a list of pairs) is deferred; any other caller
    # (Autobahn's Timings.__str__ formats a dict) gets a real string.
    if isinstance(value, list):
        return _DeferredPformat(value)
    return pformat(value)


def defer_option_pformat() -> None:
    """Make Autobahn format its per-connection options only when the line is logged.

    Autobahn looks ``pformat`` up in its protocol module, so this applies to
    every Autobahn connection of the process; the server factory calls it
    (idempotent), a client alone never does.
    """
    autobahn_protocol.pformat = _pformat_when_logged


def option_pformat_deferred() -> bool:
    """Whether ``defer_option_pformat`` has been applied in this process."""
    return autobahn_protocol.pformat is _pformat_when_logged
