"""Twisted <-> asyncio: aiortc runs on an asyncio loop, the Symple client on the reactor.

On Twisted's asyncio reactor (``symple stream`` installs it) both share one
loop and one thread.  On any other reactor (the default epoll one, trial's)
the bridge runs its own asyncio loop in a daemon thread, so the media peer
can be embedded in any Twisted program.  Either way the rule is the same:
aiortc objects are only touched inside ``bridge.run(...)`` coroutines, and
Symple state only in the reactor thread (``bridge.to_reactor``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Awaitable, Callable, Optional

from twisted.internet.defer import CancelledError, Deferred, succeed


def _reactor() -> Any:
    from twisted.internet import reactor
    return reactor


class AsyncioBridge:
    """Run coroutines on an asyncio loop and get their results as Deferreds."""

    def __init__(self, reactor: Any = None) -> None:
        self.reactor = reactor or _reactor()
        shared = getattr(self.reactor, "_asyncioEventloop", None)
        self.thread: Optional[threading.Thread] = None
        #: Open RTCPeerConnections (loop side); stop() closes those still open, since
        #: aiortc's decoder threads would otherwise keep the process from exiting.
        self.connections: set[Any] = set()
        if shared is not None:
            self.loop: asyncio.AbstractEventLoop = shared
        else:
            self.loop = asyncio.new_event_loop()
            self.thread = threading.Thread(target=self._serve, name="symple-media-asyncio",
                                           daemon=True)
            self.thread.start()

    @property
    def shared(self) -> bool:
        """True when the reactor itself runs on this asyncio loop (one thread)."""
        return self.thread is None

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coroutine: Awaitable[Any]) -> Deferred:
        """Schedule ``coroutine`` on the loop; its result (or failure) fires in the reactor."""
        if self.shared:
            return Deferred.fromFuture(asyncio.ensure_future(coroutine, loop=self.loop))
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)  # type: ignore[arg-type]
        d: Deferred = Deferred(lambda _: future.cancel())

        def done(f: concurrent.futures.Future) -> None:
            self.reactor.callFromThread(_settle, d, f)
        future.add_done_callback(done)
        return d

    def to_reactor(self, function: Callable[..., Any], *args: Any) -> None:
        """From the loop: call ``function(*args)`` in the reactor thread, soon."""
        self.reactor.callFromThread(function, *args)

    def stop(self) -> Deferred:
        """Stop a private loop (after its tasks are cancelled); a shared one is left alone."""
        if self.shared or not self.loop.is_running():
            return succeed(None)

        async def cancel_all() -> None:
            for pc in list(self.connections):
                await pc.close()
            self.connections.clear()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        d = self.run(cancel_all())
        d.addBoth(lambda _: self.loop.call_soon_threadsafe(self.loop.stop))
        return d


def _settle(d: Deferred, future: concurrent.futures.Future) -> None:
    if d.called:
        return
    if future.cancelled():
        d.errback(CancelledError())
    elif future.exception() is not None:
        d.errback(future.exception())
    else:
        d.callback(future.result())
