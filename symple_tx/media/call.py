"""One WebRTC call signalled over Symple, with the demo page's call:* messages.

Signalling (a Symple ``message`` addressed ``user|id``, ``subtype`` ``call:*``,
``data.callId`` naming the call)::

    caller                                          callee (the media peer)
      call:init      {callId, receiveOnly: true}  -->  call:reject {reason: "busy"} when full
              <--  call:accept   {callId}
      call:offer     {callId, sdp}                -->
              <--  call:answer   {callId, sdp}
      call:candidate {callId, candidate}         <-->  (trickled both ways)
      call:hangup    {callId, reason}            <-->  (either side)

A ``Call`` lives in the reactor thread (its state, the signalling) and keeps
its ``RTCPeerConnection`` on the asyncio loop: every step that touches it is
a coroutine run through the bridge, one after the other, so a candidate
never overtakes its offer.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Callable, Optional

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaBlackhole
from aiortc.sdp import candidate_from_sdp
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from .record import Recorder

if TYPE_CHECKING:
    from .endpoint import CallEndpoint

log = Logger()

INIT, ACCEPT, REJECT = "call:init", "call:accept", "call:reject"
OFFER, ANSWER, CANDIDATE, HANGUP = "call:offer", "call:answer", "call:candidate", "call:hangup"
CALL_SUBTYPES = frozenset({INIT, ACCEPT, REJECT, OFFER, ANSWER, CANDIDATE, HANGUP})

#: Call states, as the demo page names them.
CALLING, RINGING, CONNECTING, IN_CALL, ENDED = "calling", "ringing", "connecting", "in-call", "ended"
LIVE = frozenset({CALLING, RINGING, CONNECTING, IN_CALL})


class CallRejected(Exception):
    """The other side answered call:reject (``reason``: busy, rejected, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"call rejected: {reason}")
        self.reason = reason


