"""Test doubles of LLM providers: fake OpenAI and Anthropic HTTP servers on a real socket.

NOT a provider and not part of the package: a raw asyncio HTTP/1.1 server that
answers every POST with what the test planned (:class:`Plan`): an SSE body in
the provider's framing, an HTTP error, a hang, a dropped connection. It
records what a real provider would feel:

* ``requests``: the path and JSON body of every request;
* ``stalled`` / ``resumed`` / ``blocked``: a write found the socket full (the
  client stopped reading: the kernel buffers are full and the transport's
  small write buffer is over its limit), then drained; ``blocked`` is true
  while such a write waits, ``written_at_stall`` is how many body bytes had
  been written at the first stall, and :meth:`SseTestServer.held_back` waits
  for the client to hold the server back for good;
* ``disconnected`` / ``disconnected_at``: the client closed or reset the
  connection (``loop.time()``).

The SSE builders (:func:`chat_frames`, :func:`responses_frames`,
:func:`anthropic_frames`) write the events each provider documents for
streaming, with the fields the SDKs read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from icefloe import StreamChunk, StreamError

__all__ = [
    "Plan",
    "SseTestServer",
    "anthropic_frames",
    "chat_frames",
    "collect",
    "fake_provider",
    "responses_frames",
    "sse",
]


async def collect(
    chunks: AsyncIterator[StreamChunk],
) -> tuple[list[StreamChunk], StreamError | None]:
    """Every chunk a reader gets, and the StreamError that ended the stream (None: done)."""
    got: list[StreamChunk] = []
    try:
        async for chunk in chunks:
            got.append(chunk)  # noqa: PERF401 - what came before an error is kept
    except StreamError as exc:
        return got, exc
    return got, None


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE event; ``data`` is JSON-encoded unless it is already a str."""
    text = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event is not None else ""
    return f"{head}data: {text}\n\n".encode()


@dataclass
class Plan:
    """What the server answers to the next requests."""

    #: SSE frames of the body, written one by one
    frames: Sequence[bytes] = ()
    #: pause before each frame (a slow model)
    delay_s: float = 0.0
    #: a status other than 200 answers with ``error`` as a JSON body instead
    status: int = 200
    error: Any = None
    #: after the frames: "end" (clean), "drop" (abort the TCP connection),
    #: "hang" (write nothing more until the client leaves)
    then: str = "end"
    #: hang before the response headers (a provider that never answers)
    hang_first: bool = False


