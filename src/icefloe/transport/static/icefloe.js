// icefloe.js: the browser client of icefloe's HTTP and WebSocket API.
//
// A dependency-free ES module, served by every icefloe server at
// /static/icefloe.js (types: /static/icefloe.d.ts). docs/browser.md is its guide;
// docs/wire-protocol.md and docs/websocket.md are the protocols it speaks.
//
//   import { Client } from "/static/icefloe.js";
//   const client = new Client({ token });
//   const { stream_id } = await client.start("hello", { tenant: "acme" });
//   client.sse(stream_id, { onChunk: (c) => out.append(c.text) });
//
// SSE is read with fetch, not EventSource: fetch sends an Authorization header
// (EventSource can only put a token in the URL, where logs keep it), lets this
// module choose its own reconnect backoff, and tells a 204 ("nothing left")
// from a refusal. Either way the resume point travels as Last-Event-ID.
//
// Every chunk reaches the application exactly once and in seq order: after a
// reconnect the server resends from the last ack (WebSocket) or id (SSE), and
// this module drops what it has already delivered, by (stream_id, seq).

export const WS_SUBPROTOCOL = "icefloe.v1.json";

// Close codes after which reconnecting cannot help.
const FINAL_CLOSES = new Set([1008, 1009, 4000]);
// The gateway drains (SIGTERM): reconnect at once (to another gateway) and resume.
const RECONNECT_CLOSE = 4001;
// HTTP statuses worth retrying (a reader reconnects after them).
const RETRY_STATUSES = new Set([429, 502, 503, 504]);

/** An error the server answered ({"error": {code, message}}), or a refusal. */
export class IcefloeError extends Error {
  constructor(code, message, status = 0) {
    super(`${code}: ${message}`);
    this.name = "IcefloeError";
    this.code = code;
    this.detail = message;
    this.status = status;
  }
}

/** Exponential backoff with full jitter: a random wait in [d/2, d], d doubling to max. */
export function backoffDelay(attempt, baseMs = 250, maxMs = 10_000, random = Math.random) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return ceiling / 2 + random() * (ceiling / 2);
}

async function errorFrom(response) {
  try {
    const body = await response.json();
    if (body && body.error) {
      return new IcefloeError(body.error.code, body.error.message, response.status);
    }
  } catch (_) {
    // not JSON: fall back to the status line
  }
  return new IcefloeError(`http_${response.status}`, response.statusText, response.status);
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

// -- SSE over fetch ---------------------------------------------------------------

/** Parses an SSE body (WHATWG rules) and calls onEvent({event, data, id}). */
class SseParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.event = "";
    this.data = [];
    this.id = null;
    this.retry = null;
  }

  feed(text) {
    this.buffer += text;
    let start = 0;
    for (;;) {
      const match = /\r\n|\r|\n/g;
      match.lastIndex = start;
      const found = match.exec(this.buffer);
      // A lone \r at the very end may be the first half of \r\n.
      if (!found || (found[0] === "\r" && found.index === this.buffer.length - 1)) break;
      this.line(this.buffer.slice(start, found.index));
      start = found.index + found[0].length;
    }
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === "") {
      if (this.data.length) {
        this.onEvent({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
      }
      this.event = "";
      this.data = [];
      return;
    }
    if (line.startsWith(":")) return; // a comment: the server's heartbeat
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.id = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
  }
}

/**
 * One resumable SSE connection: reconnects with Last-Event-ID and backoff until
 * the handler says it is finished, the server answers 204, or close().
 */
class SseReader {
  constructor(client, url, handlers, lastEventId = null) {
    this.client = client;
    this.url = url;
    this.handlers = handlers;
    this.lastEventId = lastEventId;
    this.finished = false;
    this.abort = new AbortController();
    this.reconnects = 0;
    this.done = this.run();
  }

  close() {
    this.finished = true;
    this.abort.abort();
  }

