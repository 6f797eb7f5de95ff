// The sync client: the protocol state machine of docs/protocol.md §3, with no DOM.
// DocState is the pure part (engine/ot/client.py's ClientDoc); SyncClient owns the socket,
// resumes after a drop with `since` and `client`, and reports a connection state.

import { applyOp, notebookFromDoc, transformOp } from "./ot.js";

/** The replica plus our ops not yet acknowledged: one in flight, the rest pending. */
export class DocState {
  constructor(doc, version, client) {
    this.nb = notebookFromDoc(doc);
    this.version = version;
    this.client = client;
    this.seq = 0;
    this.inflight = null; // [seq, op]: never changes once sent, except by transform
    this.pending = [];
  }

  get settled() {
    return this.inflight === null && this.pending.length === 0;
  }

  /** Apply a local edit now; returns the message to send, or null while one is in flight. */
  edit(op) {
    applyOp(this.nb, op);
    this.seq += 1;
    this.pending.push([this.seq, op]);
    return this.nextToSend();
  }

  /** Promote the oldest pending op when nothing is in flight; returns the `op` message or null. */
  nextToSend() {
    if (this.inflight !== null || this.pending.length === 0) return null;
    this.inflight = this.pending.shift();
    return this.inflightMessage();
  }

  inflightMessage() {
    return { type: "op", seq: this.inflight[0], base: this.version, op: this.inflight[1] };
  }

  /**
   * Apply one committed entry. Returns {ack, op, touched, before}: `op` is what changed the
   * replica, `before` the sources of the cells its text components edit, as they were before it.
   */
  receive(entry) {
    if (entry.v !== this.version + 1) throw new Error(`expected version ${this.version + 1}, got ${entry.v}`);
    this.version = entry.v;
    if (this.inflight !== null && entry.client === this.client && entry.seq === this.inflight[0]) {
      this.inflight = null;
      return { ack: true, op: [], touched: new Set(), before: new Map() };
    }
    let op = entry.op;
    const mine = (this.inflight !== null ? [this.inflight] : []).concat(this.pending);
    const transformed = [];
    for (const [seq, own] of mine) {
      const op2 = transformOp(op, own, true);
      transformed.push([seq, transformOp(own, op, false)]);
      op = op2;
    }
    if (this.inflight !== null) {
      this.inflight = transformed[0];
      this.pending = transformed.slice(1);
    } else {
      this.pending = transformed;
    }
    const before = new Map();
    for (const c of op) if (c.t === "text" && !before.has(c.id)) before.set(c.id, this.nb.cells.get(c.id)?.source);
    const touched = applyOp(this.nb, op);
    return { ack: false, op, touched, before };
  }

  /** An `ack` frame (a resubmitted op that was already committed). */
  ack(seq) {
    if (this.inflight !== null && this.inflight[0] === seq) {
      this.inflight = null;
      return true;
    }
    return false;
  }
}