@dataclass
class SseTestServer:
    """A fake provider; use :func:`fake_provider` to run one."""

    plan: Plan = field(default_factory=Plan)
    #: SO_SNDBUF of each accepted socket (small: the stall shows early)
    sndbuf: int = 4096
    #: the transport's write-buffer high-water mark, bytes
    write_high: int = 4096
    requests: list[tuple[str, Any]] = field(default_factory=list)
    stalled: asyncio.Event = field(default_factory=asyncio.Event)
    resumed: asyncio.Event = field(default_factory=asyncio.Event)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    disconnected_at: float | None = None
    written: int = 0
    written_at_stall: int | None = None
    stalls: int = 0
    #: a write is waiting for the client to read now
    blocked: bool = False
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
        writer.transport.set_write_buffer_limits(high=self.write_high)
        try:
            path, body = await _read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        self.requests.append((path, body))
        watch = asyncio.ensure_future(self._watch(reader))
        plan = self.plan
        try:
            await self._answer(plan, writer, watch)
        except ConnectionError:
            await self._gone()
        finally:
            if plan.then == "drop" and not writer.is_closing():
                writer.transport.abort()
            else:
                writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            await watch

    async def _answer(
        self, plan: Plan, writer: asyncio.StreamWriter, watch: asyncio.Future[None]
    ) -> None:
        if plan.hang_first:
            await watch
            return
        if plan.status != 200:
            payload = json.dumps(plan.error).encode()
            writer.write(
                f"HTTP/1.1 {plan.status} Error\r\ncontent-type: application/json\r\n"
                f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
        )
        for frame in plan.frames:
            if plan.delay_s:
                await asyncio.sleep(plan.delay_s)
            if watch.done() or writer.transport.is_closing():
                return  # the client left
            await self._write(writer, b"%x\r\n%b\r\n" % (len(frame), frame), len(frame))
        if plan.then == "hang":
            await watch
        elif plan.then == "end":
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async def _write(self, writer: asyncio.StreamWriter, data: bytes, size: int) -> None:
        writer.write(data)
        self.written += size
        if writer.transport.get_write_buffer_size() > self.write_high:
            # The kernel's buffers are full: the client is not reading.
            self.stalls += 1
            if self.written_at_stall is None:
                self.written_at_stall = self.written
            self.stalled.set()
            self.blocked = True
            try:
                await writer.drain()
            finally:
                self.blocked = False
            self.resumed.set()

    async def held_back(self, quiet_s: float = 0.2) -> int:
        """Wait until the client holds the server back for good; the bytes written by then.

        A write can stall for a moment while the client is still reading; held
        back means blocked, with nothing more written, over ``quiet_s``.
        """
        while True:
            await self.stalled.wait()
            written = self.written
            await asyncio.sleep(quiet_s)  # a window in which no byte may move
            if self.blocked and self.written == written:
                return written

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        """Read until the client closes: that is the disconnect a provider sees."""
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        await self._gone()

    async def _gone(self) -> None:
        if self.disconnected_at is None:
            self.disconnected_at = asyncio.get_running_loop().time()
            self.disconnected.set()

    def reset(self, plan: Plan) -> None:
        """Plan the next request and forget what the last one recorded."""
        self.plan = plan
        self.requests.clear()
        for event in (self.stalled, self.resumed, self.disconnected):
            event.clear()
        self.disconnected_at = None
        self.written = 0
        self.written_at_stall = None
        self.stalls = 0


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, Any]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    return path, json.loads(body) if body else None


@contextlib.asynccontextmanager
async def fake_provider(plan: Plan | None = None) -> AsyncIterator[SseTestServer]:
    """Run a :class:`SseTestServer` on 127.0.0.1:<free port>."""
    fake = SseTestServer(plan=plan or Plan())
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await fake.handle(reader, writer)
        except asyncio.CancelledError:
            # Our own teardown: asyncio's server logs a handler that ends cancelled.
            writer.transport.abort()
        finally:
            tasks.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        async with server:
            yield fake
            server.close()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        server.close()


# -- the providers' SSE framing ---------------------------------------------------


