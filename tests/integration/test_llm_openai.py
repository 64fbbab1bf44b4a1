"""icefloe.llm.openai against the real openai SDK and a fake provider on a real socket.

The fake (tests/llmservers.py) speaks the Chat Completions and Responses SSE
framing; the SDK is pointed at it with ``base_url``, as at any
OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import llmchecks
import openai
import pytest
from llmchecks import ask, tool_parts

from icefloe import ErrorCode, Flow, Message, Node, create
from icefloe.llm.openai import stream_chat, stream_responses
from llmservers import (
    Plan,
    SseTestServer,
    chat_frames,
    collect,
    fake_provider,
    responses_frames,
    sse,
)

pytestmark = pytest.mark.timeout(60)

Adapter = Callable[..., Any]
WEATHER = ("call_1", "get_weather", ['{"city": ', '"Paris"}'])
#: the smallest request each adapter's SDK call takes
REQUEST: dict[Adapter, dict[str, Any]] = {
    stream_chat: {"messages": []},
    stream_responses: {"input": "hi"},
}


@asynccontextmanager
async def llm_flow(
    plan: Plan, adapter: Adapter = stream_chat, client_timeout: float = 10.0, **request: Any
) -> AsyncIterator[tuple[Flow, SseTestServer]]:
    """A flow whose one node streams ``adapter`` from a fake provider answering ``plan``."""
    async with fake_provider(plan) as fake:
        client = openai.AsyncOpenAI(
            base_url=f"{fake.url}/v1", api_key="test-key", max_retries=0, timeout=client_timeout
        )
        async with client:

            async def llm(msg: Message, ctx: Any) -> None:
                await adapter(client, ctx, parent=msg, model="fake-model", **request)

            async with create(Node(llm, name="llm").to()) as flow:
                yield flow, fake


async def test_chat_maps_text_reasoning_tool_calls_usage_and_finish() -> None:
    frames = chat_frames(
        ["Hel", "lo"], reasoning=["Let me ", "think"], tools=[WEATHER], finish="tool_calls"
    )
    async with llm_flow(Plan(frames=frames), messages=[{"role": "user", "content": "hi"}]) as (
        flow,
        fake,
    ):
        chunks, error = await collect(flow.stream(ask()))
    assert error is None
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert "".join(c.text for c in chunks) == "Hello"
    assert [c.data for c in chunks if c.data is not None] == [
        {"type": "reasoning", "id": "reasoning-0", "delta": "Let me "},
        {"type": "reasoning", "id": "reasoning-0", "delta": "think"},
        *tool_parts(*WEATHER, {"city": "Paris"}),
    ]
    done = chunks[-1]
    assert done.done
    assert done.meta == {
        "provider": "openai",
        "model": "fake-model",
        "finish_reason": "tool-calls",
        "provider_finish_reason": "tool_calls",
        "usage": {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10},
    }
    path, body = fake.requests[0]
    assert path == "/v1/chat/completions"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_chat_returns_the_reply_and_can_leave_the_stream_open() -> None:
    replies = []

    async def two_turns(client: openai.AsyncOpenAI, ctx: Any, **kw: Any) -> None:
        # A tool loop: the first call leaves the stream open, the second ends it.
        replies.append(await stream_chat(client, ctx, done=False, **kw))
        replies.append(await stream_chat(client, ctx, **kw))

    frames = chat_frames(["a"], tools=[WEATHER], finish="tool_calls")
    async with llm_flow(Plan(frames=frames), two_turns, messages=[]) as (flow, _):
        chunks, error = await collect(flow.stream(ask()))
    assert error is None
    assert [c.done for c in chunks].count(True) == 1
    assert "".join(c.text for c in chunks) == "aa"
    first = replies[0]
    assert first.text == "a"
    assert first.finish_reason == "tool-calls"
    assert [(t.id, t.name, t.input) for t in first.tool_calls] == [
        ("call_1", "get_weather", {"city": "Paris"})
    ]


async def test_chat_tool_arguments_that_are_not_json_are_a_tool_input_error() -> None:
    frames = chat_frames([], tools=[("call_9", "f", ['{"x": '])], finish="tool_calls")
    async with llm_flow(Plan(frames=frames), messages=[]) as (flow, _):
        chunks, error = await collect(flow.stream(ask()))
    assert error is None
    assert chunks[-2].data == {
        "type": "tool-input-error",
        "id": "call_9",
        "name": "f",
        "input": '{"x": ',
        "error": "the tool arguments are not valid JSON",
    }


async def test_responses_maps_text_reasoning_tool_calls_usage_and_finish() -> None:
    frames = responses_frames(["Hi", " there"], reasoning=["hmm"], tools=[WEATHER])
    async with llm_flow(Plan(frames=frames), stream_responses, input="hi") as (flow, fake):
        chunks, error = await collect(flow.stream(ask()))
    assert error is None
    assert "".join(c.text for c in chunks) == "Hi there"
    assert [c.data for c in chunks if c.data is not None] == [
        {"type": "reasoning", "id": "rs_1", "delta": "hmm"},
        *tool_parts(*WEATHER, {"city": "Paris"}),
    ]
    assert chunks[-1].meta == {
        "provider": "openai",
        "model": "fake-model",
        "finish_reason": "tool-calls",
        "provider_finish_reason": "completed",
        "usage": {
            "input_tokens": 11,
            "output_tokens": 5,
            "total_tokens": 16,
            "reasoning_tokens": 2,
            "cached_input_tokens": 0,
        },
    }
    assert fake.requests[0][0] == "/v1/responses"


async def test_responses_incomplete_for_max_tokens_finishes_with_length() -> None:
    frames = responses_frames(["cut"], status="incomplete", incomplete="max_output_tokens")
    async with llm_flow(Plan(frames=frames), stream_responses, input="hi") as (flow, _):
        chunks, error = await collect(flow.stream(ask()))
    assert error is None
    assert chunks[-1].meta["finish_reason"] == "length"
    assert chunks[-1].meta["provider_finish_reason"] == "max_output_tokens"


# -- backpressure ------------------------------------------------------------------


@pytest.mark.parametrize("adapter", [stream_chat, stream_responses])
async def test_a_stalled_reader_stops_the_adapter_reading_the_provider(adapter: Adapter) -> None:
    # 2000 tokens of 1 KiB: far more than the socket buffers, the SDK's read and
    # the stream's window hold together, so the provider's writes must stall.
    tokens = [f"{i:05d}" + "x" * 1019 for i in range(2000)]
    make = chat_frames if adapter is stream_chat else responses_frames
    frames = make(tokens)
    total = sum(map(len, frames))
    request = {**REQUEST[adapter], "max_reply_chars": 4_000_000}
    async with llm_flow(Plan(frames=frames), adapter, **request) as (flow, fake):
        await llmchecks.assert_the_reader_holds_the_provider(flow, fake, tokens, total)


# -- cancellation -----------------------------------------------------------------


@pytest.mark.parametrize("adapter", [stream_chat, stream_responses])
async def test_a_reader_leaving_closes_the_provider_connection_within_100_ms(
    adapter: Adapter,
) -> None:
    make = chat_frames if adapter is stream_chat else responses_frames
    plan = Plan(frames=make([f"t{i} " for i in range(500)]), delay_s=0.005)
    async with llm_flow(plan, adapter, **REQUEST[adapter]) as (flow, fake):
        await llmchecks.assert_leaving_closes_the_provider(flow, fake)


async def test_cancelling_a_backpressured_stream_closes_the_provider_within_100_ms() -> None:
    tokens = ["y" * 1024 for _ in range(2000)]
    plan = Plan(frames=chat_frames(tokens))
    async with llm_flow(plan, messages=[], max_reply_chars=4_000_000) as (flow, fake):
        await llmchecks.assert_cancelling_closes_the_provider(flow, fake)


async def test_cancelling_before_the_provider_answers_closes_the_request() -> None:
    async with llm_flow(Plan(hang_first=True), messages=[]) as (flow, fake):
        loop = asyncio.get_running_loop()
        reader = flow.stream(ask())
        task = asyncio.ensure_future(collect(reader))
        async with asyncio.timeout(5):
            while not fake.requests:
                await asyncio.sleep(0.005)  # the request reaching a socket of its own
        flow.cancel(reader.stream_id)
        await llmchecks.assert_closed_within_100_ms(fake, loop.time())
        _, error = await task
        llmchecks.assert_cancelled(error)


# -- errors -----------------------------------------------------------------------

ERROR_BODY = {"error": {"message": "secret account detail", "type": "x", "code": None}}


@pytest.mark.parametrize(
    ("plan", "code", "message"),
    [
        (Plan(status=429, error=ERROR_BODY), ErrorCode.RATE_LIMITED, "openai answered HTTP 429"),
        (Plan(status=500, error=ERROR_BODY), ErrorCode.UNAVAILABLE, "openai answered HTTP 500"),
        (Plan(status=503, error=ERROR_BODY), ErrorCode.UNAVAILABLE, "openai answered HTTP 503"),
        (Plan(status=400, error=ERROR_BODY), ErrorCode.FAILED, "openai answered HTTP 400"),
        (Plan(status=401, error=ERROR_BODY), ErrorCode.FAILED, "openai answered HTTP 401"),
        (Plan(status=408, error=ERROR_BODY), ErrorCode.TIMEOUT, "openai answered HTTP 408"),
        (
            Plan(frames=[*chat_frames(["a"], finish=None, usage=None), sse("{not json")]),
            ErrorCode.FAILED,
            "openai: malformed stream",
        ),
        (
            Plan(frames=chat_frames(["a"], finish=None, usage=None), then="drop"),
            ErrorCode.UNAVAILABLE,
            "openai: connection lost",
        ),
        (
            Plan(frames=chat_frames(["a"], finish=None, usage=None), then="end"),
            ErrorCode.UNAVAILABLE,
            "openai: the stream ended before its finish",
        ),
        (
            Plan(
                frames=[
                    *chat_frames(["a"], finish=None, usage=None),
                    sse({"error": {"message": "x", "type": "server_error", "code": None}}),
                ]
            ),
            ErrorCode.UNAVAILABLE,
            "openai stream error: server_error",
        ),
        (
            Plan(
                frames=[
                    *chat_frames(["a"], finish=None, usage=None),
                    sse({"error": {"message": "x", "code": "rate_limit_exceeded"}}),
                ]
            ),
            ErrorCode.RATE_LIMITED,
            "openai stream error: rate_limit_exceeded",
        ),
        (Plan(hang_first=True), ErrorCode.TIMEOUT, "no answer within the client's timeout"),
        (
            Plan(frames=chat_frames(["a"], finish=None, usage=None), then="hang"),
            ErrorCode.TIMEOUT,
            "no answer within the client's timeout",
        ),
    ],
    ids=[
        "429",
        "500",
        "503",
        "400",
        "401",
        "408",
        "malformed",
        "drop",
        "truncated",
        "error-event",
        "rate-limit-event",
        "no-headers",
        "stalled-body",
    ],
)
async def test_chat_provider_errors_end_the_stream_with_a_clear_code(
    plan: Plan, code: ErrorCode, message: str
) -> None:
    async with llm_flow(plan, messages=[], client_timeout=0.5) as (flow, _):
        chunks, error = await collect(flow.stream(ask()))
    llmchecks.assert_ended_with(chunks, error, code, message)


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (
            [
                *responses_frames(["a"], status=None),
                sse(
                    {"type": "error", "code": "server_error", "message": "m", "sequence_number": 9},
                    event="error",
                ),
            ],
            ErrorCode.UNAVAILABLE,
        ),
        (responses_frames(["a"], status="failed"), ErrorCode.FAILED),
        (responses_frames(["a"], status=None), ErrorCode.UNAVAILABLE),
    ],
    ids=["error-event", "response-failed", "truncated"],
)
async def test_responses_provider_errors_end_the_stream_with_a_clear_code(
    frames: list[bytes], code: ErrorCode
) -> None:
    async with llm_flow(Plan(frames=frames), stream_responses, input="hi") as (flow, _):
        chunks, error = await collect(flow.stream(ask()))
    assert error is not None
    assert error.code is code
    assert "".join(c.text for c in chunks) == "a"


async def test_a_reply_past_max_reply_chars_ends_the_stream_too_large() -> None:
    plan = Plan(frames=chat_frames(["abcd"] * 10))
    async with llm_flow(plan, messages=[], max_reply_chars=10) as (flow, _):
        chunks, error = await collect(flow.stream(ask()))
    assert error is not None
    assert error.code is ErrorCode.TOO_LARGE
    assert "max_reply_chars=10" in error.message
    assert "".join(c.text for c in chunks) == "abcdabcd"


# -- the example ------------------------------------------------------------------

EXAMPLE = Path(__file__).parents[2] / "examples" / "openai_chat.py"


async def test_the_openai_chat_example_streams_from_the_url_in_its_environment() -> None:
    frames = chat_frames(["Hello", " from", " a", " fake"], usage=(4, 4))
    async with fake_provider(Plan(frames=frames)) as fake:
        env = {
            **os.environ,
            "OPENAI_BASE_URL": f"{fake.url}/v1",
            "OPENAI_API_KEY": "test-key",
            "OPENAI_MODEL": "my-model",
        }
        done = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLE),
            "what",
            "now?",
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(30):
            out, err = await done.communicate()
    assert done.returncode == 0, err.decode()
    text = out.decode()
    assert "Hello from a fake" in text
    assert "[stop; usage {'input_tokens': 4, 'output_tokens': 4, 'total_tokens': 8}]" in text
    ((path, body),) = fake.requests
    assert path == "/v1/chat/completions"
    assert body["model"] == "my-model"
    assert body["messages"] == [{"role": "user", "content": "what now?"}]
