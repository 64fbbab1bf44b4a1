"""Throttling new low-priority work when congested; shedding accepted work when overloaded.

The tests timed on the wall clock are in tests/perf/runtime/test_load_response_timing.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from flowkit import MakeFlow, read_all

from icefloe import Context, Headers, Limits, Message, Node, NodePolicy, StreamError
from icefloe.core.congestion import CongestionPolicy, CongestionState, Thresholds
from icefloe.exceptions import ErrorCode
from icefloe.runtime.flow import Flow
from icefloe.runtime.throttle import AdmissionThrottle, SheddingPolicy

LOW = Headers(tenant="t", priority=0)
#: reacts to one late probe; steps down after 0.2 s without pressure
FAST = CongestionPolicy(
    alpha=1.0,
    dwell_s=0.2,
    lag_congested_s=Thresholds(0.05, 0.02),
    lag_overloaded_s=Thresholds(0.1, 0.05),
)


def test_throttle_spaces_starts_and_adapts() -> None:
    policy = SheddingPolicy(rate=10.0, burst=2, max_delay_s=0.35, decrease=0.7, min_rate=1.0)
    throttle = AdmissionThrottle(policy)
    delays = [throttle.reserve(100.0) for _ in range(6)]
    # Two at once (the burst), then one every 0.1 s, refused past 0.35 s.
    assert delays[:5] == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3])
    assert delays[5] is None
    assert throttle.statistics().refused == 1
    throttle.on_probe(congested=True)  # x decrease
    assert throttle.rate == pytest.approx(7.0)
    for _ in range(50):
        throttle.on_probe(congested=True)
    assert throttle.rate == 1.0  # min_rate
    for _ in range(50):
        throttle.on_probe(congested=False)
    assert throttle.rate == 10.0


def test_shedding_policy_validates() -> None:
    # min_rate above the default rate is refused
    for bad in ({"rate": 0}, {"min_rate": 1000.0}, {"decrease": 1.0}, {"burst": 0}):
        with pytest.raises(ValueError):
            SheddingPolicy(**bad)  # type: ignore[arg-type]


def counter(n: int) -> Node:
    async def count(msg: Message, ctx: Context) -> None:
        for i in range(n):
            await ctx.emit_chunk(parent=msg, text=str(i))
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return Node(count, name="count", policy=NodePolicy(max_concurrency=8))


async def test_throttled_start_cancelled_while_waiting_never_runs(make_flow: MakeFlow) -> None:
    flow = make_flow(
        counter(2).to(),
        congestion=CongestionPolicy(alpha=1.0, dwell_s=60.0),
        shedding=SheddingPolicy(rate=10.0, burst=1, decrease=0.999),
    )
    assert flow.load is not None
    flow.load.observe(time.monotonic(), loop_lag_s=0.07)
    await flow.start(Message("first", LOW))
    second = Message("second", LOW)
    await flow.start(second)
    assert flow.stats().deferred == 1  # the second start waits to enter the flow
    flow.cancel(second.trace_id)
    async with asyncio.timeout(5):
        while flow.stats().deferred:  # until the wait is over (a timer: real time)
            await asyncio.sleep(0.01)
    assert flow.stats().nodes[0].invocations <= 1


async def test_refused_starts_give_their_throttle_slot_back(make_flow: MakeFlow) -> None:
    async def hold(msg: Message, ctx: Context) -> None:
        await ctx.emit_chunk(parent=msg, text="held")
        await asyncio.Event().wait()  # runs until the flow stops

    flow = make_flow(
        Node(hold, name="hold", policy=NodePolicy(max_concurrency=4)).to(),
        congestion=CongestionPolicy(alpha=1.0, dwell_s=60.0),
        shedding=SheddingPolicy(rate=10.0, burst=1, decrease=0.999, max_delay_s=0.35),
        limits=Limits(max_streams_per_tenant=1),
    )
    assert flow.load is not None
    flow.load.observe(time.monotonic(), loop_lag_s=0.07)
    assert flow.congestion is CongestionState.CONGESTED
    # The tenant's one stream (high priority: never throttled).
    await flow.start(Message("hog", Headers(tenant="full", priority=5)))
    for i in range(10):
        with pytest.raises(StreamError):  # max_streams_per_tenant, after the throttle
            await flow.start(Message(i, Headers(tenant="full", priority=0)))
    # The refused starts held no slot: the next run is the first, and starts at once.
    genuine = Message("genuine", LOW)
    await flow.start(genuine)
    assert flow.stats().deferred == 0  # it entered the flow at once
    stats = flow.stats().shedding
    assert stats is not None
    assert stats.throttle.delayed == 0
    assert stats.throttle.refused == 0


def block_loop(seconds: float) -> None:
    """Hold the event loop, as a CPU-bound handler would (this is the load)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def press(flow: Flow, done: object) -> None:
    """Block the loop, one late probe at a time, until ``done()`` (bounded)."""
    assert callable(done)
    assert flow.load is not None
    probed = asyncio.Event()
    flow.load.add_probe_listener(lambda _state: probed.set())
    async with asyncio.timeout(15):
        while not done():
            probed.clear()
            block_loop(0.3)
            await probed.wait()  # the late probe ran (and saw the lag)


async def test_shedding_accepted_work_can_be_turned_off(make_flow: MakeFlow) -> None:
    flow = make_flow(counter(200).to(), congestion=FAST, shedding=SheddingPolicy(shed_per_probe=0))
    sub = flow.stream(Message("x", LOW))
    async with asyncio.timeout(10):
        await anext(sub)
        await press(flow, lambda: flow.congestion is CongestionState.OVERLOADED)
        with pytest.raises(StreamError) as refused:
            flow.stream(Message("new", LOW))  # new work is still refused
        assert refused.value.code is ErrorCode.OVERLOADED
        chunks, error = await read_all(sub)
    assert error is None
    assert len(chunks) == 200  # all but the first, and the done chunk