def chat_frames(
    tokens: Iterable[str],
    *,
    reasoning: Iterable[str] = (),
    tools: Sequence[tuple[str, str, Sequence[str]]] = (),
    finish: str | None = "stop",
    usage: tuple[int, int] | None = (7, 3),
    model: str = "fake-model",
) -> list[bytes]:
    """A Chat Completions stream: reasoning, text, tool calls (id, name, argument pieces)."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": model}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return sse({**base, "choices": [choice]})

    frames = [chunk({"role": "assistant", "content": ""})]
    frames += [chunk({"reasoning_content": piece}) for piece in reasoning]
    frames += [chunk({"content": token}) for token in tokens]
    for index, (call_id, name, pieces) in enumerate(tools):
        start = {"index": index, "id": call_id, "type": "function"}
        frames.append(chunk({"tool_calls": [{**start, "function": {"name": name}}]}))
        for piece in pieces:
            call = {"index": index, "function": {"arguments": piece}}
            frames.append(chunk({"tool_calls": [call]}))
    if finish is not None:
        frames.append(chunk({}, finish))
    if usage is not None:
        counts = {"prompt_tokens": usage[0], "completion_tokens": usage[1]}
        counts["total_tokens"] = sum(usage)
        frames.append(sse({**base, "choices": [], "usage": counts}))
    if finish is not None:
        frames.append(sse("[DONE]"))
    return frames


def responses_frames(
    tokens: Iterable[str],
    *,
    reasoning: Iterable[str] = (),
    tools: Sequence[tuple[str, str, Sequence[str]]] = (),
    status: str | None = "completed",
    incomplete: str | None = None,
    usage: tuple[int, int] = (11, 5),
    model: str = "fake-model",
) -> list[bytes]:
    """A Responses stream; ``status`` None: it ends before ``response.completed``."""
    seq = iter(range(1_000_000))
    response = {"id": "resp_1", "object": "response", "model": model, "status": "in_progress"}

    def event(kind: str, **fields: Any) -> bytes:
        return sse({"type": kind, "sequence_number": next(seq), **fields}, event=kind)

    frames = [event("response.created", response=response)]
    frames += [
        event(
            "response.reasoning_summary_text.delta",
            item_id="rs_1",
            output_index=0,
            summary_index=0,
            delta=piece,
        )
        for piece in reasoning
    ]
    frames += [
        event(
            "response.output_text.delta",
            item_id="msg_1",
            output_index=1,
            content_index=0,
            delta=token,
            logprobs=[],
        )
        for token in tokens
    ]
    out = 1
    for call_id, name, pieces in tools:
        out += 1
        item = {"type": "function_call", "id": f"fc_{out}", "call_id": call_id, "name": name}
        frames.append(event("response.output_item.added", output_index=out, item=item))
        frames += [
            event(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=out,
                delta=piece,
            )
            for piece in pieces
        ]
        done = {**item, "arguments": "".join(pieces), "status": "completed"}
        frames.append(event("response.output_item.done", output_index=out, item=done))
    if status is not None:
        final = {
            **response,
            "status": status,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "usage": {
                "input_tokens": usage[0],
                "output_tokens": usage[1],
                "total_tokens": sum(usage),
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 2},
            },
        }
        kind = "response.completed" if status == "completed" else f"response.{status}"
        frames.append(event(kind, response=final))
    return frames


def anthropic_frames(
    tokens: Iterable[str],
    *,
    thinking: Sequence[str] = (),
    tools: Sequence[tuple[str, str, Sequence[str]]] = (),
    stop: str | None = "end_turn",
    usage: tuple[int, int] = (13, 6),
    model: str = "fake-claude",
) -> list[bytes]:
    """A Messages stream; ``stop`` None: it ends before ``message_stop``."""

    def event(kind: str, **fields: Any) -> bytes:
        return sse({"type": kind, **fields}, event=kind)

    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": usage[0], "output_tokens": 1},
    }
    frames = [event("message_start", message=message), event("ping")]
    index = 0
    if thinking:
        block = {"type": "thinking", "thinking": "", "signature": ""}
        frames.append(event("content_block_start", index=index, content_block=block))
        for piece in thinking:
            delta = {"type": "thinking_delta", "thinking": piece}
            frames.append(event("content_block_delta", index=index, delta=delta))
        delta = {"type": "signature_delta", "signature": "sig-1"}
        frames.append(event("content_block_delta", index=index, delta=delta))
        frames.append(event("content_block_stop", index=index))
        index += 1
    frames.append(
        event("content_block_start", index=index, content_block={"type": "text", "text": ""})
    )
    for token in tokens:
        delta = {"type": "text_delta", "text": token}
        frames.append(event("content_block_delta", index=index, delta=delta))
    frames.append(event("content_block_stop", index=index))
    for call_id, name, pieces in tools:
        index += 1
        block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
        frames.append(event("content_block_start", index=index, content_block=block))
        for piece in pieces:
            delta = {"type": "input_json_delta", "partial_json": piece}
            frames.append(event("content_block_delta", index=index, delta=delta))
        frames.append(event("content_block_stop", index=index))
    if stop is not None:
        delta = {"stop_reason": stop, "stop_sequence": None}
        frames.append(event("message_delta", delta=delta, usage={"output_tokens": usage[1]}))
        frames.append(event("message_stop"))
    return frames
