"""An LLM adapter behind ``POST /v1/chat``, read by the real AI SDK in Node.

The chain, each link real: a fake OpenAI server (tests/llmservers.py) on a
socket, the openai SDK, ``icefloe.llm.openai.stream_chat`` in the node of
examples/openai_chat_ui.py (no glue between the adapter's chunks and the
edge), the HTTP edge, and the ``ai`` package's ``DefaultChatTransport`` and
``readUIMessageStream`` (tests/js/ai_sdk_llm.mjs). The Responses and
Anthropic adapters are checked at the wire (the parts, with httpx).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import httpx
import openai
import pytest

from icefloe import Context, Message, Node, create
from icefloe.core.sse import SseParser
from icefloe.llm.anthropic import stream_messages
from icefloe.llm.openai import stream_chat, stream_responses
from icefloe.llm.parts import step_part, tool_output_part
from jskit import JS_DIR, ROOT, check_node, load, run_node
from llmservers import (
    Plan,
    SseTestServer,
    anthropic_frames,
    chat_frames,
    fake_provider,
    responses_frames,
)
from ports import free_port

pytestmark = pytest.mark.timeout(120)

Serve = Any  # the serve fixture of conftest.py: serve(flow, settings=None) -> url

QUESTION = "What is the weather in Oslo?"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
REASONING = ["The user wants ", "the weather."]
ARGUMENTS = ['{"city":', ' "Oslo"}']
USAGE = {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}


def token(i: int) -> str:
    # Awkward on purpose: a newline, quotes, an SSE-looking "data:", non-ASCII.
    return f'w{i} é"\n data: {i % 5} '


def frames(tokens: Sequence[str]) -> list[bytes]:
    """Reasoning, the text, a weather call, finish ``tool_calls``, usage 7 + 3."""
    return chat_frames(
        tokens,
        reasoning=REASONING,
        tools=[("call_1", "weather", ARGUMENTS)],
        finish="tool_calls",
        usage=(7, 3),
    )


def expected(tokens: Sequence[str], **extra: Any) -> str:
    """What the page must show (the JSON the Node script checks against)."""
    return json.dumps(
        {
            "question": QUESTION,
            "kinds": ["step-start", "reasoning", "text", "tool-weather"],
            "reasoning": "".join(REASONING),
            "text": "".join(tokens),
            "tool": {"name": "weather", "id": "call_1", "input": {"city": "Oslo"}},
            "usage": USAGE,
            "finishReason": "tool-calls",
            **extra,
        }
    )


@asynccontextmanager
async def chat_edge(serve: Serve, plan: Plan) -> AsyncIterator[tuple[SseTestServer, str]]:
    """The fake provider, and the URL of an edge serving the example's flow on it."""
    example = load(ROOT / "examples" / "openai_chat_ui.py")
    async with fake_provider(plan) as fake:
        sdk = openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="k", max_retries=0)
        flow = example.build_flow(sdk, "fake-model", tools=[WEATHER_TOOL])
        async with sdk, serve(flow) as url:
            yield fake, url


def the_request_was_the_conversation(fake: SseTestServer) -> None:
    path, body = fake.requests[0]
    assert path == "/v1/chat/completions"
    assert body["messages"] == [{"role": "user", "content": QUESTION}]
    assert body["tools"] == [WEATHER_TOOL]
    assert body["stream"] is True


async def test_use_chat_shows_the_adapters_reasoning_tool_call_text_and_usage(
    serve: Serve,
) -> None:
    check_node()
    tokens = [token(i) for i in range(20)]
    async with chat_edge(serve, Plan(frames=frames(tokens))) as (fake, url):
        out = await run_node(JS_DIR / "ai_sdk_llm.mjs", url, "full", expected(tokens))
    the_request_was_the_conversation(fake)
    got = json.loads(out.strip().splitlines()[-1])
    # Beyond what the script checked: the metadata is the done chunk's whole meta.
    assert got["message"]["metadata"] == {
        "provider": "openai",
        "model": "fake-model",
        "finish_reason": "tool-calls",
        "provider_finish_reason": "tool_calls",
        "usage": USAGE,
    }
    assert got["finish"]["messageMetadata"] == got["message"]["metadata"]