  async run() {
    let attempt = 0;
    try {
      while (!this.finished) {
        let delivered = false;
        this.handoffMs = null;
        try {
          delivered = await this.connect();
          if (this.finished) break;
        } catch (err) {
          if (this.finished) break;
          if (err instanceof IcefloeError && !RETRY_STATUSES.has(err.status)) throw err;
        }
        if (delivered) attempt = 0;
        this.reconnects += 1;
        if (this.handlers.onReconnect) this.handlers.onReconnect(this.reconnects);
        // A draining gateway handed this reader off: its retry hint, no backoff.
        const wait = this.handoffMs !== null ? this.handoffMs
          : backoffDelay(attempt++, this.client.retryBaseMs, this.client.retryMaxMs);
        await sleep(wait, this.abort.signal);
      }
    } catch (err) {
      this.finished = true;
      if (this.handlers.onError) this.handlers.onError(err);
      throw err;
    }
  }

  // One connection; true when it delivered an event (the next backoff starts over).
  async connect() {
    const headers = { Accept: "text/event-stream", ...this.client.authHeaders() };
    if (this.lastEventId !== null) headers["Last-Event-ID"] = this.lastEventId;
    const response = await this.client.fetch(this.url, {
      headers, signal: this.abort.signal, cache: "no-store",
    });
    if (response.status === 204) { // nothing left to read: the terminal was delivered
      this.finished = true;
      if (this.handlers.onClose) this.handlers.onClose();
      return false;
    }
    if (!response.ok) throw await errorFrom(response);
    let delivered = false;
    const parser = new SseParser((ev) => {
      if (this.finished) return;
      if (ev.event === "reconnect") { // the gateway drains: resume elsewhere
        this.handoffMs = parser.retry !== null ? parser.retry : 0;
        return;
      }
      if (ev.id !== null) this.lastEventId = ev.id;
      delivered = true;
      if (this.handlers.onEvent(ev) === false) this.close();
    });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.feed(value);
        if (this.finished || this.handoffMs !== null) break;
      }
    } finally {
      reader.cancel().catch(() => {});
    }
    return delivered;
  }
}

/** What ``client.sse`` returns: one stream over SSE. */
export class SseStream {
  constructor(client, streamId, options) {
    this.streamId = streamId;
    this.lastSeq = options.fromSeq !== undefined ? options.fromSeq - 1 : -1;
    const url = client.url(`v1/streams/${encodeURIComponent(streamId)}`);
    const last = this.lastSeq >= 0 ? String(this.lastSeq) : null;
    this.reader = new SseReader(client, url, {
      onEvent: (ev) => this.onEvent(ev, options),
      onReconnect: options.onReconnect,
      onError: options.onError,
      onClose: () => options.onEnd && options.onEnd(null),
    }, last);
    this.done = this.reader.done;
  }

  onEvent(ev, options) {
    const body = JSON.parse(ev.data);
    if (ev.event === "error") {
      if (options.onError) options.onError(new IcefloeError(body.code, body.message));
      return false;
    }
    if (body.seq <= this.lastSeq) return true; // already delivered
    this.lastSeq = body.seq;
    if (options.onChunk) options.onChunk(body);
    if (ev.event === "end") {
      if (options.onEnd) options.onEnd(body);
      return false;
    }
    return true;
  }

  get reconnects() { return this.reader.reconnects; }

  close() { this.reader.close(); }
}

/** What ``client.events`` returns: several streams and topics on one SSE connection. */
export class EventsStream {
  constructor(client, { streams = [], topics = [], from = null, ...handlers }) {
    const url = client.url("v1/events");
    for (const id of streams) url.searchParams.append("stream", id);
    for (const pattern of topics) url.searchParams.append("topic", pattern);
    this.lastSeq = new Map(); // stream id -> last seq delivered
    this.duplicates = 0; // chunks dropped as already delivered
    this.handlers = handlers;
    this.reader = new SseReader(client, url, {
      onEvent: (ev) => this.onEvent(ev),
      onReconnect: handlers.onReconnect,
      onError: handlers.onError,
      onClose: handlers.onClose,
    }, from);
    this.done = this.reader.done;
  }

  /** The id to resume from later (``client.events({..., from})``). */
  get cursor() { return this.reader.lastEventId; }

  get reconnects() { return this.reader.reconnects; }

