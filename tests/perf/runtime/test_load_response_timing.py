"""Throttling and shedding timed on the wall clock: starts spaced in real time, recovery time.

Moved from tests/unit/runtime/test_load_response.py: these assert wall-clock
durations (how far apart throttled starts begin, how soon an overloaded flow
is normal again), so they run in the perf suite (``-m perf``). Their helpers
are the unit test's, imported from tests/unit/runtime (on sys.path: see conftest.py).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from flowkit import MakeFlow, read_all
from test_load_response import FAST, LOW, counter, press

from icefloe import Context, Headers, Message, Node, NodePolicy
from icefloe.core.congestion import CongestionPolicy, CongestionState
from icefloe.exceptions import ErrorCode
from icefloe.runtime.flow import Flow
from icefloe.runtime.throttle import SheddingPolicy

pytestmark = pytest.mark.perf

HIGH = Headers(tenant="t", priority=5)
#: how soon the flow is normal again once the pressure is gone: generous for a
#: loaded machine (was 2 s; the dwell is 0.2 s); a flow that never steps down fails
RECOVERY_S = 5.0


def shed_accepted(flow: Flow) -> int:
    """Accepted streams load shedding ended so far."""
    shedding = flow.stats().shedding
    assert shedding is not None
    return shedding.shed_accepted


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
    flow.load.observe(time.monotonic(), loop_lag_s=0.07)
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
    assert firsts[-1] >= 0.25  # a lower bound: a loaded machine only makes it later
    assert flow.stats().deferred == 0


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
        await press(flow, lambda: shed_accepted(flow) >= 4)
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
        assert time.monotonic() - calm < RECOVERY_S
    stats = flow.stats().shedding
    assert stats is not None
    assert stats.shed_accepted == 4
    assert stats.candidates == 0
    await keeper.aclose()