async def test_a_page_that_goes_away_resumes_the_adapters_reply_whole(serve: Serve) -> None:
    check_node()
    tokens = [token(i) for i in range(200)]
    plan = Plan(frames=frames(tokens), delay_s=0.01)  # 2 s of reply: the resume comes mid-way
    async with chat_edge(serve, plan) as (fake, url):
        out = await run_node(
            JS_DIR / "ai_sdk_llm.mjs", url, "resume", expected(tokens, abortAfter=20)
        )
    got = json.loads(out.strip().splitlines()[-1])
    print(
        f"adapter resume: {got['deltasBeforeAbort']} deltas before the abort, "
        f"resumed reply read in {got['resumeMs']} ms",
        file=sys.stderr,
    )
    assert got["deltasBeforeAbort"] >= 20
    assert len(fake.requests) == 1  # the resume replays the run: the model is not asked again


async def test_a_stop_closes_the_providers_response_and_ends_the_reply(serve: Serve) -> None:
    plan = Plan(frames=frames([token(i) for i in range(2000)]), delay_s=0.005)
    body = {
        "id": "chat-stop",
        "messages": [{"role": "user", "parts": [{"type": "text", "text": QUESTION}]}],
    }
    async with (
        chat_edge(serve, plan) as (fake, url),
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        parser = SseParser()
        parts: list[Any] = []
        async with http.stream("POST", "/v1/chat", json=body) as r:
            assert r.status_code == 200
            chunks = r.aiter_bytes()
            while sum(isinstance(p, dict) and p["type"] == "text-delta" for p in parts) < 5:
                parser.feed_data(await anext(chunks))
                parts += [
                    ev.data if ev.data == "[DONE]" else json.loads(ev.data)
                    for ev in parser.events_received()
                ]
            loop = asyncio.get_running_loop()
            asked = loop.time()
            stopped = await http.delete("/v1/chat/chat-stop/stream")
            assert stopped.json()["state"] == "cancelled"
            async with asyncio.timeout(5):
                await fake.disconnected.wait()
            async for data in chunks:
                parser.feed_data(data)
            parts += [
                ev.data if ev.data == "[DONE]" else json.loads(ev.data)
                for ev in parser.events_received()
            ]
    assert fake.disconnected_at is not None
    closed_ms = (fake.disconnected_at - asked) * 1000
    print(
        f"adapter stop: provider response closed {closed_ms:.1f} ms after DELETE", file=sys.stderr
    )
    assert closed_ms < 100
    assert parts[-3:] == [
        {"type": "text-end", "id": parts[-3]["id"]},
        {"type": "abort", "reason": "cancelled"},
        "[DONE]",
    ]


def test_the_example_sends_the_text_of_the_ui_messages() -> None:
    chat_messages = load(ROOT / "examples" / "openai_chat_ui.py").chat_messages
    ui = [
        {"role": "system", "parts": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "parts": [{"type": "reasoning", "text": "x"}, {"type": "step-start"}],
        },
        {
            "role": "assistant",
            "parts": [{"type": "tool-f", "input": {}}, {"type": "text", "text": "c"}],
        },
        {"role": "tool", "parts": [{"type": "text", "text": "not a UI role"}]},
        "not a message",
    ]
    assert chat_messages(ui) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "ab"},
        {"role": "assistant", "content": "c"},
    ]
    assert chat_messages("not a list") == []


