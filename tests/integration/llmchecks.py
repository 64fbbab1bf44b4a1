"""Checks every LLM adapter test makes the same way, whatever the provider.

The adapters share their emitting side (:mod:`icefloe.llm.relay`), so what a
reader sees of backpressure, cancellation and provider failures is the same
for each; these helpers state it once. A flow here is one whose node streams
from ``fake`` (tests/llmservers.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from icefloe import ErrorCode, Flow, Headers, Message, StreamChunk, StreamError
from llmservers import SseTestServer, collect

__all__ = [
    "ask",
    "assert_cancelled",
    "assert_cancelling_closes_the_provider",
    "assert_closed_within_100_ms",
    "assert_ended_with",
    "assert_leaving_closes_the_provider",
    "assert_the_reader_holds_the_provider",
    "tool_parts",
]


def ask(text: str = "hi") -> Message:
    return Message(payload=text, headers=Headers(tenant="acme"))


def tool_parts(
    call_id: str, name: str, deltas: Sequence[str], arguments: dict[str, Any]
) -> list[dict[str, Any]]:
    """The chunk ``data`` of one tool call: its argument deltas, then its parsed input."""
    parts: list[dict[str, Any]] = [
        {"type": "tool-input-delta", "id": call_id, "name": name, "delta": delta}
        for delta in deltas
    ]
    parts.append({"type": "tool-input-available", "id": call_id, "name": name, "input": arguments})
    return parts


async def assert_the_reader_holds_the_provider(
    flow: Flow, fake: SseTestServer, tokens: list[str], total: int
) -> None:
    """A reader that stops holds the provider back; once it reads on, every token comes."""
    reader = flow.stream(ask())
    first = await anext(aiter(reader))
    async with asyncio.timeout(30):
        held = await fake.held_back()  # the reader holds: the provider cannot write
    assert held < total / 2, (held, total)
    rest, error = await collect(reader)
    assert error is None
    assert fake.written == total  # it went on once the reader did
    assert [c.text for c in [first, *rest] if c.text] == tokens


async def assert_leaving_closes_the_provider(flow: Flow, fake: SseTestServer) -> None:
    """A reader leaving after 5 chunks closes the provider connection within 100 ms."""
    loop = asyncio.get_running_loop()
    seen = 0
    async for _chunk in flow.stream(ask()):
        seen += 1
        if seen == 5:
            break  # leaving a flow.stream loop early cancels the run
    await assert_closed_within_100_ms(fake, loop.time())


async def assert_cancelling_closes_the_provider(flow: Flow, fake: SseTestServer) -> None:
    """Cancelling a stream whose adapter waits in emit_chunk closes the provider within 100 ms."""
    loop = asyncio.get_running_loop()
    reader = flow.stream(ask())
    await anext(aiter(reader))
    async with asyncio.timeout(30):
        await fake.held_back()  # the adapter waits in emit_chunk
    flow.cancel(reader.stream_id)
    await assert_closed_within_100_ms(fake, loop.time())
    _, error = await collect(reader)
    assert_cancelled(error)


async def assert_closed_within_100_ms(fake: SseTestServer, since: float) -> None:
    """The provider saw its connection closed within 100 ms of ``since`` (``loop.time()``)."""
    async with asyncio.timeout(5):
        await fake.disconnected.wait()
    assert fake.disconnected_at is not None
    assert fake.disconnected_at - since < 0.1


def assert_cancelled(error: StreamError | None) -> None:
    assert error is not None
    assert error.code is ErrorCode.CANCELLED


def assert_ended_with(
    chunks: list[StreamChunk], error: StreamError | None, code: ErrorCode, message: str
) -> None:
    """The stream failed with ``code`` and a ``message`` that keeps the provider's text out."""
    assert error is not None
    assert error.code is code
    assert message in error.message
    assert "secret" not in error.message
    assert not any(c.done for c in chunks)