  onEvent(ev) {
    const body = JSON.parse(ev.data);
    const h = this.handlers;
    if (ev.event === "event") {
      if (h.onEvent) h.onEvent(body);
    } else if (ev.event === "error") {
      if (h.onStreamError) h.onStreamError(new IcefloeError(body.code, body.message), body);
    } else if (ev.event === "chunk" || ev.event === "end") {
      const last = this.lastSeq.has(body.stream_id) ? this.lastSeq.get(body.stream_id) : -1;
      if (body.seq <= last) { this.duplicates += 1; return true; } // already delivered
      this.lastSeq.set(body.stream_id, body.seq);
      if (h.onChunk) h.onChunk(body);
      if (ev.event === "end" && h.onEnd) h.onEnd(body);
    }
    return true;
  }

  close() { this.reader.close(); }
}

// -- the WebSocket ------------------------------------------------------------------

/** One stream followed on a Connection. */
export class WsStream {
  constructor(conn, options) {
    this.conn = conn;
    this.id = options.streamId || null;
    this.options = options;
    this.lastSeq = options.fromSeq !== undefined ? options.fromSeq - 1 : -1;
    this.credit = 0; // what the server may still send, as counted here
    this.unconsumed = 0; // delivered, not yet released by the application
    this.acked = this.lastSeq;
    this.unacked = 0;
    this.ackTimer = 0;
    this.paused = false;
    this.ended = false;
    this.grants = 0;
    this.delivered = 0;
    this.duplicates = 0;
    this.done = new Promise((resolve, reject) => { this.resolve = resolve; this.reject = reject; });
    this.done.catch(() => {}); // an unawaited failure is reported through onError
  }

  // The server's chunk or end.
  receive(msg) {
    this.credit -= 1;
    if (msg.seq <= this.lastSeq) {
      // Resent after a resume (it followed the last ack): dropped, but it used
      // a credit, which nothing else would give back.
      this.duplicates += 1;
      this.topUp();
      return;
    }
    this.lastSeq = msg.seq;
    this.delivered += 1;
    this.unconsumed += 1;
    const o = this.options;
    if (o.onChunk) o.onChunk(msg);
    if (msg.op === "end") {
      this.ack(); // the session lets go of the stream once its end is acked
      this.finish(null, msg);
      return;
    }
    if (o.autoCredit !== false) this.release(1);
    this.unacked += 1;
    if (this.unacked >= this.conn.ackThreshold()) this.ack();
    else if (!this.ackTimer) this.ackTimer = setTimeout(() => this.ack(), this.conn.ackDelayMs);
  }

  /** Grant credit for ``n`` chunks the application has consumed (autoCredit: false). */
  release(n = 1) {
    this.unconsumed = Math.max(0, this.unconsumed - n);
    this.topUp();
  }

  topUp() {
    const window = this.conn.window;
    const n = window - this.credit - this.unconsumed;
    if (this.ended || !this.id || n < window / 2) return;
    if (this.conn.send({ op: "credit", stream_id: this.id, n })) {
      this.credit += n;
      this.grants += 1;
    }
  }

  ack() {
    clearTimeout(this.ackTimer);
    this.ackTimer = 0;
    this.unacked = 0;
    if (this.id && this.lastSeq > this.acked &&
        this.conn.send({ op: "ack", stream_id: this.id, seq: this.lastSeq })) {
      this.acked = this.lastSeq;
    }
  }

  /** Stop the stream's chunks (they wait on the server) until resume(). */
  pause() {
    this.paused = true;
    if (this.id) this.conn.send({ op: "pause", stream_id: this.id });
    return this.conn.ping();
  }

  resume() {
    this.paused = false;
    if (this.id) this.conn.send({ op: "resume", stream_id: this.id });
  }

  /** End the stream for every reader; its ``cancelled`` terminal follows. */
  cancel() {
    if (this.paused) this.resume(); // a pause would hold the terminal back
    this.conn.send({ op: "cancel", stream_id: this.id });
  }

  /** Send ``data`` to the running node (``ctx.inputs()``). */
  input(data) { this.conn.send({ op: "input", stream_id: this.id, data }); }

  /** Stop following the stream on this connection; it goes on for others. */
  unsubscribe() {
    this.conn.send({ op: "unsubscribe", stream_id: this.id });
    this.finish(null, null);
  }