async def test_a_provider_429_reaches_use_chat_as_an_error_part(serve: Serve) -> None:
    plan = Plan(status=429, error={"error": {"message": "slow down", "type": "requests"}})
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": QUESTION}]}
    parser = SseParser()
    async with (
        chat_edge(serve, plan) as (_, url),
        httpx.AsyncClient(base_url=url, timeout=30) as http,
        http.stream("POST", "/v1/chat", json={"id": "c", "messages": [user]}) as r,
    ):
        async for data in r.aiter_bytes():
            parser.feed_data(data)
    events = [ev.data for ev in parser.events_received()]
    assert [json.loads(e) for e in events[-3:-1]] == [
        {"type": "error", "errorText": "rate_limited: node 'llm' failed: openai answered HTTP 429"},
        {"type": "finish", "finishReason": "error"},
    ]
    assert events[-1] == "[DONE]"


async def listening(port: int) -> None:
    """Return once 127.0.0.1:``port`` accepts a connection (the caller bounds the wait)."""
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)  # polling a port: nothing to wait on instead
            continue
        writer.close()
        await writer.wait_closed()
        return


async def test_the_example_serves_use_chat_from_the_url_in_its_environment() -> None:
    # The example as its docstring runs it: a process of its own, on PORT.
    tokens = ["Cold", " and", " clear."]
    async with fake_provider(Plan(frames=frames(tokens))) as fake:
        port = free_port()
        env = {
            **os.environ,
            "OPENAI_BASE_URL": f"{fake.url}/v1",
            "OPENAI_API_KEY": "test-key",
            "OPENAI_MODEL": "my-model",
            "PORT": str(port),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "examples" / "openai_chat_ui.py"),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(30):
                banner = (await proc.stdout.readline()).decode()
                assert f"http://127.0.0.1:{port}/v1/chat (my-model)" in banner
                await listening(port)  # the banner comes before uvicorn binds
                user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": QUESTION}]}
                parser = SseParser()
                async with (
                    httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
                    http.stream("POST", "/v1/chat", json={"id": "c", "messages": [user]}) as r,
                ):
                    async for data in r.aiter_bytes():
                        parser.feed_data(data)
        finally:
            proc.terminate()
            await proc.wait()
    parts = [json.loads(ev.data) for ev in parser.events_received() if ev.data != "[DONE]"]
    deltas = dict.fromkeys(("text", "reasoning"), "")
    for p in parts:
        kind = p["type"].removesuffix("-delta")
        if kind in deltas:
            deltas[kind] += p["delta"]
    assert deltas == {"text": "Cold and clear.", "reasoning": "".join(REASONING)}
    tool = next(p for p in parts if p["type"] == "tool-input-available")
    assert (tool["toolName"], tool["input"]) == ("weather", {"city": "Oslo"})
    assert parts[-1]["finishReason"] == "tool-calls"
    assert parts[-1]["messageMetadata"]["usage"] == USAGE
    ((_, body),) = fake.requests
    assert body["model"] == "my-model"
    assert body["messages"] == [{"role": "user", "content": QUESTION}]


def responses_flow(client: openai.AsyncOpenAI) -> Any:
    async def llm(msg: Message, ctx: Context) -> None:
        await stream_responses(client, ctx, parent=msg, model="fake-model", input="hi")

    return create(Node(llm, name="llm").to())


def messages_flow(client: anthropic.AsyncAnthropic) -> Any:
    async def llm(msg: Message, ctx: Context) -> None:
        messages = [{"role": "user", "content": "hi"}]
        await stream_messages(
            client, ctx, parent=msg, model="fake-claude", max_tokens=64, messages=messages
        )

    return create(Node(llm, name="llm").to())