/** Claims of a token (`v1.<payload>.<sig>`): {e, n, r, u} or null. Not verified: the server does that. */
export function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bin = atob(part + "===".slice((part.length + 3) % 4));
    const bytes = Uint8Array.from(bin, (ch) => ch.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

const FINAL_CLOSES = new Set([4401, 4403, 4404]);
const PING_EVERY = 20000; // ms; the server answers every ping with a pong
const DEAD_AFTER = 45000; // ms without any frame: the connection is gone even if the socket says open

/**
 * The connection: `opts.url(since, client)` builds the WebSocket URL; `opts.WebSocket` is the
 * constructor (the browser's, or a test double). Callbacks: onState(state, detail),
 * onSnapshot(docState), onRemote(op, touched), onSettled(), onPresence(frame), onKernel(frame),
 * onInputRequest(frame), onError(frame).
 * States: connecting, connected, read-only, reconnecting, offline.
 */
export class SyncClient {
  constructor(opts) {
    this.opts = opts;
    this.state = "connecting";
    this.doc = null;
    this.role = null;
    this.user = null;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.pingTimer = null;
    this.stopped = false;
    this.cursorToSend = undefined;
  }

  setState(state, detail) {
    this.state = state;
    this.opts.onState?.(state, detail);
  }

  connect() {
    if (this.stopped) return;
    const resume = this.doc !== null;
    const url = this.opts.url(resume ? this.doc.version : null, resume ? this.doc.client : null);
    let ws;
    try {
      ws = new this.opts.WebSocket(url);
    } catch (e) {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.lastFrameAt = Date.now();
    ws.onmessage = (ev) => {
      this.lastFrameAt = Date.now();
      this.onFrame(JSON.parse(ev.data));
    };
    ws.onclose = (ev) => this.onClose(ev.code, ev.reason);
    ws.onerror = () => {};
  }

  send(msg) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(msg));
  }

  onFrame(f) {
    switch (f.type) {
      case "welcome":
        return this.onWelcome(f);
      case "ops":
        for (const e of f.ops) this.applyEntry(e);
        return this.flush();
      case "ack":
        if (this.doc?.ack(f.seq)) this.flush();
        return;
      case "reject":
        // Our op was refused; nothing changed on the server. Start over from a snapshot.
        this.opts.onError?.({ code: f.error?.code || "rejected", message: f.error?.message || "" });
        this.doc = null;
        this.ws?.close(1000);
        return;
      case "presence":
        return this.opts.onPresence?.(f);
      case "kernel":
        return this.opts.onKernel?.(f);
      case "input_request":
        return this.opts.onInputRequest?.(f);
      case "error":
        this.lastError = f;
        return this.opts.onError?.(f);
      default:
        return;
    }
  }

  onWelcome(f) {
    if (typeof performance !== "undefined" && !performance.getEntriesByName("agora:welcome").length) {
      performance.mark("agora:welcome");
    }
    this.attempt = 0;
    this.role = f.role;
    this.user = f.user;
    if (f.notebook) {
      // A snapshot: any unacknowledged local edit cannot be placed any more; drop it, and take a
      // fresh client id next time so our seq numbering starts clean.
      const old = this.doc;
      if (old !== null && !old.settled) {
        this.opts.onError?.({ code: "edits_lost", message: "Reconnected from a snapshot; unsent edits were dropped." });
        this.doc = null;
        this.ws?.close(1000);
        return;
      }
      this.doc = new DocState(f.notebook, f.version, f.client);
      if (old !== null && old.client === f.client) this.doc.seq = old.seq;
      this.opts.onSnapshot?.(this.doc);
    } else {
      for (const e of f.ops) this.applyEntry(e);
      if (this.doc.inflight !== null) this.send(this.doc.inflightMessage());
    }
    this.setState(f.role === "viewer" ? "read-only" : "connected");
    this.flush();
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastFrameAt > DEAD_AFTER) this.abandon(1006);
      else this.send({ type: "ping" });
    }, PING_EVERY);
    if (this.cursorToSend !== undefined) this.sendPresence(this.cursorToSend);
  }

  applyEntry(e) {
    const r = this.doc.receive(e);
    if (!r.ack && r.op.length) this.opts.onRemote?.(r.op, r.touched, r.before);
  }

  flush() {
    if (!this.doc) return;
    const msg = this.doc.nextToSend();
    if (msg) this.send(msg);
    else if (this.doc.settled) this.opts.onSettled?.();
  }

  /** A local edit (already shown by the editor): applied to the replica and queued. */
  edit(op) {
    if (!this.doc || this.role !== "editor") return false;
    const msg = this.doc.edit(op);
    if (msg) this.send(msg);
    return true;
  }

  sendPresence(cursor) {
    this.cursorToSend = cursor;
    if (this.role === "editor") this.send({ type: "presence", cursor });
  }

  execute(cells) {
    this.send({ type: "execute", cells });
  }

  interrupt() {
    this.send({ type: "interrupt" });
  }

  inputReply(value) {
    this.send({ type: "input_reply", value });
  }

  onClose(code) {
    clearInterval(this.pingTimer);
    this.ws = null;
    if (this.stopped) return;
    this.lastClose = FINAL_CLOSES.has(code) ? "final" : "transient";
    if (FINAL_CLOSES.has(code)) {
      const err = this.lastError;
      if (code === 4401 && this.opts.onTokenExpired?.()) {
        this.lastClose = "transient";
        // The page asked its parent for a fresh token; try again with it.
        this.scheduleReconnect();
        return;
      }
      this.setState("offline", err ? `${err.code}: ${err.message}` : `closed (${code})`);
      return;
    }
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    if (typeof navigator !== "undefined" && navigator.onLine === false) {
      // No network: wait for the browser's "online" event (see networkBack) instead of retrying.
      this.setState("offline", "no network connection");
      return;
    }
    this.setState("reconnecting");
    const delay = Math.min(5000, 100 * 2 ** this.attempt) * (0.75 + Math.random() * 0.5);
    this.attempt = Math.min(this.attempt + 1, 10);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Forget the socket without waiting for a closing handshake that may never come. */
  abandon(code) {
    const ws = this.ws;
    if (!ws) return;
    ws.onclose = null;
    ws.onmessage = null;
    try {
      ws.close(1000);
    } catch {}
    this.onClose(code);
  }

  /** The browser lost the network: say so now and stop retrying until it is back. */
  networkLost() {
    if (this.stopped || this.lastClose === "final") return;
    clearTimeout(this.timer);
    if (this.ws) this.abandon(1006); // reaches scheduleReconnect, which sees navigator.onLine
    else this.setState("offline", "no network connection");
  }

  /** The browser is online again: reconnect (and resume) now if we were waiting for it. */
  networkBack() {
    if (this.ws === null && !this.stopped && this.state === "offline" && this.lastClose !== "final") {
      this.attempt = 0;
      this.connect();
    }
  }

  /** Drop the socket now (tests, or a token swap); it reconnects and resumes. */
  drop() {
    this.ws?.close(1000);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.pingTimer);
    this.ws?.close(1000);
  }
}
