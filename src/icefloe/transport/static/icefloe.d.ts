// Types of icefloe.js, the browser client served at /static/icefloe.js.
// Hand-written to match the module; docs/browser.md is the guide.

export const WS_SUBPROTOCOL: "icefloe.v1.json";

/** One chunk of a stream, as SSE `data` and the WebSocket `chunk`/`end` ops carry it. */
export interface Chunk {
  op?: "chunk" | "end";
  stream_id: string;
  seq: number;
  text: string;
  done: boolean;
  meta: Record<string, unknown>;
  data: unknown;
  /** unix nanoseconds (may exceed 2^53: precision is lost in JavaScript numbers) */
  ts: number;
}

/** A topic event (`event` op / SSE `event: event`). */
export interface TopicEvent {
  op: "event";
  topic: string;
  offset: number;
  /** sent by servers that number topic histories by epoch */
  epoch?: number;
  data: unknown;
  headers: Record<string, unknown>;
  ts: number;
}

/** An error the server answered, or a refusal; `code` is a wire error code. */
export class IcefloeError extends Error {
  constructor(code: string, message: string, status?: number);
  readonly code: string;
  /** the server's message alone (`message` is "code: detail") */
  readonly detail: string;
  /** the HTTP status, 0 when the error came over a stream or the WebSocket */
  readonly status: number;
}

/** Milliseconds before reconnect attempt `attempt`: in [d/2, d], d = min(max, base * 2^attempt). */
export function backoffDelay(
  attempt: number, baseMs?: number, maxMs?: number, random?: () => number,
): number;

/** Whether a pattern (`*` one segment, trailing `>` the rest) selects `topic`. */
export function topicMatches(pattern: string, topic: string): boolean;

export interface ClientOptions {
  /** the server's base URL (default: the page's own) */
  baseUrl?: string | URL;
  /** a bearer token: the Authorization header on HTTP, ?access_token= on the WebSocket */
  token?: string | null;
  /** the first reconnect delay's ceiling, ms (default 250) */
  retryBaseMs?: number;
  /** the longest reconnect delay, ms (default 10000) */
  retryMaxMs?: number;
  fetch?: typeof fetch;
}

export interface SseOptions {
  /** the first seq to read (default 0) */
  fromSeq?: number;
  onChunk?(chunk: Chunk): void;
  /** the stream's end chunk, or null when the server said nothing is left (204) */
  onEnd?(last: Chunk | null): void;
  /** the stream's abnormal end (cancelled, failed, ...) or a refusal */
  onError?(error: IcefloeError | Error): void;
  onReconnect?(count: number): void;
}

export class SseStream {
  readonly streamId: string;
  /** the last seq delivered */
  readonly lastSeq: number;
  readonly reconnects: number;
  /** settles when reading stops */
  readonly done: Promise<void>;
  close(): void;
}

export interface EventsOptions {
  streams?: string[];
  /** topic names or patterns (an exact name resumes by offset, a pattern at the live head) */
  topics?: string[];
  /** a cursor saved from `EventsStream.cursor`, to resume a previous connection */
  from?: string | null;
  onChunk?(chunk: Chunk): void;
  onEnd?(last: Chunk): void;
  onEvent?(event: TopicEvent): void;
  /** one stream or topic ended abnormally; `source` has its stream_id or topic */
  onStreamError?(error: IcefloeError, source: { code: string; message: string; stream_id?: string; topic?: string }): void;
  onError?(error: IcefloeError | Error): void;
  /** every source ended and the server answered 204 */
  onClose?(): void;
  onReconnect?(count: number): void;
}

export class EventsStream {
  /** the last event id: pass it as `from` to resume later */
  readonly cursor: string | null;
  readonly reconnects: number;
  /** chunks dropped as already delivered (0 while the server resumes exactly) */
  readonly duplicates: number;
  readonly done: Promise<void>;
  close(): void;
}

export interface StreamOptions {
  /** subscribe: the first seq to read (default 0) */
  fromSeq?: number;
  /** grant credit as chunks are delivered (default true); false: call release() */
  autoCredit?: boolean;
  onStarted?(streamId: string): void;
  onChunk?(chunk: Chunk): void;
  onEnd?(last: Chunk | null): void;
  onError?(error: IcefloeError): void;
}

export class WsStream {
  /** null until `started` names it */
  readonly id: string | null;
  readonly lastSeq: number;
  readonly credit: number;
  readonly grants: number;
  readonly delivered: number;
  /** chunks the server resent after a resume and this client dropped */
  readonly duplicates: number;
  readonly paused: boolean;
  readonly ended: boolean;
  /** resolves with the end chunk (null after unsubscribe), rejects on an abnormal end */
  readonly done: Promise<Chunk | null>;
  /** grant credit for `n` consumed chunks (with autoCredit: false) */
  release(n?: number): void;
  /** resolves once the server has applied the pause */
  pause(): Promise<void>;
  resume(): void;
  cancel(): void;
  input(data: unknown): void;
  unsubscribe(): void;
  /** send an ack now (acks are otherwise batched) */
  ack(): void;
}

export interface TopicOptions {
  filter?: string;
  /** replay from this offset (only on servers whose sub_topic takes from_offset) */
  fromOffset?: number;
  epoch?: number;
  /** after a reconnect, ask for the events after the last one seen (same condition) */
  resume?: boolean;
  onEvent?(event: TopicEvent): void;
}

export class TopicSubscription {
  readonly pattern: string;
  readonly subId: string;
  close(): void;
}

export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

export interface ConnectionOptions {
  /** ack after this many chunks of a stream (default: half the window, at most 32) */
  ackEvery?: number;
  /** or this long after the first unacked one, ms (default 250) */
  ackDelayMs?: number;
  /** reconnection attempts after a drop before giving up (default: no limit) */
  maxRetries?: number;
  /** ask the server for `chunks` batches */
  batch?: boolean;
  onState?(state: ConnectionState, detail: unknown): void;
  /** an op the server refused (the connection goes on) */
  onError?(error: IcefloeError, op: Record<string, unknown>): void;
}

export class Connection {
  readonly sessionId: string | null;
  readonly window: number;
  readonly state: ConnectionState;
  readonly reconnects: number;
  /** resolves on the first `welcome` */
  readonly ready: Promise<Connection>;
  start(payload: unknown, headers?: { tenant?: string; topic?: string; priority?: number }, options?: StreamOptions): WsStream;
  subscribe(streamId: string, options?: StreamOptions): WsStream;
  subTopic(pattern: string, options?: TopicOptions): TopicSubscription;
  publish(topic: string, data: unknown): void;
  /** resolves when the server has handled every op sent before it */
  ping(): Promise<void>;
  close(): void;
}

export class Client {
  constructor(options?: ClientOptions);
  start(payload: unknown, headers: { tenant: string; topic?: string; priority?: number }): Promise<{ stream_id: string; trace_id: string }>;
  cancel(streamId: string): Promise<unknown>;
  publish(topic: string, data: unknown): Promise<{ topic: string; offset: number }>;
  sse(streamId: string, options?: SseOptions): SseStream;
  events(options: EventsOptions): EventsStream;
  connect(options?: ConnectionOptions): Connection;
}