  // A (re)subscription's credit starts at the window, unpaused on the server.
  opened() {
    this.credit = this.conn.window;
    if (this.paused) this.conn.send({ op: "pause", stream_id: this.id });
    this.topUp();
  }

  finish(err, last) {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.ackTimer);
    if (this.id) this.conn.streams.delete(this.id);
    const o = this.options;
    if (err) {
      if (o.onError) o.onError(err);
      this.reject(err);
    } else {
      if (o.onEnd) o.onEnd(last);
      this.resolve(last);
    }
  }
}

/** A topic subscription on a Connection. */
export class TopicSubscription {
  constructor(conn, pattern, options) {
    this.conn = conn;
    this.pattern = pattern;
    this.options = options;
    this.subId = conn.nextRef("sub");
    this.offsets = new Map(); // topic -> last offset delivered (and epoch, when sent)
    this.epoch = undefined;
    this.closed = false;
  }

  op() {
    const op = { op: "sub_topic", ref: this.subId, pattern: this.pattern, sub_id: this.subId };
    const o = this.options;
    if (o.filter !== undefined) op.filter = o.filter;
    // Offsets are sent only to a server known to take them (resume: true):
    // an older one rejects unknown fields.
    const last = this.offsets.get(this.pattern);
    if (o.resume && last !== undefined) op.from_offset = last + 1;
    else if (o.fromOffset !== undefined) op.from_offset = o.fromOffset;
    const epoch = this.epoch !== undefined ? this.epoch : o.epoch;
    if (op.from_offset !== undefined && epoch !== undefined) op.epoch = epoch;
    return op;
  }

  receive(msg) {
    const last = this.offsets.get(msg.topic);
    if (last !== undefined && msg.offset <= last && (msg.epoch === undefined || msg.epoch === this.epoch)) {
      return; // a replay overlap after a reconnect
    }
    this.offsets.set(msg.topic, msg.offset);
    if (msg.epoch !== undefined) this.epoch = msg.epoch;
    if (this.options.onEvent) this.options.onEvent(msg);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.conn.topics.delete(this.subId);
    this.conn.send({ op: "unsub_topic", sub_id: this.subId });
  }
}

/**
 * One WebSocket at /v1/ws carrying any number of streams and topics, with a
 * session that survives reconnects: after a drop it reconnects (exponential
 * backoff with jitter) and resumes; each stream continues after its last ack.
 */
export class Connection {
  constructor(client, options = {}) {
    this.client = client;
    this.options = options;
    this.ackEvery = options.ackEvery || 0; // 0: half the window, at most 32
    this.ackDelayMs = options.ackDelayMs || 250;
    this.batch = options.batch === true;
    this.sessionId = null;
    this.window = 0;
    this.streams = new Map(); // stream id -> WsStream
    this.starting = new Map(); // ref -> WsStream waiting for `started`
    this.topics = new Map(); // sub id -> TopicSubscription
    this.pings = new Map(); // ref -> resolve
    this.refs = 0;
    this.attempt = 0;
    this.reconnects = 0;
    this.closed = false;
    this.ws = null;
    this.state = "connecting";
    this.ready = new Promise((resolve, reject) => { this.onReady = resolve; this.onRefused = reject; });
    this.ready.catch(() => {});
    this.open();
  }

  // Chunks between acks: what a resume resends at most, per stream.
  ackThreshold() {
    return this.ackEvery || Math.max(1, Math.min(32, Math.floor(this.window / 2)));
  }

  nextRef(kind) { this.refs += 1; return `${kind}-${this.refs}`; }

  setState(state, detail) {
    this.state = state;
    if (this.options.onState) this.options.onState(state, detail);
  }

  open() {
    const ws = new WebSocket(this.client.wsUrl(), WS_SUBPROTOCOL);
    this.ws = ws;
    // Events of a replaced socket are ignored.
    ws.addEventListener("open", () => { if (ws === this.ws) this.hello(); });
    ws.addEventListener("message", (ev) => { if (ws === this.ws) this.onMessage(ev.data); });
    ws.addEventListener("close", (ev) => { if (ws === this.ws) this.onClose(ev); });
  }

