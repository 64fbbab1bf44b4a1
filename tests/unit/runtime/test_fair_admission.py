"""Fair admission between tenants: the flow's load falls on the tenant causing it.

The congestion state is driven with ``flow.load.observe`` (a measured signal,
as the probe feeds it), so each test sets the exact state it needs.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from flowkit import MakeFlow

from icefloe import Context, Headers, Limits, Message, Node, NodePolicy, StreamError
from icefloe.core.congestion import CongestionPolicy, CongestionState
from icefloe.exceptions import ErrorCode
from icefloe.runtime.flow import Flow
from icefloe.runtime.throttle import SheddingPolicy

A = Headers(tenant="a", priority=0)
B = Headers(tenant="b", priority=0)
#: stays in the state it is put in for a minute
STICKY = CongestionPolicy(alpha=1.0, dwell_s=60.0)


async def hold(msg: Message, ctx: Context) -> None:
    await ctx.emit_chunk(parent=msg, text="held")
    await asyncio.Event().wait()  # runs until the flow stops


def holder(flow_maker: MakeFlow, **options: object) -> Flow:
    node = Node(hold, name="hold", policy=NodePolicy(max_concurrency=64))
    return flow_maker(node.to(), congestion=STICKY, **options)  # type: ignore[arg-type]


async def test_congested_throttles_the_busy_tenant_and_not_the_quiet_one(
    make_flow: MakeFlow,
) -> None:
    flow = holder(make_flow, shedding=SheddingPolicy(rate=10.0, burst=1, max_delay_s=0.35))
    assert flow.load is not None
    async with asyncio.timeout(10):
        for i in range(3):  # a's runs, admitted while the flow is calm
            await flow.start(Message(i, A))
        flow.load.observe(time.monotonic(), loop_lag_s=0.07)
        assert flow.congestion is CongestionState.CONGESTED
        # a's burst goes through the throttle: one slot, then spacing, then refusals.
        codes = []
        for i in range(10):
            try:
                await flow.start(Message(f"a{i}", A))
            except StreamError as exc:
                codes.append(exc.code)
        refused = len(codes)
        assert refused >= 5
        assert set(codes) == {ErrorCode.OVERLOADED}
        # b is below its fair share: it starts at once, every time, and takes no slot.
        for i in range(3):
            await flow.start(Message(f"b{i}", B))
        stats = flow.stats().shedding
        assert stats is not None
        assert stats.fair_admitted == 3
        assert stats.throttle.refused == refused


async def test_overloaded_refuses_the_busy_tenant_and_admits_the_quiet_one(
    make_flow: MakeFlow,
) -> None:
    flow = holder(make_flow)
    assert flow.load is not None
    async with asyncio.timeout(10):
        for i in range(4):
            await flow.start(Message(i, A))
        flow.load.observe(time.monotonic(), queue_fill=1.0)
        assert flow.congestion is CongestionState.OVERLOADED
        with pytest.raises(StreamError) as info:
            await flow.start(Message("more", A))
        assert info.value.code is ErrorCode.OVERLOADED
        assert "4" not in info.value.message  # no count of anyone's streams
        # b may catch up with a's share (4 of 8 in flight), no further.
        for i in range(4):
            await flow.start(Message(f"b{i}", B))
        with pytest.raises(StreamError):
            await flow.start(Message("b-over", B))
        # A third tenant, quiet until now, still gets in.
        await flow.start(Message("c", Headers(tenant="c")))
        stats = flow.stats().shedding
        assert stats is not None
        assert (stats.fair_admitted, stats.refused) == (5, 2)


async def test_one_tenant_alone_is_refused_as_before(make_flow: MakeFlow) -> None:
    flow = holder(make_flow)
    assert flow.load is not None
    async with asyncio.timeout(10):
        await flow.start(Message(0, A))
        flow.load.observe(time.monotonic(), queue_fill=1.0)
        with pytest.raises(StreamError):
            await flow.start(Message(1, A))


async def test_the_per_tenant_cap_still_applies_to_a_quiet_tenant(make_flow: MakeFlow) -> None:
    flow = holder(make_flow, limits=Limits(max_streams_per_tenant=2))
    assert flow.load is not None
    async with asyncio.timeout(10):
        for i in range(2):
            await flow.start(Message(i, A))
        with pytest.raises(StreamError) as info:
            await flow.start(Message("third", A))
        assert info.value.message == "tenant 'a' has reached its stream limit (2); retry later"


async def test_shedding_takes_its_victims_from_the_tenant_over_its_share(
    make_flow: MakeFlow,
) -> None:
    flow = holder(make_flow, shedding=SheddingPolicy(shed_per_probe=1))
    assert flow.load is not None
    async with asyncio.timeout(10):
        # A run that may not be shed (high priority): shedding protects it.
        protected = await flow.start(Message("vip", Headers(tenant="c", priority=5)))
        a_runs = [await flow.start(Message(i, A)) for i in range(3)]
        b_run = await flow.start(Message("b", B))  # the youngest: the old first victim
        flow.load.observe(time.monotonic(), queue_fill=1.0)  # overloaded, and held
        states = {sid: flow.brief(sid) for sid in [protected, *a_runs, b_run]}
        ended = [sid for sid, brief in states.items() if brief is None or brief.state != "running"]
        # One victim, a's youngest: a holds 3 of 5 runs, over its share; b is below.
        assert ended == [a_runs[-1]]
        stats = flow.stats().shedding
        assert stats is not None
        assert stats.shed_accepted == 1
