"""Tests for flow.stats() and flow.streams(): every field matches what happened."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from flowkit import MakeFlow, until

from icefloe import (
    Context,
    ErrorCode,
    FlowStatistics,
    Headers,
    InvalidState,
    Limits,
    Message,
    Node,
    NodePolicy,
    StreamError,
    StreamStatistics,
    WouldBlock,
    create,
)

H = Headers(tenant="acme")


async def idle(msg: Message, ctx: Context) -> None:
    pass


# -- the flow and its nodes ----------------------------------------------------------------


async def test_stats_follow_the_life_cycle() -> None:
    a = Node(idle, name="a", policy=NodePolicy(max_concurrency=3))
    b = Node(idle, name="b")
    flow = create(a.to(b), b.to(), queue_maxsize=5)
    before = flow.stats()
    assert isinstance(before, FlowStatistics)
    assert not before.running
    assert [n.name for n in before.nodes] == ["a", "b"]
    assert [n.workers for n in before.nodes] == [0, 0]
    assert before.egress == (0, 5, 0, 0, False)
    assert before.credit_available == 0
    assert before.streams == (0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.running = True  # type: ignore[misc]
    async with flow:
        running = flow.stats()
        assert running.running
        assert [n.workers for n in running.nodes] == [3, 1]
        assert [n.running for n in running.nodes] == [0, 0]
    after = flow.stats()
    assert not after.running
    assert [n.workers for n in after.nodes] == [0, 0]
    assert after.egress.closed
    assert all(n.queue.closed for n in after.nodes)


async def test_queue_depth_and_waiting_senders(make_flow: MakeFlow) -> None:
    gate = asyncio.Event()
    seen: list[int] = []

    async def gated(msg: Message, ctx: Context) -> None:
        await gate.wait()
        seen.append(msg.payload)

    flow = make_flow(Node(gated, name="gated").to(), queue_maxsize=3)
    async with asyncio.timeout(10):
        await flow.emit(Message(payload=0, headers=H))
        await until(lambda: flow.stats().nodes[0].running == 1)
        for i in range(1, 4):
            flow.emit_nowait(Message(payload=i, headers=H))
        with pytest.raises(WouldBlock):
            flow.emit_nowait(Message(payload=99, headers=H))
        late = asyncio.create_task(flow.emit(Message(payload=4, headers=H)))
        await until(lambda: flow.stats().nodes[0].queue.waiting_senders == 1)
        stats = flow.stats()
        node = stats.nodes[0]
        assert (node.queue.used, node.queue.maxsize, node.running) == (3, 3, 1)
        assert stats.queue_depth == 3
        assert stats.queue_fill == 1.0  # the inbox is full: what load shedding reads
        assert node.invocations == 0
        gate.set()
        await late
        await until(lambda: flow.stats().nodes[0].invocations == 5)
    assert seen == [0, 1, 2, 3, 4]
    assert flow.stats().queue_fill == 0.0
    node = flow.stats().nodes[0]
    assert (node.queue.used, node.queue.waiting_senders, node.running) == (0, 0, 0)


async def test_flow_message_calls_check_state_and_targets(make_flow: MakeFlow) -> None:
    stopped = create(Node(idle, name="idle").to())
    with pytest.raises(InvalidState):
        await stopped.emit(Message(payload=1, headers=H))
    with pytest.raises(InvalidState):
        stopped.emit_nowait(Message(payload=1, headers=H))
    with pytest.raises(InvalidState):
        await stopped.fetch()
    flow = make_flow(Node(idle, name="idle").to())
    with pytest.raises(ValueError, match="not a node"):
        await flow.emit(Message(payload=1, headers=H), to=Node(idle, name="stranger"))


async def test_egress_counts_messages_until_fetched(make_flow: MakeFlow) -> None:
    async def echo(msg: Message, ctx: Context) -> None:
        await ctx.emit(Message(payload=msg.payload * 2, headers=msg.headers))

    flow = make_flow(Node(echo, name="echo").to())
    async with asyncio.timeout(10):
        for i in range(3):
            await flow.emit(Message(payload=i, headers=H))
        await until(lambda: flow.stats().egress.used == 3)
        assert flow.stats().queue_depth == 3
        assert [(await flow.fetch()).payload for _ in range(3)] == [0, 2, 4]
    assert flow.stats().egress.used == 0


async def test_node_counters(make_flow: MakeFlow) -> None:
    tries: dict[str, int] = {}
    parked = asyncio.Event()

    async def worker(msg: Message, ctx: Context) -> None:
        kind = msg.payload
        tries[kind] = tries.get(kind, 0) + 1
        if kind == "bad" or (kind == "flaky" and tries[kind] == 1):
            raise RuntimeError(kind)
        if kind == "park":
            parked.set()
            await asyncio.Event().wait()

    policy = NodePolicy(max_retries=1, backoff_s=0)
    flow = make_flow(Node(worker, name="worker", policy=policy).to())
    async with asyncio.timeout(10):
        for kind in ("ok", "flaky", "bad"):
            await flow.emit(Message(payload=kind, headers=H))
        await until(lambda: flow.stats().nodes[0].invocations == 3)
        park = Message(payload="park", headers=H)
        await flow.emit(park)
        await parked.wait()
        assert flow.stats().nodes[0].running == 1
        assert flow.cancel(park.trace_id)
        await until(lambda: flow.stats().nodes[0].running == 0)
    node = flow.stats().nodes[0]
    assert node.name == "worker"
    assert node.invocations == 4
    assert node.retries == 2  # flaky once, bad once before giving up
    assert node.failures == 1
    assert node.cancelled == 1
    assert node.workers == 1
    assert tries == {"ok": 1, "flaky": 2, "bad": 2, "park": 1}


# -- streams ---------------------------------------------------------------------------------


async def test_stream_statistics_reflect_the_log(make_flow: MakeFlow) -> None:
    flow = make_flow(Node(idle, name="idle").to(), limits=Limits(stream_buffer=8))
    writer = flow.open_stream(Headers(tenant="globex"), stream_id="s1")
    reader = flow.subscribe("s1")
    assert flow.streams() == [
        StreamStatistics("s1", "globex", "running", -1, 1, 0, 0, 8, 0, 0, None)
    ]
    async with asyncio.timeout(10):
        for _ in range(3):
            await writer.emit("abc")
        (stats,) = flow.streams()
        assert stats.state == "running"
        assert (stats.last_seq, stats.buffered, stats.buffered_bytes, stats.credit) == (2, 3, 9, 5)
        assert writer.statistics() == stats
        assert flow.stats().streams.bytes_in_flight == 9
        totals = flow.stats().streams
        assert (totals.tenants, totals.traces, totals.producers_waiting) == (1, 1, 0)
        assert flow.stats().credit_available == 5
        await anext(reader)
        await anext(reader)
        (stats,) = flow.streams()
        assert (stats.buffered, stats.buffered_bytes, stats.credit) == (1, 3, 7)
        await writer.emit("d")  # seq 3
        flow.cancel("s1")
        (stats,) = flow.streams()  # still registered: the reader has not seen the end
        assert (stats.state, stats.code, stats.duplicates, stats.credit) == (
            "cancelled",
            "cancelled",
            0,
            0,
        )
        assert (stats.buffered, stats.buffered_bytes) == (0, 0)
        with pytest.raises(StreamError):
            await anext(reader)
    assert flow.streams() == []


async def test_duplicate_chunks_are_dropped_and_counted(make_flow: MakeFlow) -> None:
    gate = asyncio.Event()

    async def twice(msg: Message, ctx: Context) -> None:
        await ctx.emit_chunk(parent=msg, seq=0, text="a")
        await ctx.emit_chunk(parent=msg, seq=0, text="a")  # again: a retry's duplicate
        await gate.wait()
        await ctx.emit_chunk(parent=msg, seq=1, text="", done=True)

    flow = make_flow(Node(twice, name="twice").to())
    async with asyncio.timeout(10):
        sub = flow.stream(Message(payload=None, headers=H))
        assert (await anext(sub)).text == "a"
        await until(lambda: flow.streams()[0].duplicates == 1)
        (stats,) = flow.streams()
        assert (stats.last_seq, stats.duplicates) == (0, 1)
        gate.set()
        assert [c.seq async for c in sub] == [1]  # the duplicate never reached the reader


async def test_reorder_pending_counts_chunks_waiting_for_a_gap(make_flow: MakeFlow) -> None:
    gate = asyncio.Event()

    async def backwards(msg: Message, ctx: Context) -> None:
        await ctx.emit_chunk(parent=msg, seq=2, text="c")
        await ctx.emit_chunk(parent=msg, seq=1, text="b")
        await gate.wait()
        await ctx.emit_chunk(parent=msg, seq=0, text="a")
        await ctx.emit_chunk(parent=msg, seq=3, text="", done=True)

    flow = make_flow(Node(backwards, name="backwards").to())
    message = Message(payload=None, headers=H)
    async with asyncio.timeout(10):
        sub = flow.stream(message)
        reading = asyncio.create_task(anext(sub))
        await until(lambda: bool(flow.streams()) and flow.streams()[0].reorder_pending == 2)
        assert flow.streams()[0].last_seq == -1
        gate.set()
        assert (await reading).text == "a"
        assert [c.text async for c in sub] == ["b", "c", ""]


async def test_emitted_and_delivered_totals(make_flow: MakeFlow) -> None:
    flow = make_flow(Node(idle, name="idle").to())
    async with asyncio.timeout(10):
        writer = flow.open_stream(H)
        first = flow.subscribe(writer.stream_id)
        second = flow.subscribe(writer.stream_id)
        for i in range(5):
            await writer.emit(str(i))
        assert flow.stats().streams.emitted == 5
        assert flow.stats().streams.delivered == 0
        await anext(first)
        await anext(first)
        await anext(second)
        assert flow.stats().streams.delivered == 3
        await writer.close()
        assert len([c async for c in first]) == 4
        assert len([c async for c in second]) == 5
    totals = flow.stats().streams
    assert (totals.emitted, totals.delivered, totals.admitted, totals.registered) == (6, 12, 1, 0)


async def test_delivered_does_not_count_chunks_dropped_by_cancel(make_flow: MakeFlow) -> None:
    flow = make_flow(Node(idle, name="idle").to())
    async with asyncio.timeout(10):
        writer = flow.open_stream(H)
        reader = flow.subscribe(writer.stream_id)
        for i in range(8):
            await writer.emit(str(i))
        await anext(reader)
        assert flow.stats().streams.delivered == 1
        flow.cancel(writer.stream_id)
        with pytest.raises(StreamError) as info:
            await anext(reader)
        assert info.value.code is ErrorCode.CANCELLED
    totals = flow.stats().streams
    assert (totals.emitted, totals.delivered) == (8, 1)


async def test_credit_is_zero_while_the_byte_limit_blocks_the_producer(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow(Node(idle, name="idle").to(), limits=Limits(stream_max_bytes=10))
    writer = flow.open_stream(H)
    reader = flow.subscribe(writer.stream_id)
    await writer.emit("x" * 10)
    with pytest.raises(WouldBlock):
        writer.emit_nowait("y")
    try:
        assert writer.statistics().credit == 0
        assert flow.stats().credit_available == 0
    finally:
        writer.abort("cancelled")
        await reader.aclose()


async def test_credit_available_sums_running_streams(make_flow: MakeFlow) -> None:
    flow = make_flow(Node(idle, name="idle").to(), limits=Limits(stream_buffer=8))
    one, two = flow.open_stream(H), flow.open_stream(H)
    readers = [flow.subscribe(one.stream_id), flow.subscribe(two.stream_id)]
    for _ in range(3):
        await one.emit("x")
    for _ in range(5):
        await two.emit("x")
    assert flow.stats().credit_available == 5 + 3
    done = flow.open_stream(H)
    await done.close()  # finished streams have no credit
    assert flow.stats().credit_available == 8
    assert {s.state for s in flow.streams()} == {"running", "done"}
    one.abort("cancelled")
    two.abort("cancelled")
    for reader in readers:
        await reader.aclose()
    assert flow.stats().credit_available == 0
