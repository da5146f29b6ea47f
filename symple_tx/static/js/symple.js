// A compact Symple v4 client for browsers: connect, auth, reconnect, roster,
// send, join/leave and presence-probe replies.  No dependencies.
//
//   const client = new SympleClient({url: "ws://localhost:4500/", user: "alice",
//                                    rooms: ["demo"], data: {capabilities: {chat: true}}});
//   client.addEventListener("message", (e) => console.log(e.detail));
//   client.connect();
//
// Events (CustomEvent, payload in `detail`):
//   state    {state, previous, reason}   idle | connecting | online | reconnecting |
//                                        offline | error
//   welcome  the welcome frame
//   presence {peer, online, changed, frame}  a roster change (never about this client itself)
//   roster   {roster}                    after every roster change
//   message / command / event            the routed frame
//   error    {status, message, frame}    an error frame or a transport failure

/** Close codes after which reconnecting cannot help (auth refused). */
const FATAL_CLOSE_CODES = new Set([4400, 4401, 4403]);
const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 10000;

/** A random frame id, as symple-client puts on every frame it sends. */
export function randomId(length = 12) {
  const bytes = crypto.getRandomValues(new Uint8Array(length));
  return Array.from(bytes, (b) => "abcdefghijklmnopqrstuvwxyz0123456789"[b % 36]).join("");
}

/** Split "user|id" into {user, id}; a bare string is taken as a user (room). */
export function parseAddress(address) {
  const text = String(address || "");
  const bar = text.indexOf("|");
  return bar < 0 ? {user: text, id: ""} : {user: text.slice(0, bar), id: text.slice(bar + 1)};
}

