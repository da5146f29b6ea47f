"""What the media peer and the viewer share: a Symple client carrying calls.

The endpoint listens to the client's messages, hands call:* frames to the
call they name (``data.callId`` from the same sender) and ends calls whose
other side leaves or when the connection is lost.  Garbage from one peer is
logged and dropped; it never disturbs another call.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from ..client import NotConnected, SympleClient
from .bridge import AsyncioBridge
from .call import CALL_SUBTYPES, INIT, Call, rtc_configuration

log = Logger()


class CallEndpoint:
    """A Symple client whose call:* messages drive ``Call`` objects."""

    def __init__(self, client: SympleClient, bridge: Optional[AsyncioBridge] = None,
                 ice_servers: tuple[str, ...] | list[str] = (),
                 connect_timeout: float = 20.0) -> None:
        self.client = client
        self.reactor = client.reactor
        self.bridge = bridge or AsyncioBridge(client.reactor)
        self.rtc_config = rtc_configuration(ice_servers)
        #: Seconds from accept/offer to ICE connected before the call is given up.
        self.connect_timeout = connect_timeout
        self.calls: dict[tuple[str, str], Call] = {}
        client.on("message", self._message)
        client.on("remove_peer", self._peer_left)
        client.on("disconnect", lambda info: self._end_all("disconnected"))

    # -- hooks for subclasses --------------------------------------------------

    def incoming(self, remote: str, call_id: str, data: dict) -> None:
        """A call:init nobody handles: refuse it."""
        self.client.send_message(remote, {"callId": call_id, "reason": "rejected"},
                                 subtype="call:reject")

    def outgoing_tracks(self) -> list[Any]:
        """Tracks a new call sends (loop side)."""
        return []

    def recording_path(self, call: Call) -> Optional[str]:
        """The file to record what ``call``'s other side sends to; None: read and drop it."""
        return None

    def call_connected(self, call: Call) -> None:
        log.info("Call {call_id} with {remote} connected", call_id=call.call_id,
                 remote=call.remote)

    def call_ended(self, call: Call) -> None:
        self.calls.pop((call.remote, call.call_id), None)
        log.info("Call {call_id} with {remote} ended: {reason}", call_id=call.call_id,
                 remote=call.remote, reason=call.end_reason)

    # -- plumbing ----------------------------------------------------------------

    def signal(self, remote: str, subtype: str, data: dict) -> None:
        try:
            self.client.send_message(remote, data, subtype=subtype)
        except NotConnected:
            log.info("Not sent ({subtype} to {remote}): offline", subtype=subtype,
                     remote=remote)

    def add(self, call: Call) -> Call:
        self.calls[(call.remote, call.call_id)] = call
        return call

    def _message(self, frame: dict) -> None:
        subtype = frame.get("subtype")
        if subtype not in CALL_SUBTYPES:
            return
        sender, data = frame.get("from"), frame.get("data")
        if not isinstance(sender, str) or "|" not in sender or not isinstance(data, dict):
            return
        call_id = data.get("callId")
        if not isinstance(call_id, str) or not call_id:
            return
        call = self.calls.get((sender, call_id))
        try:
            if call is not None:
                call.received(subtype, data)
            elif subtype == INIT:
                self.incoming(sender, call_id, data)
        except Exception:
            log.failure("Error handling {subtype} from {sender}", subtype=subtype,
                        sender=sender)
            if call is not None:
                call.fail("internal error")

    def _peer_left(self, peer: dict) -> None:
        for call in list(self.calls.values()):
            if call.remote.partition("|")[2] == peer.get("id"):
                call.end("peer-left")

    def _end_all(self, reason: str) -> Deferred:
        return DeferredList([call.end(reason) for call in list(self.calls.values())])

    def hangup_all(self, reason: str = "hangup") -> Deferred:
        """Hang up every call (telling the other sides); fires once all are closed."""
        return DeferredList([call.hangup(reason) for call in list(self.calls.values())])
