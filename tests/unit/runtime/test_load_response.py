"""Throttling new low-priority work when congested; shedding accepted work when overloaded."""

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
HIGH = Headers(tenant="t", priority=5)
#: reacts to one late probe; steps down after 0.2 s without pressure
FAST = CongestionPolicy(
    alpha=1.0,
    dwell_s=0.2,
    lag_congested_s=Thresholds(0.05, 0.02),
    lag_overloaded_s=Thresholds(0.1, 0.05),
)


def test_throttle_spaces_starts_and_adapts() -> None:
    throttle = AdmissionThrottle(SheddingPolicy(rate=10.0, burst=2, max_delay_s=0.35))
    delays = [throttle.reserve(100.0) for _ in range(6)]
    # Two at once (the burst), then one every 0.1 s, refused past 0.35 s.
    assert delays[:5] == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3])
    assert delays[5] is None
    assert throttle.statistics().refused == 1
    throttle.on_probe(congested=True)
    assert throttle.rate == pytest.approx(7.0)
    for _ in range(50):
        throttle.on_probe(congested=True)
    assert throttle.rate == 1.0  # min_rate
    for _ in range(50):
        throttle.on_probe(congested=False)
    assert throttle.rate == 10.0


def test_shedding_policy_validates() -> None:
    for bad in ({"rate": 0}, {"min_rate": 100.0}, {"decrease": 1.0}, {"burst": 0}):
        with pytest.raises(ValueError):
            SheddingPolicy(**bad)  # type: ignore[arg-type]


def counter(n: int) -> Node:
    async def count(msg: Message, ctx: Context) -> None:
        for i in range(n):
            await ctx.emit_chunk(parent=msg, text=str(i))
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return Node(count, name="count", policy=NodePolicy(max_concurrency=8))


async def test_congested_flow_delays_low_priority_at_most_once_starts(
    make_flow: MakeFlow,
) -> None:
    # A long dwell keeps the flow congested for the whole test.
    flow = make_flow(
        counter(2).to(),
        congestion=CongestionPolicy(alpha=1.0, dwell_s=60.0),
        shedding=SheddingPolicy(rate=10.0, burst=1, decrease=0.999),
    )
    assert flow.load is not None
    flow.load._monitor.observe(time.monotonic(), loop_lag_s=0.07)
    assert flow.congestion is CongestionState.CONGESTED
    began = time.monotonic()
    async with asyncio.timeout(10):
        high = [flow.stream(Message(i, HIGH)) for i in range(3)]
        low = [flow.stream(Message(i, LOW)) for i in range(4)]
        firsts: list[float] = []
        for sub in low:
            await anext(sub)
            firsts.append(time.monotonic() - began)
        for sub in high + low:
            _, error = await read_all(sub)
            assert error is None
    # High priority is never throttled; low priority starts about 0.1 s apart.
    stats = flow.stats().shedding
    assert stats is not None
    assert stats.throttle.delayed == 3
    assert firsts[-1] >= 0.25
    assert flow._deferred == {}


async def test_throttled_start_cancelled_while_waiting_never_runs(make_flow: MakeFlow) -> None:
    flow = make_flow(
        counter(2).to(),
        congestion=CongestionPolicy(alpha=1.0, dwell_s=60.0),
        shedding=SheddingPolicy(rate=10.0, burst=1, decrease=0.999),
    )
    assert flow.load is not None
    flow.load._monitor.observe(time.monotonic(), loop_lag_s=0.07)
    await flow.start(Message("first", LOW))
    second = Message("second", LOW)
    await flow.start(second)
    assert second.trace_id in flow._deferred
    flow.cancel(second.trace_id)
    async with asyncio.timeout(5):
        while flow._deferred:
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
    flow.load._monitor.observe(time.monotonic(), loop_lag_s=0.07)
    assert flow.congestion is CongestionState.CONGESTED
    # The tenant's one stream (high priority: never throttled).
    await flow.start(Message("hog", Headers(tenant="full", priority=5)))
    for i in range(10):
        with pytest.raises(StreamError):  # max_streams_per_tenant, after the throttle
            await flow.start(Message(i, Headers(tenant="full", priority=0)))
    # The refused starts held no slot: the next run is the first, and starts at once.
    genuine = Message("genuine", LOW)
    await flow.start(genuine)
    assert genuine.trace_id not in flow._deferred
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


async def test_overload_sheds_low_priority_at_most_once_only(make_flow: MakeFlow) -> None:
    async def forever(msg: Message, ctx: Context) -> None:
        while True:
            await ctx.emit_chunk(parent=msg, text="x")

    amo = Node(forever, name="amo", policy=NodePolicy(max_concurrency=8))
    eo = Node(
        counter(100).func,
        name="eo",
        policy=NodePolicy(reliability="exactly_once", max_concurrency=2),
    )
    flow = make_flow(amo.to(), eo.to(), congestion=FAST, shedding=SheddingPolicy(shed_per_probe=1))
    victims = [flow.stream(Message(i, LOW), to=amo) for i in range(4)]
    keeper = flow.stream(Message("vip", HIGH), to=amo)
    precious = flow.stream(Message("eo", LOW), to=eo)
    async with asyncio.timeout(20):
        for sub in (*victims, keeper, precious):
            await anext(sub)  # every run is accepted and producing
        shedding = flow.stats().shedding
        assert shedding is not None
        assert shedding.candidates == 4
        await press(flow, lambda: flow._shedder is not None and flow._shedder.shed_accepted >= 4)
        for sub in victims:
            _, error = await read_all(sub)
            assert error is not None
            assert error.code is ErrorCode.OVERLOADED
        # Untouched: the high-priority at_most_once run and the exactly_once one.
        assert (await anext(keeper)).text == "x"
        rest, error = await read_all(precious)
        assert error is None
        assert [c.text for c in rest][-2:] == ["99", ""]
        assert len(rest) == 100  # seqs 1..100 after the first: nothing lost
        # Pressure gone: back to normal within the dwell plus a few probes.
        calm = time.monotonic()
        while flow.congestion is not CongestionState.NORMAL:
            await asyncio.sleep(0.02)
        assert time.monotonic() - calm < 2.0
    stats = flow.stats().shedding
    assert stats is not None
    assert stats.shed_accepted == 4
    assert stats.candidates == 0
    await keeper.aclose()


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
