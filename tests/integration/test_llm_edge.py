"""An LLM adapter behind the HTTP edge: DELETE closes the provider's response, codes reach SSE."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest

from icefloe import ErrorCode, Flow, Message, Node, create
from icefloe.core.sse import SseParser
from icefloe.llm.openai import stream_chat
from llmservers import Plan, SseTestServer, chat_frames, fake_provider

pytestmark = pytest.mark.timeout(60)

Serve = Any  # the serve fixture of conftest.py: serve(flow, settings=None) -> url
RUN = {"payload": "hi", "headers": {"tenant": "acme"}}


def adapter_flow(client: openai.AsyncOpenAI) -> Flow:
    async def llm(msg: Message, ctx: Any) -> None:
        messages = [{"role": "user", "content": msg.payload}]
        await stream_chat(client, ctx, parent=msg, model="fake-model", messages=messages)

    return create(Node(llm, name="llm").to())


@asynccontextmanager
async def edge(serve: Serve, plan: Plan) -> AsyncIterator[tuple[SseTestServer, httpx.AsyncClient]]:
    """The fake provider, and an HTTP client of an edge serving a flow that streams from it."""
    async with fake_provider(plan) as fake:
        sdk = openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="k", max_retries=0)
        async with sdk, serve(adapter_flow(sdk)) as url, httpx.AsyncClient(base_url=url) as http:
            yield fake, http


async def read_sse(client: httpx.AsyncClient, sid: str) -> list[tuple[str | None, Any]]:
    """Every (event, data) of one SSE response, to its end."""
    parser = SseParser()
    events: list[tuple[str | None, Any]] = []
    async with client.stream("GET", f"/v1/streams/{sid}") as r:
        assert r.status_code == 200
        async for data in r.aiter_bytes():
            parser.feed_data(data)
            events += [(ev.event, json.loads(ev.data)) for ev in parser.events_received()]
    return events


async def test_deleting_a_run_closes_the_provider_response_within_100_ms(serve: Serve) -> None:
    plan = Plan(frames=chat_frames([f"t{i} " for i in range(2000)]), delay_s=0.005)
    async with edge(serve, plan) as (fake, http):
        r = await http.post("/v1/streams", json=RUN)
        assert r.status_code == 201, r.text
        sid = r.json()["stream_id"]
        async with asyncio.timeout(10):
            while fake.written < 1000:  # the provider is streaming
                await asyncio.sleep(0.005)
        loop = asyncio.get_running_loop()
        asked = loop.time()
        r = await http.delete(f"/v1/streams/{sid}")
        assert r.json()["state"] == ErrorCode.CANCELLED.value
        async with asyncio.timeout(5):
            await fake.disconnected.wait()
        assert fake.disconnected_at is not None
        assert fake.disconnected_at - asked < 0.1


async def test_parts_and_the_done_meta_reach_an_sse_reader(serve: Serve) -> None:
    frames = chat_frames(["Hi"], reasoning=["hm"], tools=[("c1", "f", ["{}"])], finish="tool_calls")
    async with edge(serve, Plan(frames=frames)) as (_, http):
        sid = (await http.post("/v1/streams", json=RUN)).json()["stream_id"]
        events = await read_sse(http, sid)
    chunks = [data for event, data in events if event == "chunk"]
    assert [c.get("data") for c in chunks if c.get("data")] == [
        {"type": "reasoning", "id": "reasoning-0", "delta": "hm"},
        {"type": "tool-input-delta", "id": "c1", "name": "f", "delta": "{}"},
        {"type": "tool-input-available", "id": "c1", "name": "f", "input": {}},
    ]
    done = [data for event, data in events if event == "end"]  # the done chunk
    assert len(done) == 1
    assert done[0]["meta"]["finish_reason"] == "tool-calls"
    assert done[0]["meta"]["usage"] == {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}


async def test_a_provider_429_reaches_an_sse_reader_as_rate_limited(serve: Serve) -> None:
    plan = Plan(status=429, error={"error": {"message": "slow down", "type": "requests"}})
    async with edge(serve, plan) as (_, http):
        sid = (await http.post("/v1/streams", json=RUN)).json()["stream_id"]
        events = await read_sse(http, sid)
    errors = [data for event, data in events if event == "error"]
    assert len(errors) == 1
    assert errors[0]["code"] == ErrorCode.RATE_LIMITED.value
    assert "openai answered HTTP 429" in errors[0]["message"]
