"""Listening endpoints with an accept queue fit for reconnect storms.

Twisted listens with a backlog of 50.  After a restart or a network blip
every client reconnects at once; with 200 handshakes in flight the accept
queue overflows, the kernel drops the SYNs and the clients wait for their
retransmits (1 s, then 3 s), so the storm takes several times longer than it
must.  A ``tcp:``/``ssl:`` endpoint that does not choose a backlog gets the
system's ceiling instead (``net.core.somaxconn``; the kernel caps any larger
value at it anyway).
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.endpoints import _parse, serverFromString

__all__ = ["DEFAULT_BACKLOG", "SOMAXCONN", "server_endpoint", "system_backlog", "with_backlog"]

SOMAXCONN = "/proc/sys/net/core/somaxconn"
#: When the system's limit cannot be read (the Linux default since 5.4).
DEFAULT_BACKLOG = 4096

#: Endpoint types that take a backlog, and the position of ``backlog`` among
#: their positional arguments (after the type), as Twisted's parsers define them.
_BACKLOG_POSITION = {"tcp": 3, "tcp6": 3, "ssl": 6}


def system_backlog(path: str = SOMAXCONN) -> int:
    """The largest accept queue the system grants (``somaxconn``), or 4096."""
    try:
        with open(path) as f:
            value = int(f.read().strip())
    except (OSError, ValueError):
        return DEFAULT_BACKLOG
    return value if value > 0 else DEFAULT_BACKLOG


def with_backlog(description: str, backlog: Optional[int] = None) -> str:
    """``description`` with ``backlog=`` added when it is a TCP/TLS endpoint without one."""
    args, kwargs = _parse(description)
    kind = args[0].lower() if args else ""
    position = _BACKLOG_POSITION.get(kind)
    if position is None or "backlog" in kwargs or len(args) > position:
        return description
    if backlog is None:
        backlog = system_backlog()
    return f"{description}:backlog={backlog}"


def server_endpoint(reactor: Any, description: str) -> Any:
    """``serverFromString``, with the storm-ready backlog by default."""
    return serverFromString(reactor, with_backlog(description))
