// The real AI SDK client against icefloe's /v1/chat (run by tests/integration/test_ai_sdk.py).
//
// Usage: node ai_sdk_chat.mjs <base url>. The server serves the chat flow of
// test_ai_sdk.py: body field `scenario` picks what the node streams. Prints
// one JSON line of figures on success; any failed check exits non-zero.
import assert from "node:assert/strict";
import { DefaultChatTransport, readUIMessageStream } from "ai";

const base = process.argv[2];
assert.ok(base, "usage: node ai_sdk_chat.mjs <base url>");
const api = `${base}/v1/chat`;
const TOKENS = 200;
const TIMEOUT_MS = 20_000;

// The node's token i, computed here independently: awkward on purpose
// (newlines, quotes, an SSE-looking "data:", non-ASCII).
const token = (i) => `t${i} é"\n data: ${i % 7}\r `;
const expected = Array.from({ length: TOKENS }, (_, i) => token(i)).join("");

const userMessage = (text) => ({ id: `u-${text}`, role: "user", parts: [{ type: "text", text }] });

function transport(body) {
  return new DefaultChatTransport({ api, body });
}

function send(t, chatId, abortSignal) {
  return t.sendMessages({
    chatId,
    messages: [userMessage("hello")],
    trigger: "submit-message",
    messageId: undefined,
    abortSignal,
  });
}

// As useChat({resume: true}) does after a reload: GET {api}/{id}/stream, null on 204.
function resume(t, chatId) {
  return t.reconnectToStream({ chatId });
}

async function lastMessage(stream) {
  let last;
  const errors = [];
  for await (const message of readUIMessageStream({ stream, onError: (e) => errors.push(e) })) {
    last = message;
  }
  assert.deepEqual(errors, []);
  return last;
}

const textOf = (message) =>
  message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");

// Reads chunks until `until(chunk, seen)` holds; returns them (the stream stays open).
async function readUntil(reader, until) {
  const seen = [];
  for (;;) {
    const { value, done } = await reader.read();
    assert.ok(!done, `stream ended early after ${seen.length} chunks`);
    seen.push(value);
    if (until(value, seen)) return seen;
  }
}

const deltas = (seen) => seen.filter((c) => c.type === "text-delta").length;

async function withTimeout(name, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${name}: no result in ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function fullText() {
  const t = transport({ scenario: "tokens", delay_ms: 0 });
  const started = performance.now();
  const message = await lastMessage(await send(t, "chat-full"));
  const ms = performance.now() - started;
  assert.equal(message.role, "assistant");
  assert.equal(textOf(message), expected);
  return { tokens: TOKENS, ms: Math.round(ms) };
}

async function abortThenResume() {
  // 20 ms a token: the run is still going (about 3 s more) when the resume comes.
  const t = transport({ scenario: "tokens", delay_ms: 20 });
  const abort = new AbortController();
  const reader = (await send(t, "chat-resume", abort.signal)).getReader();
  const before = await readUntil(reader, (_, seen) => deltas(seen) >= 50);
  const messageId = before.find((c) => c.type === "start").messageId;
  abort.abort(); // the page goes away mid-stream: the run must go on
  await reader.read().catch(() => {});
  const started = performance.now();
  const stream = await resume(t, "chat-resume");
  assert.ok(stream, "the resume found no active stream");
  const message = await lastMessage(stream);
  assert.equal(message.id, messageId);
  assert.equal(textOf(message), expected);
  // Done: nothing left to resume.
  assert.equal(await resume(t, "chat-resume"), null);
  return { deltasBeforeAbort: deltas(before), resumeMs: Math.round(performance.now() - started) };
}

async function stopWhileReading() {
  const t = transport({ scenario: "tokens", delay_ms: 50 });
  const stream = await send(t, "chat-stop");
  const reader = stream.getReader();
  await readUntil(reader, (_, seen) => deltas(seen) >= 3);
  const r = await fetch(`${api}/chat-stop/stream`, { method: "DELETE" });
  assert.equal(r.status, 200);
  assert.equal((await r.json()).state, "cancelled");
  // The open reply ends (its abort part), well before its 200 tokens.
  const rest = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    rest.push(value);
  }
  assert.equal(rest.at(-1).type, "abort");
  assert.ok(deltas(rest) < TOKENS - 3);
  assert.equal(await resume(t, "chat-stop"), null);
  // A second stop finds nothing either.
  assert.equal((await fetch(`${api}/chat-stop/stream`, { method: "DELETE" })).status, 204);
}

async function reloadThenStop() {
  // Stop after a reload: the resumed reader sees the end, then nothing resumes.
  const t = transport({ scenario: "tokens", delay_ms: 50 });
  const abort = new AbortController();
  const first = (await send(t, "chat-reload-stop", abort.signal)).getReader();
  await readUntil(first, (_, seen) => deltas(seen) >= 2);
  abort.abort();
  await first.read().catch(() => {});
  const resumed = (await resume(t, "chat-reload-stop")).getReader();
  await readUntil(resumed, (_, seen) => deltas(seen) >= 3);
  assert.equal((await fetch(`${api}/chat-reload-stop/stream`, { method: "DELETE" })).status, 200);
  let lastChunk;
  for (;;) {
    const { value, done } = await resumed.read();
    if (done) break;
    lastChunk = value;
  }
  assert.equal(lastChunk.type, "abort");
  assert.equal(await resume(t, "chat-reload-stop"), null);
}

async function stopThenReload() {
  // A reload after a stop: the page went away, the stop came, the reload finds nothing.
  const t = transport({ scenario: "tokens", delay_ms: 50 });
  const abort = new AbortController();
  const first = (await send(t, "chat-stop-reload", abort.signal)).getReader();
  await readUntil(first, (_, seen) => deltas(seen) >= 2);
  abort.abort();
  await first.read().catch(() => {});
  assert.equal((await fetch(`${api}/chat-stop-reload/stream`, { method: "DELETE" })).status, 200);
  assert.equal(await resume(t, "chat-stop-reload"), null);
}

async function reasoningAndTools() {
  const t = transport({ scenario: "tools" });
  const message = await lastMessage(await send(t, "chat-tools"));
  const kinds = message.parts.map((p) => p.type);
  assert.deepEqual(kinds, ["step-start", "reasoning", "tool-weather", "step-start", "text"]);
  const [, reasoning, tool, , text] = message.parts;
  assert.equal(reasoning.text, "Look up the weather.");
  assert.equal(tool.state, "output-available");
  assert.equal(tool.toolCallId, "call-1");
  assert.deepEqual(tool.input, { city: "Oslo" });
  assert.deepEqual(tool.output, { celsius: -3 });
  assert.equal(text.text, "It is -3 °C in Oslo.");
  assert.deepEqual(message.metadata, { finish_reason: "stop", usage: { tokens: 9 } });
}

const figures = {};
figures.full = await withTimeout("full text", fullText());
figures.resume = await withTimeout("abort then resume", abortThenResume());
await withTimeout("stop while reading", stopWhileReading());
await withTimeout("reload then stop", reloadThenStop());
await withTimeout("stop then reload", stopThenReload());
await withTimeout("reasoning and tools", reasoningAndTools());
console.log(JSON.stringify(figures));
