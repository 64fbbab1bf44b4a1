"""icefloe.llm.anthropic against the real anthropic SDK and a fake provider on a real socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import llmchecks
import pytest
from llmchecks import ask, tool_parts

from icefloe import ErrorCode, Flow, Message, Node, create
from icefloe.llm.anthropic import stream_messages
from llmservers import Plan, SseTestServer, anthropic_frames, collect, fake_provider, sse

pytestmark = pytest.mark.timeout(60)

WEATHER = ("toolu_1", "get_weather", ['{"city"', ': "Paris"}'])


@asynccontextmanager
async def llm_flow(
    plan: Plan, client_timeout: float = 10.0, **request: Any
) -> AsyncIterator[tuple[Flow, SseTestServer]]:
    """A flow whose one node streams a Messages call from a fake provider answering ``plan``."""
    async with fake_provider(plan) as fake:
        client = anthropic.AsyncAnthropic(
            base_url=fake.url, api_key="test-key", max_retries=0, timeout=client_timeout
        )
        async with client:

            async def llm(msg: Message, ctx: Any) -> None:
                await stream_messages(
                    client,
                    ctx,
                    parent=msg,
                    model="fake-claude",
                    max_tokens=100,
                    messages=[{"role": "user", "content": msg.payload}],
                    **request,
                )

            async with create(Node(llm, name="llm").to()) as flow:
                yield flow, fake


async def test_messages_maps_text_thinking_tool_use_usage_and_stop() -> None:
    frames = anthropic_frames(
        ["Hel", "lo"], thinking=["Let me ", "think"], tools=[WEATHER], stop="tool_use"
    )
    async with llm_flow(Plan(frames=frames)) as (flow, fake):
        chunks, error = await collect(flow.stream(ask()))
    assert error is None
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert "".join(c.text for c in chunks) == "Hello"
    assert [c.data for c in chunks if c.data is not None] == [
        {"type": "reasoning", "id": "reasoning-0", "delta": "Let me "},
        {"type": "reasoning", "id": "reasoning-0", "delta": "think"},
        *tool_parts(*WEATHER, {"city": "Paris"}),
    ]
    assert chunks[-1].done
    assert chunks[-1].meta == {
        "provider": "anthropic",
        "model": "fake-claude",
        "finish_reason": "tool-calls",
        "provider_finish_reason": "tool_use",
        "usage": {"input_tokens": 13, "output_tokens": 6, "total_tokens": 19},
    }
    path, body = fake.requests[0]
    assert path == "/v1/messages"
    assert body["stream"] is True


async def test_messages_returns_the_reply_with_its_thinking_signature() -> None:
    replies = []

    async def llm(msg: Message, ctx: Any) -> None:
        replies.append(
            await stream_messages(client, ctx, parent=msg, model="m", max_tokens=5, messages=[])
        )

    frames = anthropic_frames(["ok"], thinking=["hmm"], tools=[WEATHER], stop="max_tokens")
    async with fake_provider(Plan(frames=frames)) as fake:
        client = anthropic.AsyncAnthropic(base_url=fake.url, api_key="k", max_retries=0)
        async with client, create(Node(llm, name="llm").to()) as flow:
            chunks, error = await collect(flow.stream(ask()))
    assert error is None
    assert chunks[-1].meta["finish_reason"] == "length"
    (reply,) = replies
    assert (reply.text, reply.reasoning, reply.signatures) == ("ok", "hmm", ("sig-1",))
    assert reply.id == "msg_1"
    assert [(t.id, t.name, t.input) for t in reply.tool_calls] == [
        ("toolu_1", "get_weather", {"city": "Paris"})
    ]


async def test_a_stalled_reader_stops_the_adapter_reading_the_provider() -> None:
    tokens = [f"{i:05d}" + "x" * 1019 for i in range(2000)]
    frames = anthropic_frames(tokens)
    total = sum(map(len, frames))
    async with llm_flow(Plan(frames=frames), max_reply_chars=4_000_000) as (flow, fake):
        await llmchecks.assert_the_reader_holds_the_provider(flow, fake, tokens, total)


async def test_a_reader_leaving_closes_the_provider_connection_within_100_ms() -> None:
    plan = Plan(frames=anthropic_frames([f"t{i} " for i in range(500)]), delay_s=0.005)
    async with llm_flow(plan) as (flow, fake):
        await llmchecks.assert_leaving_closes_the_provider(flow, fake)


async def test_cancelling_a_backpressured_stream_closes_the_provider_within_100_ms() -> None:
    frames = anthropic_frames(["z" * 1024 for _ in range(2000)])
    async with llm_flow(Plan(frames=frames), max_reply_chars=4_000_000) as (flow, fake):
        await llmchecks.assert_cancelling_closes_the_provider(flow, fake)


def _error(kind: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": "secret account detail"}}


MIDWAY = anthropic_frames(["a"], stop=None)


@pytest.mark.parametrize(
    ("plan", "code", "message"),
    [
        (
            Plan(status=429, error=_error("rate_limit_error")),
            ErrorCode.RATE_LIMITED,
            "anthropic answered HTTP 429",
        ),
        (
            Plan(status=529, error=_error("overloaded_error")),
            ErrorCode.UNAVAILABLE,
            "anthropic answered HTTP 529",
        ),
        (
            Plan(status=500, error=_error("api_error")),
            ErrorCode.UNAVAILABLE,
            "anthropic answered HTTP 500",
        ),
        (
            Plan(status=400, error=_error("invalid_request_error")),
            ErrorCode.FAILED,
            "anthropic answered HTTP 400",
        ),
        (
            Plan(status=401, error=_error("authentication_error")),
            ErrorCode.FAILED,
            "anthropic answered HTTP 401",
        ),
        (
            Plan(frames=[*MIDWAY, sse(_error("overloaded_error"), event="error")]),
            ErrorCode.UNAVAILABLE,
            "anthropic stream error: overloaded_error",
        ),
        (
            Plan(frames=[*MIDWAY, sse(_error("rate_limit_error"), event="error")]),
            ErrorCode.RATE_LIMITED,
            "anthropic stream error: rate_limit_error",
        ),
        (
            Plan(frames=[*MIDWAY, sse(_error("invalid_request_error"), event="error")]),
            ErrorCode.FAILED,
            "anthropic stream error: invalid_request_error",
        ),
        (
            Plan(frames=[*MIDWAY, sse("{not json", event="content_block_delta")]),
            ErrorCode.FAILED,
            "anthropic: malformed stream",
        ),
        (Plan(frames=MIDWAY, then="drop"), ErrorCode.UNAVAILABLE, "anthropic: connection lost"),
        (
            Plan(frames=MIDWAY, then="end"),
            ErrorCode.UNAVAILABLE,
            "anthropic: the stream ended before its finish",
        ),
        (Plan(hang_first=True), ErrorCode.TIMEOUT, "no answer within the client's timeout"),
        (Plan(frames=MIDWAY, then="hang"), ErrorCode.TIMEOUT, "no answer within the client's"),
    ],
    ids=[
        "429",
        "529-overloaded",
        "500",
        "400",
        "401",
        "overloaded-event",
        "rate-limit-event",
        "invalid-request-event",
        "malformed",
        "drop",
        "truncated",
        "no-headers",
        "stalled-body",
    ],
)
async def test_provider_errors_end_the_stream_with_a_clear_code(
    plan: Plan, code: ErrorCode, message: str
) -> None:
    async with llm_flow(plan, client_timeout=0.5) as (flow, _):
        chunks, error = await collect(flow.stream(ask()))
    llmchecks.assert_ended_with(chunks, error, code, message)
