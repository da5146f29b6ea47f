// One-to-one WebRTC calls over Symple signalling.
//
// Every signalling frame is a Symple message addressed "user|id" with a
// `subtype` of call:init, call:accept, call:reject, call:offer, call:answer,
// call:candidate or call:hangup, and `data.callId` naming the call, so late
// frames of an earlier call are ignored.  The caller makes the offer after
// the callee accepts; ICE candidates trickle both ways and are buffered until
// the remote description is set.  A peer already in a call answers call:init
// with call:reject {reason: "busy"}.  A caller that only wants to receive
// (watching a media peer's stream) says so with call:init {receiveOnly: true}:
// it starts no camera and offers receive-only audio and video.
//
// States: idle -> calling (we ring them) | ringing (they ring us) ->
//         connecting -> in-call -> ended -> idle.
// Events (CustomEvent `detail`): state {state, previous, reason, remote},
// ice {state}, localstream {stream}, remotestream {stream}, error {message}.

import {parseAddress, randomId} from "./symple.js";

export const CALL_SUBTYPES = Object.freeze([
  "call:init", "call:accept", "call:reject", "call:offer", "call:answer",
  "call:candidate", "call:hangup",
]);

/** States in which a new call:init is answered "busy". */
const BUSY_STATES = new Set(["calling", "ringing", "connecting", "in-call"]);

export class CallManager extends EventTarget {
  constructor(client, {rtcConfig = {iceServers: []}, media = {video: true, audio: true},
                       ringTimeoutMs = 30000, endedMs = 2000} = {}) {
    super();
    this.client = client;
    this.options = {rtcConfig, media, ringTimeoutMs, endedMs};
    this.state = "idle";
    this.endReason = "";
    this.iceState = "new";
    this._reset();
    client.addEventListener("message", (e) => this._onMessage(e.detail));
    client.addEventListener("presence", (e) => {
      if (!e.detail.online && this.remote && parseAddress(this.remote).id === e.detail.peer.id) {
        this._end("peer-left");
      }
    });
    client.addEventListener("state", (e) => {
      if (e.detail.state !== "online" && BUSY_STATES.has(this.state)) this._end("disconnected");
    });
  }

  _reset() {
    this.remote = null;        // "user|id" of the other side
    this.callId = null;
    this.direction = null;     // "out" | "in"
    this.receiveOnly = false;  // an outgoing call that sends no media (watching a stream)
    this.pc = null;
    this.localStream = null;
    this.remoteStream = null;
    this._pending = [];        // remote candidates that arrived before the remote description
    this._chain = Promise.resolve();
    clearTimeout(this._ringTimer);
    clearTimeout(this._idleTimer);
  }

  get busy() {
    return BUSY_STATES.has(this.state);
  }

  /** Whether `callId` is still the live call (async steps check this after each await). */
  _current(callId) {
    return callId === this.callId && this.busy;
  }

  // -- actions ------------------------------------------------------------

  /** Ring `address` ("user|id"); `receiveOnly` watches it without sending our camera. */
  call(address, {receiveOnly = false} = {}) {
    if (this.busy) throw new Error(`already ${this.state}`);
    if (!parseAddress(address).id) throw new Error(`calls need "user|id", not ${address}`);
    this._reset();
    Object.assign(this, {remote: address, callId: randomId(), direction: "out", receiveOnly});
    this._setState("calling");
    this._signal("call:init", receiveOnly ? {receiveOnly: true} : {});
    this._ringTimer = setTimeout(() => this.hangup("no-answer"), this.options.ringTimeoutMs);
  }

  /** Take the ringing call: camera on, then tell the caller to send its offer. */
  async accept() {
    if (this.state !== "ringing") return;
    const callId = this.callId;
    clearTimeout(this._ringTimer);
    this._setState("connecting");
    await this._startMedia(callId);
    if (!this._current(callId)) return;  // hung up while the camera started
    this._createPeerConnection();
    this._signal("call:accept");
  }

  reject(reason = "rejected") {
    if (this.state !== "ringing") return;
    this._signal("call:reject", {reason});
    this._end(reason);
  }

  /** End the call from this side (also cancels an outgoing or refuses an incoming ring). */
  hangup(reason = "hangup") {
    if (this.state === "ringing") return this.reject();
    if (!this.busy) return;
    this._signal("call:hangup", {reason});
    this._end(reason);
  }

  // -- signalling in ------------------------------------------------------

  _onMessage(frame) {
    if (typeof frame.subtype !== "string" || !CALL_SUBTYPES.includes(frame.subtype)) return;
    const data = frame.data && typeof frame.data === "object" ? frame.data : {};
    if (frame.subtype === "call:init") return this._onInit(frame.from, data);
    if (frame.from !== this.remote || data.callId !== this.callId) return;  // not this call
    // Handle one frame at a time, so a candidate never overtakes its offer.
    const callId = this.callId;
    this._chain = this._chain
      .then(() => (this._current(callId) ? this._dispatch(frame.subtype, data) : null))
      .catch((err) => this._fail(`${frame.subtype}: ${err.message || err}`));
  }

  _onInit(from, data) {
    if (typeof from !== "string" || !parseAddress(from).id) return;
    if (this.busy) {
      if (!(from === this.remote && data.callId === this.callId)) {
        this.client.sendMessage(from, "call:reject", {callId: data.callId, reason: "busy"});
      }
      return;
    }
    this._reset();
    Object.assign(this, {remote: from, callId: data.callId || randomId(), direction: "in"});
    this._setState("ringing");
    this._ringTimer = setTimeout(() => this.reject("no-answer"), this.options.ringTimeoutMs);
  }

