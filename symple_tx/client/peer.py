"""``SympleClient``: one Symple peer, the client's state machine.

It authenticates on every connection, rebuilds its rooms and roster after a
reconnect, matches ``join:ok``/``leave:ok``/``error`` answers to requests, and
decides when to retry and when to give up (docs/client.md).
"""

from __future__ import annotations

import secrets
from typing import Any, Optional

from twisted.application.internet import ClientService
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from .. import wire
from ..roster import PeerMatch, Roster, peer_matches
from ..wire import ProtocolError
from .backoff import backoff
from .endpoints import client_endpoint
from .errors import REJECTED, AuthError, ClientError, ConnectError, NotConnected
from .events import Events, FrameMatch, default_reactor, frame_matches
from .protocol import SympleClientFactory, SympleClientProtocol

log = Logger()

#: Subtype of the self-addressed message behind ``SympleClient.sync``.
SYNC_SUBTYPE = "symple:sync"


def new_frame_id() -> str:
    return secrets.token_urlsafe(9)


class SympleClient(Events):
    """A Symple peer.  See ``EVENTS`` for what it emits and docs/client.md for a tour."""

    def __init__(self, url: str, user: str, *, name: str = "", token: str = "",
                 rooms: tuple[str, ...] | list[str] = (), data: Optional[dict] = None,
                 reconnect: bool = True, reconnect_delay: float = 1.0,
                 max_reconnect_delay: float = 30.0, reconnect_factor: float = 2.0,
                 jitter: float = 1.0, ca_file: Optional[str] = None, verify: bool = True,
                 connect_timeout: float = 10.0, ping_interval: float = 25.0,
                 ping_timeout: float = 10.0, reactor: Any = None) -> None:
        super().__init__()
        self.reactor = reactor or default_reactor()
        self.url = url
        self.user = user
        self.name = name
        self.token = token
        self.auth_rooms = list(rooms)
        self.data = dict(data or {})
        self.reconnect = reconnect
        self.capabilities: dict[str, Any] = {}
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.roster = Roster()
        #: Our own peer object from the latest ``welcome``; None while offline.
        self.peer: Optional[dict] = None
        #: Rooms the server says we are in.
        self.rooms: list[str] = []
        #: Rooms joined with ``join()``: joined again after every reconnect.
        self.joined: list[str] = []
        self.protocol: Optional[SympleClientProtocol] = None
        self._endpoint = client_endpoint(self.reactor, url, ca_file, verify, connect_timeout)
        self._policy = backoff(reconnect_delay, max_reconnect_delay, reconnect_factor, jitter)
        self._service: Optional[ClientService] = None
        self._stopping = False
        self._ever_online = False
        self._unwelcomed = 0
        self._rejected: Optional[AuthError] = None
        self._refusal: Optional[str] = None
        self._waiting: list[Deferred] = []
        self._pending: dict[str, tuple[Deferred, str, str]] = {}

    # -- state ---------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self.peer is not None and self.protocol is not None and not self._stopping

    @property
    def address(self) -> Optional[str]:
        return wire.address(self.peer["user"], self.peer["id"]) if self.peer else None

    # -- connecting ----------------------------------------------------------

    def connect(self) -> Deferred:
        """Start connecting; fires with our peer dict once welcomed.

        Fails with ``ConnectError`` if the first attempt cannot reach the
        server, or ``AuthError`` if the server refuses the credentials.
        """
        if self._service is None:
            self._stopping = False
            self._ever_online = False
            self._rejected = None
            self._unwelcomed = 0
            factory = SympleClientFactory(self, self.url, self.reactor,
                                          self.ping_interval, self.ping_timeout)
            self._service = ClientService(self._endpoint, factory, retryPolicy=self._retry_delay,
                                          clock=self.reactor)
            self._service.startService()
            first = self._service.whenConnected(failAfterFailures=1)
            first.addErrback(self._first_attempt_failed)
        return self.when_connected()

    def _retry_delay(self, attempt: int) -> float:
        # Connections that drop before ``welcome`` count as failures too, so a
        # server that accepts TCP but refuses us is not hammered.
        return self._policy(attempt + self._unwelcomed)

    def _first_attempt_failed(self, failure: Failure) -> None:
        if self._ever_online or self._stopping:
            return None
        self._give_up(ConnectError(f"Cannot connect to {self.url}: "
                                   f"{failure.getErrorMessage() or failure.type.__name__}"))
        return None

    def when_connected(self, timeout: Optional[float] = None) -> Deferred:
        """Fires with our peer dict when online (at once if already online)."""
        if self.online:
            return succeed(self.peer)
        if self._service is None:
            return fail(NotConnected("connect() has not been called"))
        d: Deferred = Deferred(lambda d: self._waiting.remove(d) if d in self._waiting else None)
        self._waiting.append(d)
        if timeout is not None:
            d.addTimeout(timeout, self.reactor)
        return d

    def disconnect(self) -> Deferred:
        """Close the connection and stop reconnecting; fires once it is closed."""
        self._stopping = True
        if self.protocol is not None:
            self.protocol.sendClose(1000)
        self._fail_waiting(NotConnected("Disconnected"))
        return self._stop_service()

    close = disconnect

    def _stop_service(self) -> Deferred:
        """Stop reconnecting, on the next turn: we may be inside the service's own callbacks."""
        service, self._service = self._service, None
        if service is None or not service.running:
            return succeed(None)
        return deferLater(self.reactor, 0, service.stopService)

    def _give_up(self, error: Exception) -> None:
        """Stop for good after a failure that retrying would not fix."""
        self._stopping = True
        self._stop_service()
        self.emit("error", error)
        self._fail_waiting(error)

    def _fail_waiting(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(error)

    # -- connection events (from the protocol) ---------------------------------

    def _opened(self, protocol: SympleClientProtocol) -> None:
        self.protocol = protocol
        self._rejected = None
        self._refusal = None
        frame: dict[str, Any] = {"type": "auth", "user": self.user}
        if self.name:
            frame["name"] = self.name
        if self.token:
            frame["token"] = self.token
        if self.auth_rooms:
            frame["rooms"] = self.auth_rooms
        data = dict(self.data)
        if self.capabilities:
            data["capabilities"] = dict(self.capabilities)
        if data:
            frame["data"] = data
        protocol.sendMessage(wire.dumps(frame))

    def _received(self, protocol: SympleClientProtocol, payload: bytes) -> None:
        try:
            frame = wire.decode(payload)
        except ProtocolError as exc:
            log.warn("Ignoring an invalid frame from the server: {error}", error=exc.message)
            return
        kind = frame["type"]
        if self.peer is None:
            if kind == "welcome":
                self._welcomed(frame)
            elif kind == "error":
                status, message = frame.get("status", 0), str(frame.get("message"))
                self._refusal = f"the server answered {status} {message}"
                if status in REJECTED:
                    self._rejected = AuthError(status, message, frame)
            return
        marker = frame.get("data")
        if (kind == "message" and frame.get("subtype") == SYNC_SUBTYPE and isinstance(marker, str)
                and frame.get("from") == self.address and marker in self._pending):
            self._pending.pop(frame["data"])[0].callback(None)
            return
        self.emit("frame", frame)
        if kind == "presence":
            self._presence(frame)
        elif kind in ("join:ok", "leave:ok", "error"):
            self._answer(frame)
        elif kind in ("message", "command", "event"):
            self.emit(kind, frame)

    def _welcomed(self, frame: dict) -> None:
        peer = frame.get("peer")
        if not isinstance(peer, dict) or not isinstance(peer.get("id"), str):
            log.warn("Ignoring a welcome without a peer")
            return
        self.peer = peer
        self.rooms = [r for r in frame.get("rooms", []) if isinstance(r, str)]
        self.roster.own_id = peer["id"]
        self._ever_online = True
        self._unwelcomed = 0
        for room in self.joined:
            if room not in self.rooms:
                self._room_request("join", room).addErrback(self._rejoin_failed, room)
        self.emit("connect", peer)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(peer)

    def _rejoin_failed(self, failure: Failure, room: str) -> None:
        if failure.check(ClientError):
            self.joined = [r for r in self.joined if r != room]
            self.emit("error", failure.value)

    def _closed(self, protocol: SympleClientProtocol, code: Optional[int],
                reason: Optional[str]) -> None:
        was_online = protocol is self.protocol and self.peer is not None
        if protocol is self.protocol:
            self.protocol = None
        self.peer = None
        pending, self._pending = self._pending, {}
        for d, _, _ in pending.values():
            d.errback(NotConnected("Connection lost"))
        for peer in self.roster.clear():
            self.emit("remove_peer", {**peer, "online": False})
        reconnecting = False
        if self._stopping:
            pass
        elif self._rejected is not None:
            self._give_up(self._rejected)
        elif not self._ever_online:
            why = self._refusal or self._describe(protocol, code, reason)
            self._give_up(ConnectError(f"Cannot connect to {self.url}: {why}"))
        elif not self.reconnect:
            self._stopping = True
            self._stop_service()
        else:
            reconnecting = True
            if not was_online:
                self._unwelcomed += 1
        if was_online:
            self.emit("disconnect", {"code": code, "reason": reason,
                                     "reconnecting": reconnecting})

    @staticmethod
    def _describe(protocol: SympleClientProtocol, code: Optional[int],
                  reason: Optional[str]) -> str:
        lost = protocol.lost_reason
        if lost is not None and not lost.check(ConnectionDone):
            message = lost.getErrorMessage()
            if "certificate" in message.lower() or lost.type.__name__ == "Error":
                return f"TLS handshake failed ({message})"
            return message
        if protocol.state == protocol.STATE_CONNECTING or code is None:
            return f"WebSocket handshake failed ({reason or 'connection closed'})"
        return f"closed before welcome (code {code}: {reason or 'no reason'})"

    # -- incoming frames ---------------------------------------------------------

    def _presence(self, frame: dict) -> None:
        sender = frame.get("from")
        if frame.get("probe") is True and isinstance(sender, str) and "|" in sender:
            self.send_presence(to=sender.partition("|")[2])
        change = self.roster.apply(frame)
        self.emit("presence", frame)
        if change is not None:
            kind, peer = change
            self.emit(f"{kind}_peer", peer)

    def _answer(self, frame: dict) -> None:
        request = self._pending.pop(frame.get("id"), None) if "id" in frame else None
        if frame["type"] == "error":
            error = ClientError(frame.get("status", 0), str(frame.get("message")), frame)
            if request is not None:
                request[0].errback(error)
            else:
                self.emit("error", error)
            return
        if request is None:
            return
        d, kind, room = request
        if kind == "join" and room not in self.rooms:
            self.rooms.append(room)
        elif kind == "leave" and room in self.rooms:
            self.rooms.remove(room)
        d.callback(room)

    # -- sending -----------------------------------------------------------------

    def send(self, frame: dict) -> dict:
        """Send any frame (``from`` and a random ``id`` are filled in); returns it."""
        if not self.online:
            raise NotConnected(f"Not connected to {self.url}")
        frame.setdefault("id", new_frame_id())
        frame.setdefault("from", self.address)
        self.protocol.sendMessage(wire.dumps(frame))  # type: ignore[union-attr]
        return frame

    def send_message(self, to: Any = None, data: Any = None, subtype: Optional[str] = None,
                     **fields: Any) -> dict:
        """A ``message``: ``to`` is ``user|id``, a room, a list of rooms or None (everyone)."""
        return self.send(_routed("message", to, data, subtype, fields))

    def send_command(self, to: Any = None, node: Optional[str] = None, data: Any = None,
                     **fields: Any) -> dict:
        if node is not None:
            fields["node"] = node
        return self.send(_routed("command", to, data, None, fields))

    def send_event(self, name: str, to: Any = None, data: Any = None, **fields: Any) -> dict:
        fields["name"] = name
        return self.send(_routed("event", to, data, None, fields))

    def respond(self, frame: dict, **fields: Any) -> dict:
        """Answer ``frame`` to its sender, keeping its type, subtype and id."""
        reply = {k: v for k, v in frame.items() if k not in ("from", "to")}
        reply["to"] = frame.get("from")
        reply.update(fields)
        return self.send(reply)

    def send_presence(self, data: Optional[dict] = None, to: Any = None,
                      probe: bool = False) -> dict:
        """Announce our presence (peer, data and capabilities) to everyone or ``to``."""
        payload = {**(self.peer or {}), **self.data}
        if self.capabilities:
            payload["capabilities"] = dict(self.capabilities)
        payload.update(data or {})
        frame: dict[str, Any] = {"type": "presence", "data": payload}
        if to is not None:
            frame["to"] = to
        if probe:
            frame["probe"] = True
        return self.send(frame)

    def join(self, room: str) -> Deferred:
        """Join a room; fires with the room on ``join:ok``, fails with ``ClientError``."""
        if not wire.valid_room(room):
            return fail(ValueError(f"Invalid room name {room!r}"))

        def joined(result: str) -> str:
            if room not in self.joined:
                self.joined.append(room)
            return result
        return self._room_request("join", room).addCallback(joined)

    def leave(self, room: str) -> Deferred:
        """Leave a room; fires with the room on ``leave:ok``."""
        self.joined = [r for r in self.joined if r != room]
        return self._room_request("leave", room)

    def _room_request(self, kind: str, room: str) -> Deferred:
        try:
            frame = self.send({"type": kind, "room": room})
        except NotConnected as exc:
            return fail(exc)
        d: Deferred = Deferred()
        self._pending[frame["id"]] = (d, kind, room)
        return d

    # -- capabilities --------------------------------------------------------------

    def add_capability(self, name: str, value: Any = True) -> None:
        """Set one of our capabilities and re-announce our presence."""
        self.capabilities[name] = value
        self._announce()

    def remove_capability(self, name: str) -> None:
        if self.capabilities.pop(name, None) is not None:
            self._announce()

    def has_capability(self, name: str, peer: Optional[str] = None) -> bool:
        """Ours, or those of a roster peer given by session id or ``user|id``."""
        capabilities = self._capabilities_of(peer)
        return name in capabilities and capabilities[name] is not False

    def get_capability(self, name: str, peer: Optional[str] = None) -> Any:
        return self._capabilities_of(peer).get(name)

    def _capabilities_of(self, peer: Optional[str]) -> dict:
        if peer is None:
            return self.capabilities
        found = self.roster.get(peer)
        capabilities = found.get("capabilities") if found else None
        return capabilities if isinstance(capabilities, dict) else {}

    def _announce(self) -> None:
        if self.online:
            self.send_presence()

    # -- waiting -------------------------------------------------------------------

    def wait_for(self, kind: Optional[str] = None, match: FrameMatch = None,
                 timeout: Optional[float] = None) -> Deferred:
        """The next frame of type ``kind`` (any if None) that matches ``match``."""
        return self.once("frame", lambda f: (kind is None or f.get("type") == kind)
                         and frame_matches(f, match), timeout, self.reactor)

    def sync(self, timeout: Optional[float] = None) -> Deferred:
        """Fires once the server has handled everything we sent before.

        The server handles a session's frames in order, so a message to
        ourselves comes back after all of them, and after whatever they
        caused to be sent to us (join snapshots, errors).  The echo itself
        is consumed, never emitted.
        """
        marker = new_frame_id()
        try:
            self.send_message(self.address, marker, subtype=SYNC_SUBTYPE)
        except NotConnected as exc:
            return fail(exc)
        d: Deferred = Deferred(lambda _: self._pending.pop(marker, None))
        self._pending[marker] = (d, "sync", "")
        if timeout is not None:
            d.addTimeout(timeout, self.reactor)
        return d

    def next_message(self, match: FrameMatch = None, timeout: Optional[float] = None) -> Deferred:
        return self.wait_for("message", match, timeout)

    def wait_for_peer(self, match: PeerMatch, timeout: Optional[float] = None) -> Deferred:
        """A roster peer (user name, ``user|id`` or predicate), now or when one matches.

        A peer already in the roster can come to match later: a predicate on its
        capabilities is satisfied by the presence update that announces them.
        """
        found = self.roster.find(match)
        if found:
            return succeed(found[0])
        return self.once(("add_peer", "update_peer"), lambda p: peer_matches(p, match),
                         timeout, self.reactor)


def _routed(kind: str, to: Any, data: Any, subtype: Optional[str], fields: dict) -> dict:
    frame: dict[str, Any] = {"type": kind, **fields}
    if to is not None:
        frame["to"] = to
    if data is not None:
        frame["data"] = data
    if subtype is not None:
        frame["subtype"] = subtype
    return frame
