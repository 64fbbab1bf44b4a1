"""Soak test: many start/leave-early cycles leave no streams, messages or tasks behind."""

from __future__ import annotations

import asyncio

import pytest
from flowkit import MakeFlow, until

from icefloe import Context, Flow, Headers, Limits, Message, Node, StreamError

H = Headers(tenant="acme")


async def endless(msg: Message, ctx: Context) -> None:
    """Emits until stopped; backpressure parks it once the reader stops reading."""
    while True:
        await ctx.emit_chunk(parent=msg, text="x")


async def ticker(msg: Message, ctx: Context) -> None:
    for i in range(msg.payload):
        await ctx.emit_chunk(parent=msg, text=str(i))
    await ctx.emit_chunk(parent=msg, text="", done=True)


async def leave_early(flow: Flow, node: Node, how: str) -> None:
    """Start a run, read one chunk, and leave the way ``how`` says."""
    message = Message(payload=None, headers=H)
    if how == "break":
        async for _ in flow.stream(message, to=node):
            break
    elif how == "aclose":
        sub = flow.stream(message, to=node)
        await anext(sub)
        await sub.aclose()
    elif how == "cancel":
        sub = flow.stream(message, to=node)
        await anext(sub)
        flow.cancel(message.trace_id)
        try:
            await anext(sub)
        except StreamError:
            pass
        else:
            raise AssertionError("a cancelled stream went on")
    else:  # the reading task is cancelled
        got_one = asyncio.Event()

        async def reader() -> None:
            async for _ in flow.stream(message, to=node):
                got_one.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(reader())
        await got_one.wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


def assert_clean(flow: Flow) -> None:
    streams = flow.stats().streams
    assert (streams.registered, streams.active, streams.bytes_in_flight) == (0, 0, 0)
    # The per-trace and per-tenant books are empty too (a leak there grows forever).
    assert (streams.traces, streams.tenants, streams.producers_waiting) == (0, 0, 0)
    stats = flow.stats()
    assert all(node.queue.used == 0 and node.running == 0 for node in stats.nodes)
    assert stats.egress.used == 0
    assert stats.queue_depth == 0


@pytest.mark.parametrize(
    ("modes", "cycles"),
    [
        (("break", "aclose", "cancel", "task_cancel"), 10_000),
        (("break",), 1_000),
        (("aclose",), 1_000),
        (("cancel",), 1_000),
        (("task_cancel",), 1_000),
    ],
    ids=["mixed", "break", "aclose", "cancel", "task_cancel"],
)
async def test_start_and_leave_early_cycles_leave_nothing_behind(
    make_flow: MakeFlow, modes: tuple[str, ...], cycles: int
) -> None:
    spin, tick = Node(endless, name="endless"), Node(ticker, name="ticker")
    # Load shedding off: this soak measures what leaving early leaves behind, and
    # a thousand back-to-back starts on a busy CI core can read as loop lag,
    # which rightly refuses new low-priority starts (tests/perf covers that).
    flow = make_flow(spin.to(), tick.to(), limits=Limits(stream_buffer=4), congestion=None)
    me = asyncio.current_task()
    # Every task but this one is a worker of the flow (stats count them).
    workers = {t for t in asyncio.all_tasks() if t is not me}
    assert len(workers) == sum(node.workers for node in flow.stats().nodes) == 2
    tasks_before = len(asyncio.all_tasks())

    async with asyncio.timeout(60):
        for i in range(cycles):
            await leave_early(flow, spin, modes[i % len(modes)])
        await until(lambda: flow.stats().nodes[0].running == 0)

    assert_clean(flow)
    assert len(asyncio.all_tasks()) == tasks_before
    assert {t for t in asyncio.all_tasks() if t is not me} == workers
    node = flow.stats().nodes[0]
    assert (node.invocations, node.cancelled, node.failures) == (cycles, cycles, 0)

    # The flow is as good as new.
    async with asyncio.timeout(10):
        sub = flow.stream(Message(payload=3, headers=H), to=tick)
        assert [c.text async for c in sub] == ["0", "1", "2", ""]
    assert_clean(flow)