  async _dispatch(subtype, data) {
    switch (subtype) {
      case "call:accept":
        if (this.state === "calling") await this._sendOffer();
        break;
      case "call:reject":
        if (this.state === "calling") {
          this._end(["busy", "no-answer"].includes(data.reason) ? data.reason : "rejected");
        }
        break;
      case "call:offer":
        if (this.direction === "in" && this.pc) await this._answer(data.sdp);
        break;
      case "call:answer":
        if (this.direction === "out" && this.pc) await this._setRemote(data.sdp);
        break;
      case "call:candidate":
        await this._addCandidate(data.candidate);
        break;
      case "call:hangup":
        this._end(this.state === "ringing" ? "cancelled" : "remote-hangup");
        break;
    }
  }

  // -- WebRTC -------------------------------------------------------------

  async _sendOffer() {
    clearTimeout(this._ringTimer);
    const callId = this.callId;
    this._setState("connecting");
    if (!this.receiveOnly) await this._startMedia(callId);
    if (!this._current(callId)) return;
    const pc = this._createPeerConnection();
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    this._signal("call:offer", {sdp: {type: offer.type, sdp: offer.sdp}});
  }

  async _answer(sdp) {
    await this._setRemote(sdp);
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    this._signal("call:answer", {sdp: {type: answer.type, sdp: answer.sdp}});
  }

  async _setRemote(sdp) {
    if (!sdp || typeof sdp.sdp !== "string") throw new Error("no SDP in the frame");
    await this.pc.setRemoteDescription(sdp);
    const pending = this._pending.splice(0);
    for (const candidate of pending) await this.pc.addIceCandidate(candidate);
  }

  async _addCandidate(candidate) {
    if (!candidate || typeof candidate !== "object") return;
    if (this.pc && this.pc.remoteDescription) {
      await this.pc.addIceCandidate(candidate);
    } else {
      this._pending.push(candidate);
    }
  }

  _createPeerConnection() {
    const pc = new RTCPeerConnection(this.options.rtcConfig);
    this.pc = pc;
    pc.onicecandidate = (event) => {
      if (event.candidate && pc === this.pc) {
        this._signal("call:candidate", {candidate: event.candidate.toJSON()});
      }
    };
    pc.ontrack = (event) => {
      if (pc !== this.pc) return;
      const stream = event.streams[0] || this.remoteStream || new MediaStream();
      if (!event.streams[0]) stream.addTrack(event.track);
      if (stream !== this.remoteStream) {
        this.remoteStream = stream;
        this._emit("remotestream", {stream});
      }
    };
    pc.oniceconnectionstatechange = () => {
      if (pc !== this.pc) return;
      this._setIce(pc.iceConnectionState);
      const connected = ["connected", "completed"].includes(pc.iceConnectionState);
      if (connected && this.state === "connecting") {
        this._setState("in-call");
      } else if (pc.iceConnectionState === "failed") {
        this.hangup("failed");
      }
    };
    if (this.localStream) {
      for (const track of this.localStream.getTracks()) pc.addTrack(track, this.localStream);
    } else {
      // No camera or microphone here: still receive the other side's.
      pc.addTransceiver("audio", {direction: "recvonly"});
      pc.addTransceiver("video", {direction: "recvonly"});
    }
    return pc;
  }

  async _startMedia(callId) {
    if (!navigator.mediaDevices?.getUserMedia) {
      this._emit("error", {message: "This browser cannot capture media; receiving only."});
      return;
    }
    const {media} = this.options;
    let lastError = null;
    for (const constraints of [media, {video: true}, {audio: true}]) {
      try {
        const stream = await navigator.mediaDevices.getUserMedia(constraints);
        if (!this._current(callId)) {  // the call ended while the camera started
          stream.getTracks().forEach((track) => track.stop());
          return;
        }
        this.localStream = stream;
        this._emit("localstream", {stream});
        return;
      } catch (err) {
        lastError = err;
      }
    }
    this._emit("error", {message: `No camera or microphone (${lastError?.name}); receiving only.`});
  }

  // -- plumbing -----------------------------------------------------------

  _signal(subtype, data = {}) {
    try {
      this.client.sendMessage(this.remote, subtype, {callId: this.callId, ...data});
    } catch (err) {
      this._fail(`cannot send ${subtype}: ${err.message}`);
    }
  }

  _fail(message) {
    this._emit("error", {message});
    if (this.busy) {
      this._signal("call:hangup", {reason: "failed"});
      this._end("failed");
    }
  }

  _end(reason) {
    if (!this.busy) return;
    const {pc, localStream, callId} = this;
    if (pc) pc.close();
    if (localStream) localStream.getTracks().forEach((track) => track.stop());
    const {remote, receiveOnly} = this;
    this._reset();
    this.callId = callId;  // keep naming the ended call until idle
    this.remote = remote;
    this.receiveOnly = receiveOnly;
    this.endReason = reason;
    this._setIce("closed");
    this._setState("ended", reason);
    this._idleTimer = setTimeout(() => {
      this.callId = null;
      this.remote = null;
      this._setIce("new");
      this._setState("idle");
    }, this.options.endedMs);
  }

  _setIce(state) {
    if (state === this.iceState) return;
    this.iceState = state;
    this._emit("ice", {state});
  }

  _setState(state, reason = "") {
    const previous = this.state;
    this.state = state;
    this._emit("state", {state, previous, reason, remote: this.remote});
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, {detail}));
  }
}
