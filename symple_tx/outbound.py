"""Per-connection write queues, flushed once per reactor turn, straight to the socket.

Twisted's ``transport.write`` buffers the bytes, registers the socket for
writability (``epoll_ctl``), sends them on the next loop turn and unregisters
it again (``epoll_ctl``): two system calls and a loop turn per write to an
idle connection.  Its batching is still worth having -- one ``send`` per
receiver per turn is what keeps room fan-out cheap -- so this module keeps the
batching and drops the churn:

* during a reactor turn, the frames for a connection are only appended to its
  queue, and the connection is put on the turn's dirty list;
* when the turn's events are done (``callLater(0)`` runs right after the
  poll's events), each dirty connection is flushed once: one ``send`` on the
  socket itself;
* only what the kernel does not take (or everything, while the transport
  still holds older bytes, or for a transport that is not a plain TCP socket,
  such as TLS) goes to ``transport.write``, whose buffer, producer pausing and
  writability handling take over from there.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import tcp

__all__ = ["FlushScheduler", "Outbound"]


class FlushScheduler:
    """Flushes the connections written to during a reactor turn, once each, after it."""

    __slots__ = ("_reactor", "_dirty", "_call")

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._dirty: list[Outbound] = []
        self._call: Any = None

    def schedule(self, outbound: "Outbound") -> None:
        self._dirty.append(outbound)
        if self._call is None:
            # One timed call per turn, shared by every connection written to in it.
            self._call = self._reactor.callLater(0, self.flush)

    def flush(self) -> None:
        """Flush every dirty connection (writes made while flushing wait for the next turn)."""
        self._call = None
        dirty, self._dirty = self._dirty, []
        for outbound in dirty:
            outbound.flush()

    @property
    def pending(self) -> int:
        """Connections waiting for the flush (for tests and introspection)."""
        return len(self._dirty)


def _writes_to_socket(transport: Any) -> bool:
    """Whether bytes may go to the transport's socket directly: plain TCP only.

    A TLS transport (``TLSMemoryBIOProtocol``) encrypts what it is given, and
    any other transport may buffer in ways this module cannot see.
    """
    return isinstance(transport, tcp.Connection) and not getattr(transport, "TLS", False)


class Outbound:
    """The bytes queued for one connection during the current reactor turn."""

    __slots__ = ("transport", "scheduler", "chunks", "size", "direct")

    def __init__(self, transport: Any, scheduler: FlushScheduler) -> None:
        self.transport = transport
        self.scheduler = scheduler
        #: Queued bytes, or None when nothing is queued (the connection is clean).
        self.chunks: Optional[list[bytes]] = None
        #: Bytes in ``chunks``.
        self.size = 0
        self.direct = _writes_to_socket(transport)

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the end of the turn."""
        chunks = self.chunks
        if chunks is None:
            self.chunks = [data]
            self.scheduler.schedule(self)
        else:
            chunks.append(data)
        self.size += len(data)

    def flush(self) -> None:
        """Send what is queued: to the socket when the transport has nothing buffered."""
        chunks = self.chunks
        if chunks is None:
            return
        self.chunks = None
        self.size = 0
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        transport = self.transport
        if (self.direct and transport.connected and not transport.disconnecting
                and not transport.dataBuffer and not transport._tempDataLen):
            try:
                sent = transport.socket.send(data)
            except OSError:
                # EAGAIN: the kernel's buffer is full.  Any other error: the
                # transport meets it on its own write and reports the loss.
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        transport.write(data)

    def discard(self) -> None:
        """Forget what is queued (the connection is gone or being aborted)."""
        self.chunks = None
        self.size = 0

    def transport_buffered(self) -> int:
        """Bytes the transport holds that the kernel has not taken yet (plain TCP only)."""
        transport = self.transport
        if not self.direct:
            return 0
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
