// The real AI SDK client reading an LLM adapter's reply through icefloe's /v1/chat
// (run by tests/integration/test_ai_sdk_llm.py).
//
// Usage: node ai_sdk_llm.mjs <base url> <mode> <expected JSON>. The server's
// node relays a fake OpenAI server's stream with icefloe.llm.openai.stream_chat.
// Modes:
//   full:   one reply, read whole; prints the reconstructed UIMessage and the
//           finish chunk as one JSON line.
//   resume: the page goes away after `abortAfter` text deltas, then resumes
//           (useChat({resume: true})); prints the same, plus figures.
//   raw:    one reply, read whole, checked by the caller only: prints the
//           reconstructed UIMessage and the finish chunk.
// Any failed check exits non-zero.
import assert from "node:assert/strict";
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [base, mode, expectedJson] = process.argv.slice(2);
assert.ok(base && mode && expectedJson, "usage: node ai_sdk_llm.mjs <base url> <mode> <expected JSON>");
const expected = JSON.parse(expectedJson);
const api = `${base}/v1/chat`;
const TIMEOUT_MS = 30_000;

const transport = new DefaultChatTransport({ api });
const question = { id: "u1", role: "user", parts: [{ type: "text", text: expected.question }] };

function send(chatId, abortSignal) {
  return transport.sendMessages({
    chatId,
    messages: [question],
    trigger: "submit-message",
    messageId: undefined,
    abortSignal,
  });
}

// Reads a stream to its end: the last UIMessage, and every chunk (a tee of the same stream).
async function readReply(stream) {
  const [forMessage, forChunks] = stream.tee();
  const chunks = [];
  const collect = (async () => {
    const reader = forChunks.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      chunks.push(value);
    }
  })();
  let message;
  const errors = [];
  for await (const m of readUIMessageStream({ stream: forMessage, onError: (e) => errors.push(e) })) {
    message = m;
  }
  await collect;
  assert.deepEqual(errors, []);
  return { message, chunks };
}

// What the page shows, checked against the test's expectations.
function check({ message, chunks }) {
  const kinds = message.parts.map((p) => p.type);
  assert.deepEqual(kinds, expected.kinds);
  const reasoning = message.parts.find((p) => p.type === "reasoning");
  assert.equal(reasoning.text, expected.reasoning);
  assert.equal(reasoning.state, "done");
  const text = message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
  assert.equal(text, expected.text);
  const tool = message.parts.find((p) => p.type === `tool-${expected.tool.name}`);
  assert.equal(tool.toolCallId, expected.tool.id);
  assert.equal(tool.state, "input-available");
  assert.deepEqual(tool.input, expected.tool.input);
  assert.deepEqual(message.metadata.usage, expected.usage);
  const finish = chunks.at(-1);
  assert.equal(finish.type, "finish");
  assert.equal(finish.finishReason, expected.finishReason);
  return { message, finish };
}

async function full() {
  return check(await readReply(await send("chat-llm")));
}

const deltas = (seen) => seen.filter((c) => c.type === "text-delta").length;

async function abortThenResume() {
  const abort = new AbortController();
  const reader = (await send("chat-llm-resume", abort.signal)).getReader();
  const before = [];
  while (deltas(before) < expected.abortAfter) {
    const { value, done } = await reader.read();
    assert.ok(!done, `the reply ended after ${before.length} chunks`);
    before.push(value);
  }
  const messageId = before.find((c) => c.type === "start").messageId;
  abort.abort(); // the page goes away mid-reply: the run, and the provider's stream, go on
  await reader.read().catch(() => {});
  const started = performance.now();
  const stream = await transport.reconnectToStream({ chatId: "chat-llm-resume" });
  assert.ok(stream, "the resume found no running reply");
  const result = check(await readReply(stream));
  assert.equal(result.message.id, messageId);
  // The reply has finished: nothing left to resume.
  assert.equal(await transport.reconnectToStream({ chatId: "chat-llm-resume" }), null);
  return {
    ...result,
    deltasBeforeAbort: deltas(before),
    resumeMs: Math.round(performance.now() - started),
  };
}

async function raw() {
  const { message, chunks } = await readReply(await send("chat-llm-raw"));
  return { message, finish: chunks.at(-1) };
}

const run = { full, resume: abortThenResume, raw }[mode];
assert.ok(run, `unknown mode ${mode}`);
let timer;
const timeout = new Promise((_, reject) => {
  timer = setTimeout(() => reject(new Error(`${mode}: no result in ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
});
try {
  console.log(JSON.stringify(await Promise.race([run(), timeout])));
} finally {
  clearTimeout(timer);
}
