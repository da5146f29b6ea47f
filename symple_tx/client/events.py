"""The client's event emitter and frame filters."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Optional, Union

from twisted.internet.defer import Deferred
from twisted.logger import Logger

log = Logger()

#: A frame filter: a predicate, or a dict of fields the frame must have.
FrameMatch = Union[Callable[[dict], bool], dict, None]

#: Events a client emits, with what the listener is given.
EVENTS = {
    "connect": "own peer dict, after each welcome",
    "disconnect": "dict with code, reason and reconnecting",
    "error": "ClientError (server error frame), AuthError or ConnectError",
    "frame": "every decoded frame, before the specific event",
    "message": "message frame", "presence": "presence frame",
    "command": "command frame", "event": "event frame",
    "add_peer": "peer dict", "update_peer": "peer dict", "remove_peer": "peer dict",
}


def frame_matches(frame: dict, match: FrameMatch) -> bool:
    if match is None:
        return True
    if callable(match):
        return bool(match(frame))
    return all(frame.get(key) == value for key, value in match.items())


def default_reactor() -> Any:
    """The global reactor, imported only when no reactor was given."""
    from twisted.internet import reactor
    return reactor


class Events:
    """A small synchronous event emitter; a failing listener never stops the others."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Callable[..., Any]]] = defaultdict(list)

    def on(self, event: str, callback: Optional[Callable[..., Any]] = None) -> Any:
        """Add a listener; usable as a decorator: ``@client.on("message")``."""
        if callback is None:
            return lambda cb: self.on(event, cb)
        self._listeners[event].append(callback)
        return callback

    def off(self, event: str, callback: Callable[..., Any]) -> None:
        listeners = self._listeners.get(event, [])
        if callback in listeners:
            listeners.remove(callback)

    def emit(self, event: str, *args: Any) -> None:
        for callback in list(self._listeners.get(event, ())):
            try:
                callback(*args)
            except Exception:
                log.failure("Error in a {event!r} listener", event=event)

    def once(self, event: Union[str, tuple[str, ...]],
             match: Callable[..., bool] = lambda *a: True,
             timeout: Optional[float] = None, reactor: Any = None) -> Deferred:
        """A Deferred for the next ``event`` (or any of several) whose arguments satisfy ``match``."""
        events = (event,) if isinstance(event, str) else event

        def stop(_: Any = None) -> None:
            for name in events:
                self.off(name, listener)

        def listener(*args: Any) -> None:
            if match(*args):
                stop()
                d.callback(args[0] if len(args) == 1 else args)

        d: Deferred = Deferred(stop)
        for name in events:
            self.on(name, listener)
        if timeout is not None:
            d.addTimeout(timeout, reactor or default_reactor())
        return d
