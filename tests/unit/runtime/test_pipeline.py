"""Tests for chunk routing through multi-node flows: pipelines, fan-out, fan-in, concurrency."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from flowkit import MakeFlow, until

from icefloe import (
    Context,
    ErrorCode,
    Headers,
    Message,
    Node,
    NodePolicy,
    StreamChunk,
    StreamError,
)
from icefloe.runtime.node import NodeFunc

H = Headers(tenant="acme", topic="t", priority=3)


def source(n: int) -> NodeFunc:
    """A node that emits ``n`` chunks ``"t<i>"`` and the done chunk."""

    async def a(msg: Message, ctx: Context) -> None:
        for i in range(n):
            await ctx.emit_chunk(parent=msg, text=f"t{i}")
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return a


def relay(suffix: str) -> NodeFunc:
    """A node that re-emits each chunk it receives with ``suffix`` appended."""

    async def forward(msg: Message, ctx: Context) -> None:
        ch = msg.payload
        text = ch.text + suffix if not ch.done else ""
        await ctx.emit_chunk(
            parent=msg, stream_id=ch.stream_id, seq=ch.seq, text=text, done=ch.done
        )

    return forward


@pytest.mark.slow
@pytest.mark.parametrize("queue_maxsize", [1, 2, 64])
async def test_pipeline_of_re_emitting_nodes_never_deadlocks(
    make_flow: MakeFlow, queue_maxsize: int
) -> None:
    n = 100_000
    a, b, c = Node(source(n), name="a"), Node(relay("b"), name="b"), Node(relay("c"), name="c")
    flow = make_flow(a.to(b), b.to(c), c.to(), queue_maxsize=queue_maxsize)
    expected = 0
    bad: list[StreamChunk] = []
    async with asyncio.timeout(60):
        async for chunk in flow.stream(Message(payload=None, headers=H)):
            if chunk.seq != expected or (not chunk.done and chunk.text != f"t{expected}bc"):
                bad.append(chunk)
            expected += 1
    assert bad == []
    assert expected == n + 1
    assert flow.stats().streams.registered == 0
    assert [s.invocations for s in flow.stats().nodes] == [1, n + 1, n + 1]


async def test_successors_receive_chunks_wrapped_in_messages(make_flow: MakeFlow) -> None:
    received: list[Message] = []

    async def sink(msg: Message, ctx: Context) -> None:
        received.append(msg)
        await relay("")(msg, ctx)

    a, b = Node(source(2), name="a"), Node(sink, name="b")
    flow = make_flow(a.to(b), b.to())
    parent = Message(payload=None, headers=H, deadline_s=time.time() + 60, meta={"k": 1})
    async with asyncio.timeout(10):
        chunks = [c async for c in flow.stream(parent)]
    assert [c.text for c in chunks] == ["t0", "t1", ""]
    assert len(received) == 3
    for seq, msg in enumerate(received):
        assert isinstance(msg.payload, StreamChunk)
        assert (msg.payload.stream_id, msg.payload.seq) == (parent.trace_id, seq)
        assert msg.headers == H
        assert msg.trace_id == parent.trace_id
        assert msg.deadline_s == parent.deadline_s
        assert msg.meta == {"k": 1}


async def test_emit_chunk_to_routes_to_the_named_successor_only(make_flow: MakeFlow) -> None:
    seen_by_c: list[Message] = []

    async def a(msg: Message, ctx: Context) -> None:
        for i in range(3):
            await ctx.emit_chunk(parent=msg, text=str(i), to=b)
        await ctx.emit_chunk(parent=msg, text="", done=True, to=[b])

    async def c_func(msg: Message, ctx: Context) -> None:
        seen_by_c.append(msg)

    b = Node(relay("!"), name="b")
    c = Node(c_func, name="c")
    flow = make_flow(Node(a, name="a").to(b, c), b.to(), c.to())
    async with asyncio.timeout(10):
        texts = [ch.text async for ch in flow.stream(Message(payload=None, headers=H))]
    assert texts == ["0!", "1!", "2!", ""]
    assert seen_by_c == []


async def test_emit_chunk_to_a_node_that_is_not_a_successor_is_value_error(
    make_flow: MakeFlow,
) -> None:
    errors: list[ValueError] = []
    stranger = Node(relay(""), name="stranger")

    async def a(msg: Message, ctx: Context) -> None:
        try:
            await ctx.emit_chunk(parent=msg, text="x", to=stranger)
        except ValueError as exc:
            errors.append(exc)
            raise

    a_node = Node(a, name="a")
    flow = make_flow(a_node.to(), stranger.to())
    async with asyncio.timeout(10):
        with pytest.raises(StreamError) as info:
            async for _ in flow.stream(Message(payload=None, headers=H), to=a_node):
                pass
    assert info.value.code is ErrorCode.FAILED
    assert len(errors) == 1
    assert "stranger" in str(errors[0])


async def test_refused_emit_chunk_does_not_consume_a_seq(make_flow: MakeFlow) -> None:
    stranger = Node(relay(""), name="stranger")

    async def a(msg: Message, ctx: Context) -> None:
        try:
            await ctx.emit_chunk(parent=msg, text="x", to=stranger)
        except ValueError:
            pass
        await ctx.emit_chunk(parent=msg, text="ok")
        await ctx.emit_chunk(parent=msg, text="", done=True)

    a_node = Node(a, name="a")
    flow = make_flow(a_node.to(), stranger.to())
    async with asyncio.timeout(1):
        sub = flow.stream(Message(payload=None, headers=H), to=a_node)
        assert [(c.seq, c.text) async for c in sub] == [(0, "ok"), (1, "")]


# -- fan-out and fan-in ------------------------------------------------------------------


async def test_fan_out_feeds_two_sinks_writing_two_streams(make_flow: MakeFlow) -> None:
    n = 50

    async def side(msg: Message, ctx: Context) -> None:
        ch = msg.payload
        await ctx.emit_chunk(
            parent=msg,
            stream_id=ch.stream_id + ":c",
            seq=ch.seq,
            text=ch.text.upper(),
            done=ch.done,
        )

    a, b, c = Node(source(n), name="a"), Node(relay("b"), name="b"), Node(side, name="c")
    flow = make_flow(a.to(b, c), b.to(), c.to())
    message = Message(payload=None, headers=H)
    async with asyncio.timeout(10):
        main = [ch async for ch in flow.stream(message)]
        side_id = message.trace_id + ":c"
        await until(lambda: flow.brief(side_id) is not None)
        copy = [ch async for ch in flow.subscribe(side_id)]
    assert [ch.seq for ch in main] == list(range(n + 1))
    assert [ch.text for ch in main[:-1]] == [f"t{i}b" for i in range(n)]
    assert [ch.seq for ch in copy] == list(range(n + 1))
    assert [ch.text for ch in copy[:-1]] == [f"T{i}" for i in range(n)]
    assert {ch.stream_id for ch in copy} == {side_id}
    assert flow.stats().streams.registered == 0


async def test_fan_out_sinks_writing_one_stream_deliver_each_seq_once(
    make_flow: MakeFlow,
) -> None:
    n = 200
    a, b, c = Node(source(n), name="a"), Node(relay(""), name="b"), Node(relay(""), name="c")
    flow = make_flow(a.to(b, c), b.to(), c.to())
    async with asyncio.timeout(10):
        chunks = [ch async for ch in flow.stream(Message(payload=None, headers=H))]
    assert [ch.seq for ch in chunks] == list(range(n + 1))
    assert [ch.text for ch in chunks[:-1]] == [f"t{i}" for i in range(n)]


async def test_fan_in_merges_two_branches_without_duplicates(make_flow: MakeFlow) -> None:
    n = 200
    arrivals = 0

    async def d_func(msg: Message, ctx: Context) -> None:
        nonlocal arrivals
        arrivals += 1
        await relay("d")(msg, ctx)

    a, d = Node(source(n), name="a"), Node(d_func, name="d")
    b, c = Node(relay("x"), name="b"), Node(relay("x"), name="c")
    flow = make_flow(a.to(b, c), b.to(d), c.to(d), d.to(), queue_maxsize=4)
    async with asyncio.timeout(10):
        chunks = [ch async for ch in flow.stream(Message(payload=None, headers=H))]
        await until(lambda: flow.stats().queue_depth == 0 and arrivals == 2 * (n + 1))
    assert [ch.seq for ch in chunks] == list(range(n + 1))
    assert [ch.text for ch in chunks[:-1]] == [f"t{i}xd" for i in range(n)]


# -- concurrency and the reorder buffer --------------------------------------------------


async def test_concurrent_middle_node_still_delivers_in_order(make_flow: MakeFlow) -> None:
    n = 2000
    rng = random.Random(1234)
    forwarded = 0
    all_forwarded = asyncio.Event()
    arrivals: list[int] = []

    async def b_func(msg: Message, ctx: Context) -> None:
        nonlocal forwarded
        ch = msg.payload
        if ch.done:
            # The done chunk is forwarded last, once every earlier seq is out.
            await all_forwarded.wait()
        else:
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(0)  # uneven work: invocations finish out of order
        await ctx.emit_chunk(
            parent=msg, stream_id=ch.stream_id, seq=ch.seq, text=ch.text.upper(), done=ch.done
        )
        forwarded += 1
        if forwarded == n:
            all_forwarded.set()

    async def c_func(msg: Message, ctx: Context) -> None:
        arrivals.append(msg.payload.seq)
        await relay("c")(msg, ctx)

    a = Node(source(n), name="a")
    b = Node(b_func, name="b", policy=NodePolicy(max_concurrency=4))
    c = Node(c_func, name="c")
    flow = make_flow(a.to(b), b.to(c), c.to())
    async with asyncio.timeout(20):
        chunks = [ch async for ch in flow.stream(Message(payload=None, headers=H))]
    assert arrivals != sorted(arrivals)  # the sink really saw them out of order
    assert [ch.seq for ch in chunks] == list(range(n + 1))
    assert [ch.text for ch in chunks[:-1]] == [f"T{i}c" for i in range(n)]
    assert flow.stats().streams.registered == 0


async def test_concurrent_node_may_forward_done_before_earlier_seqs(make_flow: MakeFlow) -> None:
    n = 20

    async def b_func(msg: Message, ctx: Context) -> None:
        ch = msg.payload
        if not ch.done:
            for _ in range(5):
                await asyncio.sleep(0)  # the done chunk overtakes these
        await ctx.emit_chunk(
            parent=msg, stream_id=ch.stream_id, seq=ch.seq, text=ch.text, done=ch.done
        )

    a = Node(source(n), name="a")
    b = Node(b_func, name="b", policy=NodePolicy(max_concurrency=4))
    c = Node(relay(""), name="c")
    flow = make_flow(a.to(b), b.to(c), c.to())
    async with asyncio.timeout(1):
        chunks = [ch async for ch in flow.stream(Message(payload=None, headers=H))]
    assert [ch.seq for ch in chunks] == list(range(n + 1))