/** The default server: the WebSocket at "/" of the page's own origin. */
export function defaultServerUrl(loc = window.location) {
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/`;
}

export class SympleClient extends EventTarget {
  constructor({url = defaultServerUrl(), user, name = "", token = "", rooms = [], data = {},
               reconnect = true} = {}) {
    super();
    if (!user) throw new Error("SympleClient needs a user name");
    this.options = {url, user, name, token, rooms, data, reconnect};
    this.state = "idle";
    this.peer = null;          // our peer object from welcome
    this.rooms = [];           // rooms the server says we are in
    this.roster = new Map();   // session id -> peer object
    this.ws = null;
    this._wasOnline = false;
    this._closing = false;
    this._retries = 0;
    this._retryTimer = null;
  }

  get address() {
    return this.peer ? `${this.peer.user}|${this.peer.id}` : null;
  }

  get online() {
    return this.state === "online";
  }

  // -- connection ---------------------------------------------------------

  connect() {
    this._closing = false;
    clearTimeout(this._retryTimer);
    this._setState(this._wasOnline ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new WebSocket(this.options.url);
    } catch (err) {
      this._fail(0, `Cannot open ${this.options.url}: ${err.message}`);
      return;
    }
    this.ws = ws;
    ws.onopen = () => this._sendRaw(this._authFrame());
    ws.onmessage = (event) => this._receive(event.data);
    ws.onerror = () => {};  // onclose follows with the code; report it there
    ws.onclose = (event) => this._closed(ws, event);
  }

  /** Leave for good: say goodbye, close the socket, stop reconnecting. */
  close() {
    this._closing = true;
    clearTimeout(this._retryTimer);
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this._sendRaw({type: "close"});
      this.ws.close(1000, "bye");
    }
    this._dropRoster();
    this._setState("offline", "closed");
  }

  _authFrame() {
    const {user, name, token, rooms, data} = this.options;
    const frame = {type: "auth", user, name, token};
    if (rooms.length) frame.rooms = rooms;
    if (Object.keys(data).length) frame.data = data;
    return frame;
  }

  _closed(ws, event) {
    if (ws !== this.ws) return;  // a socket we already gave up on
    this.ws = null;
    this.peer = null;
    this._dropRoster();
    if (this._closing) return;
    const fatal = FATAL_CLOSE_CODES.has(event.code);
    if (this._wasOnline && this.options.reconnect && !fatal) {
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** this._retries++);
      this._setState("reconnecting", `connection lost (${event.code}); retrying in ${delay} ms`);
      this._retryTimer = setTimeout(() => this.connect(), delay);
    } else if (this.state !== "error") {
      this._fail(event.code, event.reason || `connection closed (${event.code})`);
    }
  }

  _fail(status, message, frame = null) {
    this.dispatchEvent(new CustomEvent("error", {detail: {status, message, frame}}));
    this._setState("error", message);
  }

  _setState(state, reason = "") {
    if (state === this.state && !reason) return;
    const previous = this.state;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", {detail: {state, previous, reason}}));
  }

  // -- sending ------------------------------------------------------------

  /** Send a routed frame; `from` and a random `id` are filled in like symple-client does. */
  send(frame) {
    if (!this.online) throw new Error(`not online (${this.state})`);
    const full = {id: randomId(), ...frame, from: this.address};
    this._sendRaw(full);
    return full;
  }

  sendMessage(to, subtype, data = {}, extra = {}) {
    return this.send({type: "message", to, subtype, data, ...extra});
  }

  sendPresence(extra = {}) {
    return this.send({type: "presence", data: this._presenceData(), ...extra});
  }

  join(room) {
    this._sendRaw({type: "join", room, id: randomId()});
  }

  leave(room) {
    this._sendRaw({type: "leave", room, id: randomId()});
  }

  _sendRaw(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  _presenceData() {
    // Only who we are: the welcome's `host` (our address) is nobody else's business.
    const {id, user, name} = this.peer || {};
    return {...this.options.data, id, user, name, rooms: this.rooms, online: true};
  }

  // -- receiving ----------------------------------------------------------

  _receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (err) {
      this._fail(0, `The server sent invalid JSON: ${err.message}`);
      return;
    }
    const handler = this[`_on_${frame.type}`];
    if (handler) handler.call(this, frame);
  }

  _on_welcome(frame) {
    this.peer = frame.peer;
    this.rooms = frame.rooms || [];
    this._wasOnline = true;
    this._retries = 0;
    this._setState("online");
    this.dispatchEvent(new CustomEvent("welcome", {detail: frame}));
    // Ask everyone we see who they are, and tell them who we are.
    this.sendPresence({probe: true});
  }

  _on_error(frame) {
    const detail = {status: frame.status, message: frame.message, frame};
    if (this.state === "online") {
      this.dispatchEvent(new CustomEvent("error", {detail}));
    } else {
      this._fail(frame.status, frame.message, frame);  // auth refused: the server closes next
    }
  }

  _on_presence(frame) {
    const data = frame.data || {};
    if (frame.probe && data.id !== this.peer?.id) {
      // Answer the prober directly, by bare session id (what symple-client does).
      const prober = data.id || parseAddress(frame.from).id;
      if (prober) this.sendPresence({to: prober});
    }
    if (!data.id || !data.user || data.id === this.peer?.id) return;
    const online = data.online !== false;
    const known = this.roster.has(data.id);
    if (online) {
      this.roster.set(data.id, data);
    } else if (!this.roster.delete(data.id)) {
      return;
    }
    // `changed`: the peer came or went (not just an update of a known peer's data).
    const changed = online !== known;
    this.dispatchEvent(new CustomEvent("presence", {detail: {peer: data, online, changed, frame}}));
    this._rosterChanged();
  }

  _on_message(frame) {
    this.dispatchEvent(new CustomEvent("message", {detail: frame}));
  }

  _on_command(frame) {
    this.dispatchEvent(new CustomEvent("command", {detail: frame}));
  }

  _on_event(frame) {
    this.dispatchEvent(new CustomEvent("event", {detail: frame}));
  }

  _on_join_ok(frame) {
    if (!this.rooms.includes(frame.room)) this.rooms.push(frame.room);
  }

  _on_leave_ok(frame) {
    this.rooms = this.rooms.filter((room) => room !== frame.room);
  }

  _dropRoster() {
    if (!this.roster.size) return;
    const peers = [...this.roster.values()];
    this.roster.clear();
    for (const peer of peers) {
      this.dispatchEvent(new CustomEvent("presence", {
        detail: {peer, online: false, changed: true, frame: null}}));
    }
    this._rosterChanged();
  }

  _rosterChanged() {
    this.dispatchEvent(new CustomEvent("roster", {detail: {roster: this.roster}}));
  }
}

// "join:ok" / "leave:ok" cannot be method names as they are; map them.
SympleClient.prototype["_on_join:ok"] = SympleClient.prototype._on_join_ok;
SympleClient.prototype["_on_leave:ok"] = SympleClient.prototype._on_leave_ok;
