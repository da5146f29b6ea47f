"""Per-connection write queues, flushed once per reactor turn, straight to the socket.

Twisted's ``transport.write`` buffers the bytes, registers the socket for
writability (``epoll_ctl``), sends them on the next loop turn and unregisters
it again (``epoll_ctl``): two system calls and a loop turn per write to an
idle connection.  Its batching is still worth having -- one ``send`` per
receiver per turn is what keeps room fan-out cheap -- so this module keeps the
batching and drops the churn:

* during a reactor turn, the frames for a connection are only appended to its
  queue, and the connection is put on the turn's dirty list;
* when the turn's events are done, each dirty connection is flushed once:
  one ``send`` on the socket itself.  On a reactor whose poll dispatches the
  events (``doIteration``: epoll, poll, select) that is right after it
  returns; writes made anywhere else (timed calls, other reactors) are
  flushed by a ``callLater(0)``, which runs right after the poll's events;
* only what the kernel does not take (or everything, while the transport
  still holds older bytes, or for a transport that is not a plain TCP socket,
  such as TLS) goes to ``transport.write``, whose buffer, producer pausing and
  writability handling take over from there.
"""

from __future__ import annotations

from typing import Any, Optional
from weakref import WeakKeyDictionary

from twisted.internet import tcp

__all__ = ["FlushScheduler", "Outbound"]


class TurnEnd:
    """Runs the flushes of a reactor turn right after its poll, without a timed call.

    A ``callLater(0)`` per turn costs a ``DelayedCall``, a heap push and pop
    and the reactor's timeout arithmetic: with one routed message per turn,
    as much as the token buckets.  This wraps the reactor's ``doIteration``
    (the poll that dispatches the I/O events) once: while it runs,
    ``polling`` is true and schedulers written to join ``dirty``; when it
    returns (or raises) they are flushed.
    """

    __slots__ = ("polling", "dirty")

    def __init__(self, reactor: Any) -> None:
        self.polling = False
        self.dirty: list[FlushScheduler] = []
        poll = reactor.doIteration

        def doIteration(timeout: Optional[float]) -> None:
            self.polling = True
            try:
                poll(timeout)
            finally:
                self.polling = False
                if self.dirty:
                    dirty, self.dirty = self.dirty, []
                    for scheduler in dirty:
                        scheduler.flush()
        reactor.doIteration = doIteration


_turn_ends: "WeakKeyDictionary[Any, TurnEnd]" = WeakKeyDictionary()


def turn_end(reactor: Any) -> Optional[TurnEnd]:
    """The reactor's ``TurnEnd`` (made on first use), or None if it has no ``doIteration``."""
    if not callable(getattr(reactor, "doIteration", None)):
        return None  # e.g. task.Clock: timed calls only
    try:
        end = _turn_ends.get(reactor)
        if end is None:
            end = _turn_ends[reactor] = TurnEnd(reactor)
    except TypeError:  # not weakly referenceable
        return None
    return end


class FlushScheduler:
    """Flushes the connections written to during a reactor turn, once each, after it."""

    __slots__ = ("_reactor", "_dirty", "_call", "_turn")

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._dirty: list[Outbound] = []
        #: None when nothing waits; else the pending DelayedCall or the TurnEnd.
        self._call: Any = None
        self._turn = turn_end(reactor)

    def schedule(self, outbound: "Outbound") -> None:
        self._dirty.append(outbound)
        if self._call is None:
            turn = self._turn
            if turn is not None and turn.polling:
                # Written during the poll's events: flushed when the poll returns.
                self._call = turn
                turn.dirty.append(self)
            else:
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
