"""A Python viewer: calls a media peer receive-only and reads the decoded frames.

    viewer = MediaViewer(client, bridge)
    call = await viewer.watch("cam|<session id>")   # CallRejected("busy") when full
    frame = await viewer.next_frame(call)           # an av.VideoFrame
    await call.hangup()
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.defer import Deferred, ensureDeferred

from ..client import SympleClient
from .bridge import AsyncioBridge
from .call import INIT, IN_CALL, Call, CallEnded, new_call_id
from .endpoint import CallEndpoint


class MediaViewer(CallEndpoint):
    """Watches media peers; each ``watch`` is one outgoing receive-only call."""

    def __init__(self, client: SympleClient, bridge: Optional[AsyncioBridge] = None,
                 audio: bool = False, ice_servers: tuple[str, ...] | list[str] = (),
                 connect_timeout: float = 20.0) -> None:
        super().__init__(client, bridge, ice_servers, connect_timeout)
        self.kinds = ("video", "audio") if audio else ("video",)

    def watch(self, address: str, ring_timeout: float = 30.0) -> Deferred:
        """Call ``address`` ("user|id"); fires with the Call once ICE is connected."""
        return ensureDeferred(self._watch(address, ring_timeout))

    async def _watch(self, address: str, ring_timeout: float) -> Call:
        if "|" not in address:
            raise ValueError(f'calls need "user|id", not {address!r}')
        call = self.add(Call(self, address, new_call_id(), "out", receive_only=True))
        call.after(ring_timeout, "no-answer", lambda: call.state != "calling")
        call.signal(INIT, receiveOnly=True)
        await call._accepted
        call.after(self.connect_timeout, "failed", lambda: call.state == IN_CALL)
        await self.bridge.run(call.offer(self.kinds))
        return await call.when_connected()

    def next_frame(self, call: Call) -> Deferred:
        """The next decoded video frame of ``call``."""
        if not call.live:
            raise CallEnded(call.end_reason)
        return self.bridge.run(call.next_video_frame())