@pytest.mark.parametrize("provider", ["responses", "anthropic"])
async def test_the_other_adapters_map_the_same_way(serve: Serve, provider: str) -> None:
    # The Responses API and Anthropic Messages: reasoning, text, a tool call.
    call = ("call_1", "weather", ARGUMENTS)
    sdk: Any
    if provider == "responses":
        plan = Plan(frames=responses_frames(["Cold."], reasoning=REASONING, tools=[call]))
    else:
        plan = Plan(
            frames=anthropic_frames(["Cold."], thinking=REASONING, tools=[call], stop="tool_use")
        )
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": QUESTION}]}
    parser = SseParser()
    async with fake_provider(plan) as fake:
        if provider == "responses":
            sdk = openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="k", max_retries=0)
            flow = responses_flow(sdk)
        else:
            sdk = anthropic.AsyncAnthropic(base_url=fake.url, api_key="k", max_retries=0)
            flow = messages_flow(sdk)
        async with (
            sdk,
            serve(flow) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as http,
            http.stream("POST", "/v1/chat", json={"id": "c", "messages": [user]}) as r,
        ):
            async for data in r.aiter_bytes():
                parser.feed_data(data)
    parts = [json.loads(ev.data) for ev in parser.events_received() if ev.data != "[DONE]"]
    kinds = [p["type"] for p in parts]
    assert kinds == [
        "start",
        "start-step",
        "reasoning-start",
        *["reasoning-delta"] * len(REASONING),
        "reasoning-end",
        "text-start",
        "text-delta",
        "text-end",
        "tool-input-start",
        *["tool-input-delta"] * len(ARGUMENTS),
        "tool-input-available",
        "finish-step",
        "finish",
    ]
    assert "".join(p["delta"] for p in parts if p["type"] == "reasoning-delta") == "".join(
        REASONING
    )
    tool = parts[-3]
    assert (tool["toolCallId"], tool["toolName"], tool["input"]) == (
        "call_1",
        "weather",
        {"city": "Oslo"},
    )
    assert parts[-1]["finishReason"] == "tool-calls"
    assert parts[-1]["messageMetadata"]["usage"]["total_tokens"] > 0


async def test_a_tool_loop_node_shows_the_call_its_output_and_the_next_step(
    serve: Serve,
) -> None:
    # The node runs the model's tool itself and calls the model again on the
    # same stream: the AI SDK shows one message, the call answered, two steps.
    check_node()
    first = chat_frames([], tools=[("call_1", "weather", ARGUMENTS)], finish="tool_calls")
    second = chat_frames(["It is -3 °C."], usage=(20, 5))
    async with fake_provider(Plan(frames=first)) as fake:
        sdk = openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="k", max_retries=0)

        async def llm(msg: Message, ctx: Context) -> None:
            messages: list[Any] = [{"role": "user", "content": QUESTION}]
            reply = await stream_chat(
                sdk, ctx, parent=msg, model="fake-model", messages=messages, done=False
            )
            for call in reply.tool_calls:
                output = {"city": call.input["city"], "celsius": -3}
                await ctx.emit_chunk(parent=msg, text="", data=tool_output_part(call.id, output))
            await ctx.emit_chunk(parent=msg, text="", data=step_part())
            fake.plan = Plan(frames=second)  # what the model says once it has the result
            await stream_chat(sdk, ctx, parent=msg, model="fake-model", messages=messages)

        async with sdk, serve(create(Node(llm, name="llm").to())) as url:
            out = await run_node(JS_DIR / "ai_sdk_llm.mjs", url, "raw", expected([]))
    got = json.loads(out.strip().splitlines()[-1])
    message = got["message"]
    assert [p["type"] for p in message["parts"]] == [
        "step-start",
        "tool-weather",
        "step-start",
        "text",
    ]
    tool = message["parts"][1]
    assert tool["state"] == "output-available"
    assert tool["input"] == {"city": "Oslo"}
    assert tool["output"] == {"city": "Oslo", "celsius": -3}
    assert message["parts"][3]["text"] == "It is -3 °C."
    assert message["metadata"]["usage"] == {
        "input_tokens": 20,
        "output_tokens": 5,
        "total_tokens": 25,
    }
    assert got["finish"]["finishReason"] == "stop"
    assert len(fake.requests) == 2
