"""The media peer: a Symple client that streams its source to whoever calls it.

It advertises ``capabilities: {"video": true, "stream": true}`` (``audio``
when the source has sound, ``mjpeg`` with the stream's URL when it serves
one) and answers each call:init with call:accept, up to ``max_viewers`` calls
at once; beyond that it answers call:reject ``{reason: "busy"}``.  Viewers
normally ask for receive-only (``receiveOnly: true`` in call:init); a caller
that sends its own camera is answered too, and its media is recorded to
``record_dir`` (``<user>-<callId>.webm``, VP8 and Opus) or read and dropped.
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..client import SympleClient
from .bridge import AsyncioBridge
from .call import ACCEPT, CONNECTING, REJECT, Call, IN_CALL
from .endpoint import CallEndpoint
from .sources import MediaSource

log = Logger()


class MediaPeer(CallEndpoint):
    """Answers calls with the source's tracks; see the module docstring."""

    def __init__(self, client: SympleClient, source: MediaSource, *,
                 bridge: Optional[AsyncioBridge] = None, max_viewers: int = 4,
                 mjpeg_url: Optional[str] = None, ice_servers: tuple[str, ...] | list[str] = (),
                 connect_timeout: float = 20.0, record_dir: Optional[str] = None) -> None:
        if max_viewers < 1:
            raise ValueError(f"max_viewers must be at least 1, not {max_viewers}")
        super().__init__(client, bridge, ice_servers, connect_timeout)
        self.source = source
        self.max_viewers = max_viewers
        self.record_dir = record_dir
        client.capabilities.update(self.capabilities(mjpeg_url))

    def capabilities(self, mjpeg_url: Optional[str] = None) -> dict[str, Any]:
        caps: dict[str, Any] = {"video": self.source.video is not None, "stream": True}
        if self.source.audio is not None:
            caps["audio"] = True
        if mjpeg_url:
            caps["mjpeg"] = mjpeg_url
        return caps

    def set_mjpeg_url(self, url: Optional[str]) -> None:
        """Announce (or withdraw, with None) the MJPEG stream's URL in our presence."""
        if url:
            if self.client.capabilities.get("mjpeg") != url:
                self.client.add_capability("mjpeg", url)
        else:
            self.client.remove_capability("mjpeg")

    @property
    def viewers(self) -> list[Call]:
        return [call for call in self.calls.values() if call.live]

    def incoming(self, remote: str, call_id: str, data: dict) -> None:
        if len(self.viewers) >= self.max_viewers:
            log.info("Busy: {remote} refused ({n} viewers)", remote=remote, n=self.max_viewers)
            self.signal(remote, REJECT, {"callId": call_id, "reason": "busy"})
            return
        call = self.add(Call(self, remote, call_id, "in",
                             receive_only=data.get("receiveOnly") is True))
        call.state = CONNECTING
        call.signal(ACCEPT)
        call.after(self.connect_timeout, "failed", lambda: call.state == IN_CALL)

    def recording_path(self, call: Call) -> Optional[str]:
        if self.record_dir is None:
            return None
        user = call.remote.partition("|")[0]
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{user}-{call.call_id}").lstrip(".")
        return os.path.join(self.record_dir, f"{name[:120]}.webm")

    def outgoing_tracks(self) -> list[Any]:
        tracks = [self.source.subscribe_video(), self.source.subscribe_audio()]
        return [track for track in tracks if track is not None]

    def stop(self) -> Deferred:
        """Hang up on every viewer; fires once their connections are closed."""
        return self.hangup_all("hangup")