  send(op) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(op));
    return true;
  }

  hello() {
    const hello = { op: "hello" };
    if (this.sessionId) { hello.session_id = this.sessionId; hello.resume = true; }
    if (this.batch) hello.batch = true;
    this.send(hello);
  }

  onMessage(data) {
    if (typeof data !== "string") return;
    const msg = JSON.parse(data);
    switch (msg.op) {
      case "welcome": this.onWelcome(msg); break;
      case "started": this.onStarted(msg); break;
      case "chunk": case "end": this.onChunk(msg); break;
      case "chunks": for (const c of msg.chunks) this.onChunk(c); break;
      case "error": this.onServerError(msg); break;
      case "event": this.onEvent(msg); break;
      case "pong": {
        const resolve = this.pings.get(msg.ref);
        this.pings.delete(msg.ref);
        if (resolve) resolve();
        break;
      }
      default: break; // newer server ops are ignored
    }
  }

  onWelcome(msg) {
    const resumed = msg.resumed === true && msg.session_id === this.sessionId;
    this.sessionId = msg.session_id;
    this.window = msg.window;
    this.attempt = 0;
    for (const s of this.streams.values()) {
      // Resumed: the server follows each stream again after its last ack.
      // A fresh session: follow it again after what was delivered.
      if (resumed) s.opened();
      else this.sendSubscribe(s);
    }
    for (const s of [...this.starting.values()]) {
      if (!s.sent) { this.sendStart(s); continue; }
      // Dropped between start and started: starting again could run it twice.
      this.starting.delete(s.ref);
      s.finish(new IcefloeError("unavailable", "the connection dropped before `started`"));
    }
    for (const t of this.topics.values()) this.send(t.op());
    this.setState("open", resumed ? "resumed" : "new session");
    this.onReady(this);
  }

  onStarted(msg) {
    const s = this.starting.get(msg.ref);
    if (!s) return;
    this.starting.delete(msg.ref);
    s.id = msg.stream_id;
    this.streams.set(s.id, s);
    if (s.options.onStarted) s.options.onStarted(s.id);
    s.opened();
  }

  onChunk(msg) {
    const s = this.streams.get(msg.stream_id);
    if (s) s.receive(msg);
  }

  onEvent(msg) {
    for (const t of this.topics.values()) {
      if (t.closed) continue;
      // Each subscription gets the events of its pattern; one op per match.
      if (topicMatches(t.pattern, msg.topic)) { t.receive(msg); return; }
    }
  }

  onServerError(msg) {
    const err = new IcefloeError(msg.code, msg.message);
    if (msg.stream_id !== undefined && this.streams.has(msg.stream_id)) {
      this.streams.get(msg.stream_id).finish(err);
    } else if (msg.ref !== undefined && this.starting.has(msg.ref)) {
      this.starting.get(msg.ref).finish(err);
      this.starting.delete(msg.ref);
    } else if (msg.code !== "session_expired" && this.options.onError) {
      this.options.onError(err, msg); // a refused op; the connection goes on
    }
  }

  onClose(event) {
    for (const s of this.streams.values()) { clearTimeout(s.ackTimer); s.ackTimer = 0; }
    if (this.closed) return;
    const retries = this.options.maxRetries === undefined ? Infinity : this.options.maxRetries;
    const why = event.reason ? `${event.code}: ${event.reason}` : String(event.code);
    const handedOff = event.code === RECONNECT_CLOSE;
    if ((this.sessionId === null && !handedOff) || FINAL_CLOSES.has(event.code)
        || this.attempt >= retries) {
      this.closed = true;
      const err = new IcefloeError("closed", this.attempt >= retries && this.sessionId !== null
        ? `the connection was lost ${this.attempt} times; gave up (${why})`
        : `the WebSocket closed (${why})`);
      this.setState("closed", err);
      this.onRefused(err);
      for (const s of [...this.streams.values(), ...this.starting.values()]) s.finish(err);
      return;
    }
    // Handed off by a draining gateway: reconnect at once (no backoff growth).
    const delay = handedOff ? backoffDelay(0, this.client.retryBaseMs, this.client.retryMaxMs)
      : backoffDelay(this.attempt++, this.client.retryBaseMs, this.client.retryMaxMs);
    this.reconnects += 1;
    this.setState("reconnecting", why);
    setTimeout(() => { if (!this.closed) this.open(); }, delay);
  }

  /** Start a run over this connection; chunks go to ``options.onChunk``. */
  start(payload, headers = {}, options = {}) {
    const s = new WsStream(this, options);
    s.ref = this.nextRef("start");
    s.request = { op: "start", ref: s.ref, payload, headers };
    this.starting.set(s.ref, s);
    if (this.state === "open") this.sendStart(s);
    return s;
  }

  sendStart(s) { s.sent = this.send(s.request); }

  /** Follow an existing stream from ``options.fromSeq`` (default 0). */
  subscribe(streamId, options = {}) {
    const s = new WsStream(this, { ...options, streamId });
    this.streams.set(streamId, s);
    if (this.state === "open") this.sendSubscribe(s);
    return s;
  }

  sendSubscribe(s) {
    this.send({ op: "subscribe", ref: this.nextRef("subscribe"), stream_id: s.id,
      from_seq: s.lastSeq + 1 });
    s.acked = s.lastSeq;
    s.opened();
  }

  /** Subscribe to a topic pattern; events go to ``options.onEvent``. */
  subTopic(pattern, options = {}) {
    const t = new TopicSubscription(this, pattern, options);
    this.topics.set(t.subId, t);
    if (this.state === "open") this.send(t.op());
    return t;
  }

  publish(topic, data) { this.send({ op: "publish", topic, data }); }

  /** Resolves when the server has handled every op sent before it. */
  ping() {
    const ref = this.nextRef("ping");
    return new Promise((resolve) => {
      this.pings.set(ref, resolve);
      if (!this.send({ op: "ping", ref })) { this.pings.delete(ref); resolve(); }
    });
  }

  close() {
    this.closed = true;
    for (const s of this.streams.values()) s.ack();
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
    this.setState("closed", null);
  }
}

