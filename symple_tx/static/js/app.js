// The demo page: login, roster with capabilities, room chat and a call panel.
//
// Every state people see is also a data attribute on <body>, for scripts and tests:
//   data-conn      idle | connecting | online | reconnecting | offline | error
//   data-call      idle | calling | ringing | connecting | in-call | ended
//   data-ice       the call's ICE connection state (new, checking, connected, ..., closed)
//   data-call-end  why the last call ended (hangup, remote-hangup, rejected, busy, ...)
//   data-call-peer "user|id" of the other side of the current call
//   data-call-mode call | watch (a receive-only call to a media peer's stream) | ""
//   data-mjpeg     the URL of the MJPEG stream shown, "" when none
//   data-peer-id   this page's session id once online
//   data-error     the last error message
// Query parameters fill in the login form; with `user` present the page connects
// at once: /?user=alice&name=Alice&room=demo&token=t0k

import {CallManager} from "./call.js";
import {SympleClient, defaultServerUrl, parseAddress} from "./symple.js";

const $ = (selector) => document.querySelector(selector);
const body = document.body;
const params = new URLSearchParams(window.location.search);

const CONN_TEXT = {
  idle: "Not connected", connecting: "Connecting…", online: "Online",
  reconnecting: "Reconnecting…", offline: "Offline", error: "Error",
};
const END_TEXT = {
  hangup: "you hung up", "remote-hangup": "they hung up", rejected: "declined",
  busy: "they are busy", cancelled: "they cancelled", "no-answer": "no answer",
  "peer-left": "they left", disconnected: "connection lost", failed: "connection failed",
};

const capabilities = {
  chat: true,
  call: typeof RTCPeerConnection === "function",
  video: Boolean(navigator.mediaDevices?.getUserMedia),
};

let client = null;
let calls = null;
let room = "demo";

// -- helpers ----------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "data") Object.assign(node.dataset, value);
    else node[key] = value;
  }
  node.append(...children);
  return node;
}

function showError(message) {
  body.dataset.error = message;
  const item = el("li", {textContent: message});
  $("#errors").append(item);
  setTimeout(() => item.remove(), 15000);
}

function displayName(address) {
  const {user, id} = parseAddress(address);
  return client?.roster.get(id)?.name || user || address;
}

// -- connection -------------------------------------------------------------

function start({user, name = "", token = "", roomName = "demo"}) {
  room = roomName;
  client = new SympleClient({
    url: params.get("server") || defaultServerUrl(),
    user, name, token, rooms: [room], data: {capabilities},
  });
  calls = new CallManager(client, {endedMs: Number(params.get("endedMs")) || 2000});
  client.addEventListener("state", (e) => onConnState(e.detail));
  client.addEventListener("welcome", onWelcome);
  client.addEventListener("roster", renderRoster);
  client.addEventListener("presence", onPresence);
  client.addEventListener("message", (e) => onMessage(e.detail));
  client.addEventListener("error", (e) => showError(e.detail.message));
  calls.addEventListener("state", (e) => onCallState(e.detail));
  calls.addEventListener("ice", (e) => { body.dataset.ice = e.detail.state; });
  calls.addEventListener("localstream", (e) => attach($("#local-video"), e.detail.stream));
  calls.addEventListener("remotestream", (e) => attach($("#remote-video"), e.detail.stream));
  calls.addEventListener("error", (e) => showError(`Call: ${e.detail.message}`));
  window.demo = {client, calls};  // handy in the browser console
  client.connect();
}

function onConnState({state, reason}) {
  body.dataset.conn = state;
  const detail = reason && state !== "online" ? ` (${reason})` : "";
  $("#conn-status").textContent = CONN_TEXT[state] + detail;
  $("#login").hidden = state !== "idle" && state !== "error";
  $("#app").hidden = !$("#login").hidden;
  renderRoster();
}

function onWelcome(e) {
  const {peer, rooms} = e.detail;
  body.dataset.peerId = peer.id;
  $("#me").textContent = `You are ${peer.name} (${peer.user})`;
  $("#room-name").textContent = room;
  document.title = `${peer.name} · symple_tx demo`;
  // With authentication on, the server decides the rooms: join ours if it is not among them.
  if (!(rooms || []).includes(room)) client.join(room);
}