class CallEnded(Exception):
    """The call ended before what was awaited happened."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"call ended: {reason}")
        self.reason = reason


def new_call_id() -> str:
    return secrets.token_urlsafe(9)


def rtc_configuration(ice_servers: tuple[str, ...] | list[str] = ()) -> RTCConfiguration:
    """Only the given STUN/TURN servers: aiortc would otherwise ask a public STUN server."""
    return RTCConfiguration(iceServers=[RTCIceServer(url) for url in ice_servers])


def parse_candidate(candidate: Any) -> Any:
    """An ``RTCIceCandidate`` from a browser's ``candidate.toJSON()``; None at end-of-candidates.

    Raises ValueError for anything else.
    """
    if not isinstance(candidate, dict) or not isinstance(candidate.get("candidate"), str):
        raise ValueError("candidate must be an object with a candidate string")
    text = candidate["candidate"].strip()
    if not text:
        return None
    if text.startswith("candidate:"):
        text = text[len("candidate:"):]
    try:
        parsed = candidate_from_sdp(text)
    except (AssertionError, ValueError, IndexError) as exc:
        raise ValueError(f"unreadable candidate {text[:80]!r}") from exc
    mid, index = candidate.get("sdpMid"), candidate.get("sdpMLineIndex")
    parsed.sdpMid = mid if isinstance(mid, str) else None
    parsed.sdpMLineIndex = index if isinstance(index, int) else None
    if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
        parsed.sdpMLineIndex = 0
    return parsed


def local_candidates(sdp: str) -> list[dict]:
    """Our candidates, in the browser's JSON form, from the first media section that has any.

    aiortc gathers every candidate before it offers or answers, so they are in
    the SDP already; sending them as call:candidate as well serves viewers
    that expect trickle ICE.  The first section's transport carries the bundle.
    """
    found: list[dict] = []
    index, mid = -1, None
    for line in sdp.splitlines():
        if line.startswith("m="):
            if found:
                break
            index, mid = index + 1, None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:"):].strip()
        elif line.startswith("a=candidate:") and index >= 0:
            found.append({"candidate": line[2:].strip(), "sdpMLineIndex": index})
    for candidate in found:
        candidate["sdpMid"] = mid
    return found


class Call:
    """One call with one remote peer; ``direction`` is "in" (they called) or "out"."""

    def __init__(self, endpoint: "CallEndpoint", remote: str, call_id: str, direction: str,
                 receive_only: bool = False) -> None:
        self.endpoint = endpoint
        self.bridge = endpoint.bridge
        self.remote = remote
        self.call_id = call_id
        self.direction = direction
        self.receive_only = receive_only
        self.state = RINGING if direction == "in" else CALLING
        self.ice_state = "new"
        self.end_reason = ""
        #: Fires with the reason when the call ends (never fails).
        self.ended: Deferred = Deferred()
        self._connected: list[Deferred] = []
        self._accepted: Optional[Deferred] = Deferred() if direction == "out" else None
        self._chain: Deferred = succeed(None)
        #: The offer (incoming calls) or answer (outgoing) was taken: one per call.
        self._described = False
        self._timers: list[Any] = []
        # Loop side only (touched inside coroutines):
        self.pc: Optional[RTCPeerConnection] = None
        self._pending: list[Any] = []
        self._tracks: list[Any] = []
        self._blackhole: Optional[MediaBlackhole] = None
        self._recorder: Optional[Recorder] = None
        #: Where what the other side sends is recorded (the peer's ``record_dir``), if anywhere.
        self.recording: Optional[str] = None
        #: Video tracks the other side sends (loop side), and who waits for the first.
        self.remote_video: Optional[Any] = None
        self._track_waiters: list[Any] = []

    def __repr__(self) -> str:
        return f"<Call {self.direction} {self.remote} {self.call_id} {self.state}>"

    @property
    def live(self) -> bool:
        return self.state in LIVE

    # -- signalling out ---------------------------------------------------------

    def signal(self, subtype: str, **data: Any) -> None:
        self.endpoint.signal(self.remote, subtype, {"callId": self.call_id, **data})

    def hangup(self, reason: str = "hangup") -> Deferred:
        """End the call from this side; fires once the connection is closed."""
        if self.live:
            self.signal(HANGUP, reason=reason)
        return self.end(reason)

    def end(self, reason: str) -> Deferred:
        """End the call without telling the other side (it told us, or it is gone)."""
        if not self.live:
            return self._chain
        self.state = ENDED
        self.end_reason = reason
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        if self._accepted is not None and not self._accepted.called:
            self._accepted.errback(CallEnded(reason))
        waiting, self._connected = self._connected, []
        for d in waiting:
            d.errback(CallEnded(reason))
        self.endpoint.call_ended(self)
        self._step(self._close)
        self._chain.addBoth(lambda _: self.ended.callback(reason))
        return self._chain

    def fail(self, why: str) -> None:
        log.warn("Call {call_id} with {remote} failed: {why}", call_id=self.call_id,
                 remote=self.remote, why=why)
        self.hangup("failed")

    def after(self, seconds: float, reason: str, unless: Callable[[], bool]) -> None:
        """Hang up with ``reason`` if ``unless()`` is still false ``seconds`` from now."""
        def expire() -> None:
            if self.live and not unless():
                self.hangup(reason)
        self._timers.append(self.endpoint.reactor.callLater(seconds, expire))

    def when_connected(self) -> Deferred:
        """Fires once ICE is connected; fails with CallEnded if the call ends first."""
        if self.state == IN_CALL:
            return succeed(self)
        if not self.live:
            return fail(CallEnded(self.end_reason))
        d: Deferred = Deferred()
        self._connected.append(d)
        return d

    # -- signalling in ----------------------------------------------------------

    def received(self, subtype: str, data: dict) -> None:
        if not self.live:
            return
        if subtype == HANGUP:
            self.end("cancelled" if self.state == RINGING else "remote-hangup")
        elif subtype == ACCEPT and self.direction == "out" and self.state == CALLING:
            self.state = CONNECTING
            self._accepted.callback(self)  # type: ignore[union-attr]
        elif subtype == REJECT and self.direction == "out" and self.state == CALLING:
            reason = data.get("reason") if isinstance(data.get("reason"), str) else "rejected"
            accepted = self._accepted
            self._accepted = None
            self.end(reason)
            accepted.errback(CallRejected(reason))  # type: ignore[union-attr]
        elif subtype in (OFFER, ANSWER) and self.state == CONNECTING and not self._described:
            kind, expected = ("offer", "in") if subtype == OFFER else ("answer", "out")
            if self.direction != expected:
                return
            sdp = data.get("sdp")
            if not _valid_sdp(sdp, kind):
                return self.fail(f"{subtype} without an SDP {kind}")
            self._described = True  # renegotiation is not supported: later ones are ignored
            self._step(self._answer if subtype == OFFER else self._set_remote, sdp)
        elif subtype == CANDIDATE:
            try:
                candidate = parse_candidate(data.get("candidate"))
            except ValueError as exc:
                log.info("Ignoring a candidate from {remote}: {error}", remote=self.remote,
                         error=exc)
                return
            self._step(self._add_candidate, candidate)

    # -- the peer connection (each step on the loop, in order) ------------------

    def _step(self, coroutine_function: Callable[..., Any], *args: Any) -> None:
        def run(_: Any) -> Deferred:
            return self.bridge.run(coroutine_function(*args))

        def failed(failure: Failure) -> None:
            if self.live:
                self.fail(f"{coroutine_function.__name__.strip('_')}: "
                          f"{failure.getErrorMessage() or failure.type.__name__}")
            else:
                log.debug("After the call ended: {f}", f=failure)
        self._chain = self._chain.addCallback(run).addErrback(failed)

    def _new_connection(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(self.endpoint.rtc_config)
        self.pc = pc
        self.bridge.connections.add(pc)

        @pc.on("iceconnectionstatechange")
        def ice_changed() -> None:
            self.bridge.to_reactor(self._ice_changed, pc.iceConnectionState)

        @pc.on("track")
        def track(track: Any) -> None:
            if track.kind == "video" and self.remote_video is None and self.direction == "out":
                self.remote_video = track
                waiters, self._track_waiters = self._track_waiters, []
                for future in waiters:
                    if not future.done():
                        future.set_result(track)
                return
            path = self.endpoint.recording_path(self)
            if path is not None and self._recorder is None:
                self._recorder = Recorder(path)  # started once the offer's tracks are known
                self.recording = path
            if self._recorder is not None and self._recorder.add_track(track):
                return
            # Media we do not use is still read, or its queue would grow.
            if self._blackhole is None:
                self._blackhole = MediaBlackhole()
            self._blackhole.addTrack(track)
            self.endpoint.bridge.loop.create_task(self._blackhole.start())
        return pc

    async def _answer(self, sdp: dict) -> None:
        pc = self._new_connection()
        await pc.setRemoteDescription(RTCSessionDescription(sdp["sdp"], "offer"))
        if self._recorder is not None:
            self._recorder.start()
        for track in self.endpoint.outgoing_tracks():
            self._tracks.append(track)
            pc.addTrack(track)
        await self._add_pending()
        await pc.setLocalDescription(await pc.createAnswer())
        answer = pc.localDescription
        self.bridge.to_reactor(self._send_description, ANSWER, answer.sdp)

    async def offer(self, kinds: tuple[str, ...] = ("video",)) -> None:
        """The caller's offer: receive-only transceivers for ``kinds``."""
        pc = self._new_connection()
        for kind in kinds:
            pc.addTransceiver(kind, direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        self.bridge.to_reactor(self._send_description, OFFER, pc.localDescription.sdp)

    def _send_description(self, subtype: str, sdp: str) -> None:
        if not self.live:
            return
        kind = "answer" if subtype == ANSWER else "offer"
        self.signal(subtype, sdp={"type": kind, "sdp": sdp})
        for candidate in local_candidates(sdp):
            self.signal(CANDIDATE, candidate=candidate)

    async def _set_remote(self, sdp: dict) -> None:
        await self.pc.setRemoteDescription(  # type: ignore[union-attr]
            RTCSessionDescription(sdp["sdp"], "answer"))
        await self._add_pending()

    async def _add_candidate(self, candidate: Any) -> None:
        if self.pc is not None and self.pc.remoteDescription is not None:
            await self.pc.addIceCandidate(candidate)
        else:
            self._pending.append(candidate)

    async def _add_pending(self) -> None:
        pending, self._pending = self._pending, []
        for candidate in pending:
            await self.pc.addIceCandidate(candidate)  # type: ignore[union-attr]

    async def _close(self) -> None:
        for track in self._tracks:
            track.stop()
        if self._blackhole is not None:
            await self._blackhole.stop()
        if self._recorder is not None:
            await self._recorder.stop()
        if self.pc is not None:
            await self.pc.close()
            self.bridge.connections.discard(self.pc)
        for future in self._track_waiters:
            future.cancel()

    async def next_video_frame(self) -> Any:
        """The next decoded frame the other side sends (outgoing calls); CallEnded after."""
        import asyncio

        from aiortc.mediastreams import MediaStreamError
        try:
            if self.remote_video is None:
                future = asyncio.get_running_loop().create_future()
                self._track_waiters.append(future)
                await future
            return await self.remote_video.recv()  # type: ignore[union-attr]
        except (MediaStreamError, asyncio.CancelledError):
            raise CallEnded(self.end_reason or "ended") from None

    def _ice_changed(self, state: str) -> None:
        self.ice_state = state
        if not self.live:
            return
        if state in ("connected", "completed") and self.state == CONNECTING:
            self.state = IN_CALL
            waiting, self._connected = self._connected, []
            for d in waiting:
                d.callback(self)
            self.endpoint.call_connected(self)
        elif state == "failed":
            self.fail("ICE failed")


def _valid_sdp(sdp: Any, kind: str) -> bool:
    return (isinstance(sdp, dict) and isinstance(sdp.get("sdp"), str)
            and sdp.get("type", kind) == kind)
