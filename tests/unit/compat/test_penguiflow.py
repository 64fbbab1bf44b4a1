"""Node functions written exactly as for penguiflow run unchanged (icefloe.compat.penguiflow).

Only the import line differs from a penguiflow program: the node bodies use
penguiflow's ``ctx.emit_chunk(parent=, text=, stream_id=, seq=, done=, meta=)``,
its return-a-value-to-send style, and bare (non-Message) values between nodes.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from icefloe.compat.penguiflow import BARE_KEY, Headers, Message, Node, StreamChunk, create


@dataclass
class WM:  # a penguiflow-style working-memory value, not a Message
    query: str
    facts: list[str] = field(default_factory=list)


# ---- node functions, written for penguiflow (bodies unchanged) -------------


async def tokenize(message: Message, ctx) -> None:
    for i, word in enumerate(message.payload.split()):
        chunk = await ctx.emit_chunk(parent=message, text=word + " ", meta={"i": i})
        assert isinstance(chunk, StreamChunk)
        assert chunk.seq == i
    await ctx.emit_chunk(parent=message, text="", done=True)


async def shout(message: Message, ctx) -> None:
    chunk = message.payload
    await ctx.emit_chunk(
        parent=message,
        text=chunk.text.upper(),
        stream_id=chunk.stream_id,
        seq=chunk.seq,
        done=chunk.done,
        meta=chunk.meta,
    )


async def plan(message: Message, ctx) -> WM:
    return WM(query=message.payload)


async def retrieve(wm: WM, ctx) -> WM:
    wm.facts.append(f"fact about {wm.query}")
    return wm


async def answer(wm: WM, ctx) -> Message:
    return Message(payload={"answer": wm.facts}, headers=Headers(tenant="acme"))


# ---------------------------------------------------------------------------


async def test_emit_chunk_streams_through_a_pipeline() -> None:
    tok, up = Node(tokenize, name="tok"), Node(shout, name="shout")
    flow = create(tok.to(up), up.to())
    async with flow, asyncio.timeout(10):
        message = Message(payload="hello penguin world", headers=Headers(tenant="acme"))
        chunks = [c async for c in flow.stream(message)]
    assert [c.text for c in chunks] == ["HELLO ", "PENGUIN ", "WORLD ", ""]
    assert [c.seq for c in chunks] == [0, 1, 2, 3]
    assert [c.meta for c in chunks] == [{"i": 0}, {"i": 1}, {"i": 2}, {}]
    assert {c.stream_id for c in chunks} == {message.trace_id}


async def test_returned_and_bare_values_travel_as_in_penguiflow() -> None:
    p, r, a = Node(plan), Node(retrieve), Node(answer)
    flow = create(p.to(r), r.to(a), a.to())
    async with flow, asyncio.timeout(10):
        await flow.emit(Message(payload="krill", headers=Headers(tenant="acme")))
        out = await flow.fetch()
    assert out.payload == {"answer": ["fact about krill"]}
    assert BARE_KEY not in out.meta


async def test_a_bare_value_reaching_the_egress_is_carried_by_a_message() -> None:
    flow = create(Node(plan).to())
    async with flow, asyncio.timeout(10):
        await flow.emit(Message(payload="squid", headers=Headers(tenant="acme"), meta={"k": 1}))
        out = await flow.fetch()
    assert out.payload == WM(query="squid")
    assert out.meta == {"k": 1, BARE_KEY: True}


async def test_a_penguiflow_node_serves_sse_unchanged(serve: Any) -> None:
    flow = create(Node(tokenize).to())
    async with serve(flow) as base, httpx.AsyncClient(base_url=base) as client:
        async with asyncio.timeout(10):
            started = await client.post(
                "/v1/streams", json={"payload": "one two", "headers": {"tenant": "acme"}}
            )
            sid = started.json()["stream_id"]
            async with client.stream("GET", f"/v1/streams/{sid}") as response:
                texts = [
                    json.loads(line[5:])["text"]
                    async for line in response.aiter_lines()
                    if line.startswith("data:")
                ]
    assert texts == ["one ", "two ", ""]
