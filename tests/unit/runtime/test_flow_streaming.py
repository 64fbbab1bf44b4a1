"""Tests for flow.stream: order, early exit, terminal codes and backpressure."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from flowkit import MakeFlow, read_all, until

from icefloe import (
    Context,
    ErrorCode,
    Flow,
    Headers,
    InvalidState,
    Limits,
    Message,
    Node,
    NodePolicy,
    StreamChunk,
    StreamClosedError,
    StreamError,
    create,
)
from icefloe.runtime.node import NodeFunc
from icefloe.runtime.stream import TRIM_BATCH

H = Headers(tenant="acme")


def assert_no_streams(flow: Flow) -> None:
    stats = flow.stats().streams
    assert (stats.registered, stats.active, stats.bytes_in_flight) == (0, 0, 0)
    # The per-trace and per-tenant books are empty too (a leak there grows forever).
    assert (stats.traces, stats.tenants) == (0, 0)


async def ticker(msg: Message, ctx: Context) -> None:
    """Emits ``msg.payload`` numbered chunks, then done."""
    for i in range(msg.payload):
        await ctx.emit_chunk(parent=msg, text=f"t{i}")
    await ctx.emit_chunk(parent=msg, text="", done=True)


# -- the documented example and the life cycle -------------------------------------------


async def test_design_md_example() -> None:
    async def llm(msg: Message, ctx: Context) -> None:
        for token in ("Hel", "lo", "!"):
            await ctx.emit_chunk(parent=msg, text=token)  # seq 0, 1, 2 assigned
        await ctx.emit_chunk(parent=msg, text="", done=True)  # completion signal

    flow = create(Node(llm, name="llm").to())
    flow.run()
    message = Message(payload="hi", headers=Headers(tenant="acme"))
    try:
        async with asyncio.timeout(10):
            chunks = [chunk async for chunk in flow.stream(message)]
    finally:
        await flow.stop()
    assert [(c.seq, c.text, c.done) for c in chunks] == [
        (0, "Hel", False),
        (1, "lo", False),
        (2, "!", False),
        (3, "", True),
    ]
    assert {c.stream_id for c in chunks} == {message.trace_id}
    assert_no_streams(flow)


async def test_async_with_runs_and_stops_the_flow() -> None:
    flow = create(Node(ticker, name="ticker").to())
    assert not flow.running
    async with asyncio.timeout(10), flow:
        assert flow.stats().running
        seqs = [c.seq async for c in flow.stream(Message(payload=2, headers=H))]
    assert seqs == [0, 1, 2]
    assert not flow.stats().running
    assert not flow.stats().running


async def test_life_cycle_misuse_is_invalid_state() -> None:
    flow = create(Node(ticker, name="ticker").to())
    with pytest.raises(InvalidState):
        flow.stream(Message(payload=1, headers=H))
    flow.run()
    with pytest.raises(InvalidState):
        flow.run()
    await flow.stop()
    await flow.stop()  # idempotent
    with pytest.raises(InvalidState):
        flow.run()
    with pytest.raises(InvalidState):
        flow.stream(Message(payload=1, headers=H))


async def test_a_stream_id_can_be_started_once(make_flow: MakeFlow) -> None:
    flow = make_flow(Node(ticker, name="ticker").to())
    message = Message(payload=1, headers=H)
    async with asyncio.timeout(10):
        sub = flow.stream(message)
        with pytest.raises(InvalidState):
            flow.stream(message)
        assert [c.seq async for c in sub] == [0, 1]
        with pytest.raises(InvalidState):  # finished recently: not reborn
            flow.stream(message)


# -- ordering ----------------------------------------------------------------------------


async def test_hundred_interleaved_streams_each_see_only_their_own(make_flow: MakeFlow) -> None:
    n = 30

    async def talk(msg: Message, ctx: Context) -> None:
        for i in range(n):
            await ctx.emit_chunk(parent=msg, text=f"{msg.payload}:{i}")
            await asyncio.sleep(0)  # let other invocations interleave
        await ctx.emit_chunk(parent=msg, text="", done=True)

    flow = make_flow(Node(talk, name="talk", policy=NodePolicy(max_concurrency=16)).to())
    interleaved = 0
    last_stream: str | None = None

    async def consume(k: int) -> list[StreamChunk]:
        nonlocal interleaved, last_stream
        message = Message(payload=k, headers=H)
        chunks = []
        async for chunk in flow.stream(message):
            assert chunk.stream_id == message.trace_id
            if last_stream not in (None, chunk.stream_id):
                interleaved += 1
            last_stream = chunk.stream_id
            chunks.append(chunk)
        return chunks

    async with asyncio.timeout(20):
        results = await asyncio.gather(*(consume(k) for k in range(100)))
    for k, chunks in enumerate(results):
        assert [c.seq for c in chunks] == list(range(n + 1))
        assert [c.text for c in chunks[:-1]] == [f"{k}:{i}" for i in range(n)]
        assert chunks[-1].done
    assert interleaved > 100  # the streams really were concurrent
    assert_no_streams(flow)


# -- leaving early -----------------------------------------------------------------------


class Probe:
    """A node function that records how its invocations end."""

    def __init__(self, *, endless: bool) -> None:
        self.endless = endless
        self.calls = 0
        self.emitted = 0
        self.cancelled = asyncio.Event()
        self.stopped = asyncio.Event()

    async def __call__(self, msg: Message, ctx: Context) -> None:
        self.calls += 1
        try:
            await ctx.emit_chunk(parent=msg, text="first")
            self.emitted += 1
            if self.endless:  # soon blocked by backpressure
                while True:
                    await ctx.emit_chunk(parent=msg, text="more")
                    self.emitted += 1
            await asyncio.Event().wait()  # parked until interrupted
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        finally:
            self.stopped.set()


@pytest.mark.parametrize("endless", [False, True], ids=["parked", "backpressured"])
@pytest.mark.parametrize("how", ["break", "aclose", "task_cancel"])
async def test_leaving_early_cancels_the_run_and_frees_the_stream(
    make_flow: MakeFlow, how: str, endless: bool
) -> None:
    probe = Probe(endless=endless)
    flow = make_flow(Node(probe, name="probe").to(), limits=Limits(stream_buffer=4))
    message = Message(payload=None, headers=H)
    async with asyncio.timeout(10):
        if how == "break":
            async for chunk in flow.stream(message):
                assert chunk.text == "first"
                break
        elif how == "aclose":
            sub = flow.stream(message)
            assert (await anext(sub)).text == "first"
            await sub.aclose()
            await sub.aclose()  # idempotent
        else:
            got_one = asyncio.Event()

            async def reader() -> None:
                async for _ in flow.stream(message):
                    got_one.set()
                    if endless:  # stop reading; the producer runs into backpressure
                        await asyncio.Event().wait()

            task = asyncio.create_task(reader())
            await got_one.wait()
            if endless:
                await until(lambda: flow.stats().credit_available == 0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await probe.stopped.wait()
        assert probe.cancelled.is_set()
        await until(lambda: flow.stats().nodes[0].running == 0)
    emitted = probe.emitted
    assert emitted <= 1 + 4 + 1
    assert_no_streams(flow)
    node = flow.stats().nodes[0]
    assert (node.cancelled, node.failures, node.queue.used) == (1, 0, 0)
    # The worker survived the interruption and serves the next run.
    async with asyncio.timeout(10):
        sub = flow.stream(Message(payload=None, headers=H))
        assert (await anext(sub)).text == "first"
        await sub.aclose()
        await until(lambda: probe.calls == 2 and flow.stats().nodes[0].running == 0)
    assert probe.emitted >= emitted + 1


async def test_reading_after_aclose_stops_iteration(make_flow: MakeFlow) -> None:
    probe = Probe(endless=True)
    flow = make_flow(Node(probe, name="probe").to(), limits=Limits(stream_buffer=4))
    async with asyncio.timeout(10):
        sub = flow.stream(Message(payload=None, headers=H))
        await anext(sub)
        await until(lambda: flow.stats().credit_available == 0)
        await sub.aclose()
        with pytest.raises(StopAsyncIteration):
            await anext(sub)
        await probe.stopped.wait()


async def test_dropping_an_unstarted_subscription_frees_its_stream(make_flow: MakeFlow) -> None:
    probe = Probe(endless=False)
    flow = make_flow(Node(probe, name="probe").to())
    sub = flow.stream(Message(payload=None, headers=H))
    assert flow.stats().streams.registered == 1
    del sub
    assert_no_streams(flow)
    assert probe.calls == 0  # the message enters the flow on the first iteration only


@pytest.mark.parametrize("how", ["cancel", "aclose"])
async def test_stop_right_after_cancelling_a_run_does_not_hang(how: str) -> None:
    # Regression: the worker absorbed flow.stop()'s cancel together with the
    # still-pending targeted interrupt, then waited on its inbox forever.
    probe = Probe(endless=False)
    flow = create(Node(probe, name="probe").to())
    flow.run()
    message = Message(payload=None, headers=H)
    sub = flow.stream(message)
    async with asyncio.timeout(10):
        await anext(sub)
        if how == "cancel":
            flow.cancel(message.trace_id)
        else:
            await sub.aclose()
        await flow.stop()  # no turn of the loop in between
    assert probe.cancelled.is_set()
    assert flow.stats().nodes[0].workers == 0


# -- terminal codes ----------------------------------------------------------------------


async def test_node_failure_ends_the_stream_failed_after_a_drain(make_flow: MakeFlow) -> None:
    async def broken(msg: Message, ctx: Context) -> None:
        for i in range(3):
            await ctx.emit_chunk(parent=msg, text=str(i))
        raise RuntimeError("boom")

    flow = make_flow(Node(broken, name="broken").to())
    message = Message(payload=None, headers=H)
    async with asyncio.timeout(10):
        chunks, error = await read_all(flow.stream(message))
    assert [c.seq for c in chunks] == [0, 1, 2]
    assert error is not None
    assert error.code is ErrorCode.FAILED
    assert error.stream_id == message.trace_id
    assert "broken" in error.message
    assert_no_streams(flow)
    assert flow.stats().nodes[0].failures == 1


async def test_node_failure_fails_every_stream_of_its_trace(make_flow: MakeFlow) -> None:
    gate = asyncio.Event()

    async def two_streams(msg: Message, ctx: Context) -> None:
        await ctx.emit_chunk(parent=msg, text="main")
        await ctx.emit_chunk(parent=msg, stream_id=msg.trace_id + ".side", text="side")
        await gate.wait()
        raise RuntimeError("boom")

    flow = make_flow(Node(two_streams, name="two").to())
    message = Message(payload=None, headers=H)
    side_id = message.trace_id + ".side"
    async with asyncio.timeout(10):
        main = flow.stream(message)
        assert (await anext(main)).text == "main"
        await until(lambda: flow.brief(side_id) is not None)
        side = flow.subscribe(side_id)
        gate.set()
        assert (await anext(side)).text == "side"
        for sub in (main, side):
            with pytest.raises(StreamError) as info:
                await anext(sub)
            assert info.value.code is ErrorCode.FAILED
    assert_no_streams(flow)


async def test_flow_cancel_from_another_task_ends_the_stream_cancelled(
    make_flow: MakeFlow,
) -> None:
    probe = Probe(endless=False)
    flow = make_flow(Node(probe, name="probe").to())
    message = Message(payload=None, headers=H)
    first = asyncio.Event()
    outcome: list[BaseException] = []

    async def reader() -> None:
        try:
            async for _ in flow.stream(message):
                first.set()
        except StreamError as exc:
            outcome.append(exc)

    async with asyncio.timeout(10):
        task = asyncio.create_task(reader())
        await first.wait()
        assert flow.cancel(message.trace_id) is True
        await task
        await probe.stopped.wait()
        await until(lambda: flow.stats().nodes[0].running == 0)
    assert probe.cancelled.is_set()
    assert isinstance(outcome[0], StreamError)
    assert outcome[0].code is ErrorCode.CANCELLED
    assert flow.cancel(message.trace_id) is False  # nothing left to cancel
    assert_no_streams(flow)


async def test_cancel_drops_chunks_not_yet_read(make_flow: MakeFlow) -> None:
    async def five(msg: Message, ctx: Context) -> None:
        for i in range(5):
            await ctx.emit_chunk(parent=msg, text=str(i))
        await asyncio.Event().wait()

    flow = make_flow(Node(five, name="five").to())
    message = Message(payload=None, headers=H)
    async with asyncio.timeout(10):
        sub = flow.stream(message)
        assert (await anext(sub)).seq == 0
        await until(lambda: flow.streams()[0].last_seq == 4)
        flow.cancel(message.trace_id)
        with pytest.raises(StreamError) as info:
            await anext(sub)
        await until(lambda: flow.stats().nodes[0].running == 0)
    assert info.value.code is ErrorCode.CANCELLED
    assert_no_streams(flow)


async def test_deadline_ends_the_stream_with_timeout_and_drops_queued_chunks(
    make_flow: MakeFlow,
) -> None:
    interrupted = asyncio.Event()

    async def slow(msg: Message, ctx: Context) -> None:
        for i in range(3):
            await ctx.emit_chunk(parent=msg, text=str(i))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            interrupted.set()
            raise

    flow = make_flow(Node(slow, name="slow").to())
    message = Message(payload=None, headers=H, deadline_s=time.time() + 0.1)
    async with asyncio.timeout(10):
        sub = flow.stream(message)
        assert (await anext(sub)).text == "0"
        await until(lambda: flow.streams()[0].last_seq == 2)
        await interrupted.wait()  # the deadline stopped the node...
        with pytest.raises(StreamError) as info:
            await anext(sub)  # ...and chunks 1 and 2, queued, are gone
        await until(lambda: flow.stats().nodes[0].running == 0)
    assert info.value.code is ErrorCode.TIMEOUT
    assert info.value.stream_id == message.trace_id
    assert_no_streams(flow)


async def test_past_deadline_times_out_without_running_the_node(make_flow: MakeFlow) -> None:
    probe = Probe(endless=False)
    flow = make_flow(Node(probe, name="probe").to())
    message = Message(payload=None, headers=H, deadline_s=time.time() - 1)
    async with asyncio.timeout(10):
        with pytest.raises(StreamError) as info:
            async for _ in flow.stream(message):
                pass
        await until(lambda: flow.stats().queue_depth == 0)
    assert info.value.code is ErrorCode.TIMEOUT
    assert probe.calls == 0
    assert_no_streams(flow)


async def test_admission_refused_with_overloaded(make_flow: MakeFlow) -> None:
    flow = make_flow(Node(ticker, name="ticker").to(), limits=Limits(max_streams=1))
    async with asyncio.timeout(10):
        accepted = flow.stream(Message(payload=5, headers=H))
        refused = Message(payload=5, headers=H)
        with pytest.raises(StreamError) as info:
            flow.stream(refused)
        assert info.value.code is ErrorCode.OVERLOADED
        assert info.value.stream_id == refused.trace_id
        assert [c.seq async for c in accepted] == list(range(6))
        # Capacity is back: the refused message can be started now.
        assert [c.seq async for c in flow.stream(refused)] == list(range(6))


async def test_emit_after_done_raises_stream_closed_error(make_flow: MakeFlow) -> None:
    errors: list[StreamClosedError] = []

    async def eager(msg: Message, ctx: Context) -> None:
        await ctx.emit_chunk(parent=msg, text="a")
        await ctx.emit_chunk(parent=msg, text="", done=True)
        extras: list[dict[str, Any]] = [{}, {"seq": 2}, {"done": True}]
        for kwargs in extras:
            try:
                await ctx.emit_chunk(parent=msg, text="late", **kwargs)
            except StreamClosedError as exc:
                errors.append(exc)

    flow = make_flow(Node(eager, name="eager").to())
    message = Message(payload=None, headers=H)
    async with asyncio.timeout(10):
        texts = [c.text async for c in flow.stream(message)]
        await until(lambda: flow.stats().nodes[0].invocations == 1)
    assert texts == ["a", ""]
    assert len(errors) == 3
    assert all(e.stream_id == message.trace_id and e.code is None for e in errors)
    assert isinstance(errors[0], InvalidState)
    assert flow.stats().nodes[0].failures == 0


# -- backpressure and memory -------------------------------------------------------------


async def test_fast_producer_waits_for_a_reader_that_stopped(make_flow: MakeFlow) -> None:
    window = 8
    produced = 0

    async def fast(msg: Message, ctx: Context) -> None:
        nonlocal produced
        for i in range(200):
            await ctx.emit_chunk(parent=msg, text=f"{i:03}")
            produced += 1
        await ctx.emit_chunk(parent=msg, text="", done=True)

    flow = make_flow(Node(fast, name="fast").to(), limits=Limits(stream_buffer=window))
    async with asyncio.timeout(10):
        sub = flow.stream(Message(payload=None, headers=H))
        for expected in range(3):
            assert (await anext(sub)).seq == expected
        # The reader stops: the producer fills the window and waits.
        await until(lambda: flow.stats().credit_available == 0)
        for _ in range(50):
            await asyncio.sleep(0)  # not a sync point: give the producer every chance to overrun
        released = flow.streams()[0].last_seq + 1
        assert released - 3 == window
        assert produced <= 3 + window
        assert flow.streams()[0].credit == 0
        # Reading again lets it finish, in order and complete.
        rest = [c async for c in sub]
    assert [c.seq for c in rest] == list(range(3, 201))
    assert [c.text for c in rest[:-1]] == [f"{i:03}" for i in range(3, 200)]
    assert produced == 200
    assert_no_streams(flow)


async def test_stream_max_bytes_bounds_the_bytes_held(make_flow: MakeFlow) -> None:
    size = 100
    flow = make_flow(
        Node(ticker_of(size, 300), name="big").to(),
        limits=Limits(stream_buffer=10_000, stream_max_bytes=10 * size),
    )
    async with asyncio.timeout(10):
        sub = flow.stream(Message(payload=None, headers=H))
        assert len((await anext(sub)).text) == size
        await until(lambda: flow.stats().streams.bytes_in_flight >= 10 * size)
        for _ in range(50):
            await asyncio.sleep(0)  # not a sync point: give the producer every chance to overrun
        held = flow.stats().streams.bytes_in_flight
        assert 10 * size <= held <= 11 * size
        count = 1 + sum([1 async for _ in sub])
    assert count == 301
    assert_no_streams(flow)


def ticker_of(size: int, n: int) -> NodeFunc:
    async def big(msg: Message, ctx: Context) -> None:
        for _ in range(n):
            await ctx.emit_chunk(parent=msg, text="x" * size)
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return big


async def test_memory_stays_bounded_under_a_slow_reader(make_flow: MakeFlow) -> None:
    size, window, n = 100, 8, 2000
    flow = make_flow(Node(ticker_of(size, n), name="big").to(), limits=Limits(stream_buffer=window))
    peak = 0
    count = 0
    async with asyncio.timeout(20):
        async for _ in flow.stream(Message(payload=None, headers=H)):
            count += 1
            peak = max(peak, flow.stats().streams.bytes_in_flight)
            if count % 7 == 0:
                await asyncio.sleep(0)  # read slower than the producer writes
    assert count == n + 1
    assert 0 < peak <= (window + TRIM_BATCH) * size
    assert_no_streams(flow)