/** Whether a NATS-style pattern (``*`` one segment, trailing ``>`` the rest) selects ``topic``. */
export function topicMatches(pattern, topic) {
  const p = pattern.split(".");
  const t = topic.split(".");
  for (let i = 0; i < p.length; i += 1) {
    if (p[i] === ">") return t.length > i;
    if (i >= t.length || (p[i] !== "*" && p[i] !== t[i])) return false;
  }
  return p.length === t.length;
}

// -- the client ---------------------------------------------------------------------

/** Entry point: where the server is and how to authenticate. */
export class Client {
  constructor(options = {}) {
    this.base = new URL(options.baseUrl || globalThis.location.href);
    this.token = options.token || null;
    this.retryBaseMs = options.retryBaseMs || 250;
    this.retryMaxMs = options.retryMaxMs || 10_000;
    this.fetch = options.fetch || globalThis.fetch.bind(globalThis);
  }

  url(path) { return new URL(path, this.base); }

  authHeaders() { return this.token ? { Authorization: `Bearer ${this.token}` } : {}; }

  // Browsers cannot set headers on a WebSocket: the token goes as ?access_token=.
  wsUrl() {
    const url = this.url("v1/ws");
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (this.token) url.searchParams.set("access_token", this.token);
    return url.href;
  }

  async request(method, path, body) {
    const headers = this.authHeaders();
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await this.fetch(this.url(path), init);
    if (!response.ok) throw await errorFrom(response);
    return response.status === 204 ? null : response.json();
  }

  /** POST /v1/streams: ``{stream_id, trace_id}``. */
  start(payload, headers) { return this.request("POST", "v1/streams", { payload, headers }); }

  /** DELETE /v1/streams/{id}. */
  cancel(streamId) { return this.request("DELETE", `v1/streams/${encodeURIComponent(streamId)}`); }

  /** POST /v1/topics/{topic}: ``{topic, offset}``. */
  publish(topic, data) { return this.request("POST", `v1/topics/${encodeURIComponent(topic)}`, { data }); }

  /** Read one stream over SSE, resuming after drops. */
  sse(streamId, options = {}) { return new SseStream(this, streamId, options); }

  /** Follow several streams and topic patterns on one SSE connection (GET /v1/events). */
  events(options) { return new EventsStream(this, options); }

  /** Open a WebSocket connection (GET /v1/ws). */
  connect(options = {}) { return new Connection(this, options); }
}