function onPresence(e) {
  const {peer, online, changed, frame} = e.detail;
  if (!frame || !changed) return;
  systemLine(`${peer.name || peer.user} ${online ? "is online" : "left"}`, peer.id, online);
}

// -- roster -----------------------------------------------------------------

/** Roster entries by session id, updated in place so a button never vanishes under a click. */
const rosterItems = new Map();

function rosterItem(peer) {
  let item = rosterItems.get(peer.id);
  if (!item) {
    item = {
      name: el("span", {className: "name"}),
      user: el("span", {className: "user"}),
      caps: el("span", {className: "caps"}),
      call: el("button", {type: "button", textContent: "Call", data: {action: "call"}}),
      watch: el("button", {type: "button", textContent: "Watch", data: {action: "watch"},
                           hidden: true}),
      mjpeg: el("button", {type: "button", textContent: "MJPEG", data: {action: "mjpeg"},
                           hidden: true}),
    };
    const actions = el("span", {className: "actions"}, item.watch, item.mjpeg, item.call);
    item.li = el("li", {data: {peerId: peer.id}}, item.name, item.user, item.caps, actions);
    item.call.addEventListener("click", () => startCall(item.address));
    item.watch.addEventListener("click", () => startCall(item.address, {receiveOnly: true}));
    item.mjpeg.addEventListener("click", () => showMjpeg(item.mjpegUrl, item.name.textContent));
    rosterItems.set(peer.id, item);
  }
  const caps = peer.capabilities && typeof peer.capabilities === "object" ? peer.capabilities : {};
  const names = Object.keys(caps).filter((key) => caps[key]).sort();
  item.address = `${peer.user}|${peer.id}`;
  item.li.dataset.user = peer.user;
  item.name.textContent = peer.name || peer.user;
  item.user.textContent = `@${peer.user}`;
  if (item.caps.dataset.list !== names.join(" ")) {
    item.caps.dataset.list = names.join(" ");
    item.caps.replaceChildren(
      ...names.map((key) => el("span", {className: "cap", textContent: key, data: {cap: key}})));
  }
  item.callable = Boolean(caps.call);
  // A media peer (symple stream) offers its stream: watch it receive-only, or as MJPEG.
  item.streams = Boolean(caps.stream);
  item.mjpegUrl = typeof caps.mjpeg === "string" && /^https?:\/\//.test(caps.mjpeg)
    ? caps.mjpeg : "";
  item.watch.hidden = !item.streams;
  item.mjpeg.hidden = !item.mjpegUrl;
  item.call.hidden = item.streams && !item.callable;
  return item;
}

function renderRoster() {
  const peers = client ? [...client.roster.values()] : [];
  peers.sort((a, b) => String(a.name).localeCompare(String(b.name)) || a.id.localeCompare(b.id));
  const idle = Boolean(calls && !calls.busy && client.online);
  const items = peers.map(rosterItem);
  const live = new Set(peers.map((peer) => peer.id));
  for (const id of rosterItems.keys()) if (!live.has(id)) rosterItems.delete(id);
  for (const item of items) {
    item.call.disabled = !idle || !item.callable;
    item.watch.disabled = !idle;
  }
  const list = $("#roster");
  const order = items.map((item) => item.li);
  if (order.length !== list.children.length || order.some((li, i) => list.children[i] !== li)) {
    list.replaceChildren(...order);
  }
  $("#roster-count").textContent = String(peers.length);
  $("#roster-empty").hidden = peers.length > 0;
}

// -- chat -------------------------------------------------------------------

function append(item) {
  const list = $("#messages");
  list.append(item);
  list.scrollTop = list.scrollHeight;
}

function systemLine(text, peerId, online) {
  append(el("li", {textContent: text, data: {kind: "system", peerId, online: String(online)}}));
}

function chatLine(from, name, text, own) {
  const data = {kind: "chat", from};
  if (own) data.own = "";
  append(el("li", {data}, el("span", {className: "from", textContent: name}),
            el("span", {className: "text", textContent: text})));
}

