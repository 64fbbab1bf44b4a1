"""A burst of starts that fills an entry node's inbox (issue 16, docs/qos.md
"Start-up bursts"): the starts are admitted and run as room frees up; only a
start that finds no room for ``max_delay_s`` fails."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from icefloe import Context, Headers, Message, Node, StreamError
from icefloe.core.wire_errors import ErrorCode
from icefloe.runtime.flow import Flow
from icefloe.runtime.throttle import SheddingPolicy

MakeFlow = Callable[..., Flow]
TENANT = Headers(tenant="acme")


def gated(gate: asyncio.Event) -> Node:
    async def answer(msg: Message, ctx: Context) -> None:
        await gate.wait()
        await ctx.emit_chunk(parent=msg, text=f"r{msg.payload}", done=True)

    return Node(answer, name="answer")


async def text_of(flow: Flow, stream_id: str) -> str:
    return "".join([chunk.text async for chunk in flow.subscribe(stream_id)])


async def test_a_burst_past_the_ingress_inbox_is_admitted_and_runs(make_flow: MakeFlow) -> None:
    gate = asyncio.Event()
    flow = make_flow(gated(gate).to(), queue_maxsize=4)
    async with asyncio.timeout(10):
        # Five times the inbox, while the node is still busy with the first.
        ids = [await flow.start(Message(i, TENANT), history=4) for i in range(20)]
        gate.set()
        texts = await asyncio.gather(*(text_of(flow, sid) for sid in ids))
    assert texts == [f"r{i}" for i in range(20)]


async def test_a_start_that_never_finds_room_fails_overloaded(make_flow: MakeFlow) -> None:
    gate = asyncio.Event()  # never set: the inbox stays full
    flow = make_flow(gated(gate).to(), queue_maxsize=1, shedding=SheddingPolicy(max_delay_s=0.2))
    async with asyncio.timeout(10):
        await flow.start(Message(0, TENANT))  # taken by the node, which waits
        await flow.start(Message(1, TENANT))  # fills the inbox
        late = await flow.start(Message(2, TENANT))
        with pytest.raises(StreamError) as info:
            await text_of(flow, late)
    assert info.value.code is ErrorCode.OVERLOADED


async def test_with_shedding_off_a_burst_is_admitted_too(make_flow: MakeFlow) -> None:
    gate = asyncio.Event()
    flow = make_flow(gated(gate).to(), queue_maxsize=1, congestion=None)
    async with asyncio.timeout(10):
        ids = [await flow.start(Message(i, TENANT), history=4) for i in range(5)]
        gate.set()
        texts = await asyncio.gather(*(text_of(flow, sid) for sid in ids))
    assert texts == [f"r{i}" for i in range(5)]
