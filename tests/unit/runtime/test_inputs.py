"""Interactive input: flow.send_input reaches the running node through ctx.inputs()."""

from __future__ import annotations

import asyncio

import pytest
from flowkit import MakeFlow

from icefloe import Context, Headers, Limits, Message, Node, StreamClosedError
from icefloe.exceptions import StreamNotFound, WouldBlock

H = Headers(tenant="t")


async def echo_until_stop(msg: Message, ctx: Context) -> None:
    """Streams "tick" until told otherwise; echoes each input in upper case."""
    inputs = ctx.inputs(parent=msg)
    await ctx.emit_chunk(parent=msg, text="ready")
    async for data in inputs:
        if data == "stop":
            break
        await ctx.emit_chunk(parent=msg, text=str(data).upper())
    await ctx.emit_chunk(parent=msg, text="", done=True)


async def test_input_changes_what_the_node_emits(make_flow: MakeFlow) -> None:
    flow = make_flow(Node(echo_until_stop, name="echo").to())
    sid = await flow.start(Message("go", H))
    reader = flow.subscribe(sid)
    async with asyncio.timeout(10):
        assert (await anext(reader)).text == "ready"
        flow.send_input(sid, "hello")
        assert (await anext(reader)).text == "HELLO"
        flow.send_input(sid, {"pick": 2})
        assert (await anext(reader)).text == "{'PICK': 2}"
        flow.send_input(sid, "stop")
        assert [c.text async for c in reader] == [""]


async def test_input_to_an_ended_or_unknown_stream_is_refused(make_flow: MakeFlow) -> None:
    flow = make_flow(Node(echo_until_stop, name="echo").to())
    sid = await flow.start(Message("go", H), history=8)
    reader = flow.subscribe(sid)
    async with asyncio.timeout(10):
        await anext(reader)
        flow.send_input(sid, "stop")
        assert [c.text async for c in reader] == [""]
    with pytest.raises(StreamClosedError):
        flow.send_input(sid, "late")
    with pytest.raises(StreamNotFound, match="no stream 'no-such-stream'") as info:
        flow.send_input("no-such-stream", "x")
    assert isinstance(info.value, KeyError)
    assert info.value.stream_id == "no-such-stream"


async def test_inputs_are_bounded_and_never_make_the_sender_wait(make_flow: MakeFlow) -> None:
    gate, opened = asyncio.Event(), asyncio.Event()

    async def slow_reader(msg: Message, ctx: Context) -> None:
        inputs = ctx.inputs(parent=msg)
        opened.set()
        await gate.wait()
        got = [inputs.get_nowait() for _ in range(len(inputs))]
        await ctx.emit_chunk(parent=msg, text=",".join(got), done=True)

    flow = make_flow(Node(slow_reader, name="slow").to(), limits=Limits(stream_inputs=3))
    sid = await flow.start(Message("go", H))
    reader = flow.subscribe(sid)
    async with asyncio.timeout(10):
        await opened.wait()  # the node opened its inputs
        for text in "abc":
            flow.send_input(sid, text)
        with pytest.raises(WouldBlock):
            flow.send_input(sid, "d")
        gate.set()
        assert [c.text async for c in reader] == ["a,b,c"]


async def test_a_cancelled_stream_ends_the_inputs_iterator(make_flow: MakeFlow) -> None:
    ended, opened = asyncio.Event(), asyncio.Event()

    async def listener(msg: Message, ctx: Context) -> None:
        inputs = ctx.inputs(parent=msg)
        opened.set()
        try:
            async for _ in inputs:
                pass
        finally:
            ended.set()

    flow = make_flow(Node(listener, name="listener").to())
    sid = await flow.start(Message("go", H))
    async with asyncio.timeout(10):
        await opened.wait()  # the node opened its inputs
        flow.cancel(sid)
        await ended.wait()