function onMessage(frame) {
  if (frame.subtype !== "chat") return;
  const text = frame.data && typeof frame.data.text === "string" ? frame.data.text : "";
  if (text) chatLine(frame.from, displayName(frame.from), text, false);
}

function sendChat(event) {
  event.preventDefault();
  const input = $("#chat-input");
  const text = input.value.trim();
  if (!text || !client?.online) return;
  try {
    client.sendMessage(room, "chat", {text}, {room});
  } catch (err) {
    showError(`Not sent: ${err.message}`);
    return;
  }
  chatLine(client.address, "You", text, true);
  input.value = "";
}

// -- calls ------------------------------------------------------------------

function attach(video, stream) {
  video.srcObject = stream;
  if (!stream) return;
  video.play().catch(() => {
    // Autoplay with sound refused: play muted and offer an unmute button.
    video.muted = true;
    video.play().catch((err) => showError(`Video: ${err.message}`));
    if (video.id === "remote-video") $("#unmute").hidden = false;
  });
}

function startCall(address, options = {}) {
  try {
    calls.call(address, options);
  } catch (err) {
    showError(`Call: ${err.message}`);
  }
}

/** Show a media peer's MJPEG stream (an <img>: the browser plays multipart JPEG itself). */
function showMjpeg(url, name) {
  body.dataset.mjpeg = url || "";
  $("#mjpeg-figure").hidden = !url;
  $("#mjpeg-caption").textContent = url ? `MJPEG from ${name}` : "";
  if (url) $("#mjpeg-view").src = url;
  else $("#mjpeg-view").removeAttribute("src");  // closes the HTTP stream
}

function onCallState({state, reason, remote}) {
  body.dataset.call = state;
  body.dataset.callPeer = remote || "";
  const watching = calls.receiveOnly && state !== "idle";
  body.dataset.callMode = state === "idle" ? "" : watching ? "watch" : "call";
  if (state === "ended") body.dataset.callEnd = reason;
  const who = remote ? displayName(remote) : "";
  const text = {
    idle: "No call",
    calling: watching ? `Asking ${who} for its stream…` : `Ringing ${who}…`,
    ringing: `${who} is calling you`,
    connecting: `Connecting to ${who}…`,
    "in-call": watching ? `Watching ${who}` : `In call with ${who}`,
    ended: `${watching ? "Stream" : "Call"} ended: ${END_TEXT[reason] || reason}`,
  }[state];
  $("#call-status").textContent = text;
  $("#accept").hidden = $("#reject").hidden = state !== "ringing";
  $("#hangup").hidden = !["calling", "connecting", "in-call"].includes(state);
  if (state === "ended" || state === "idle") {
    $("#unmute").hidden = true;
    for (const video of document.querySelectorAll("video")) video.srcObject = null;
    $("#remote-video").muted = false;
  }
  renderRoster();
}

// -- wiring -----------------------------------------------------------------

$("#login").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const user = String(form.get("user")).trim();
  if (!user) return;
  const roomName = String(form.get("room")).trim() || "demo";
  start({user, token: String(form.get("token")), roomName});
});
$("#chat-form").addEventListener("submit", sendChat);
$("#accept").addEventListener("click", () => calls.accept());
$("#reject").addEventListener("click", () => calls.reject());
$("#hangup").addEventListener("click", () => calls.hangup());
$("#mjpeg-close").addEventListener("click", () => showMjpeg(""));
$("#unmute").addEventListener("click", () => {
  $("#remote-video").muted = false;
  $("#unmute").hidden = true;
});
window.addEventListener("pagehide", () => {
  if (calls?.busy) calls.hangup();
  client?.close();
});
// Back from the back/forward cache the connection is gone: start afresh.
window.addEventListener("pageshow", (event) => {
  if (event.persisted) window.location.reload();
});

for (const key of ["user", "room", "token"]) {
  if (params.has(key)) $(`#login [name=${key}]`).value = params.get(key);
}
if (params.get("user")) {
  start({user: params.get("user"), name: params.get("name") || "", token: params.get("token") || "",
         roomName: params.get("room") || "demo"});
}
