"""Load shedding: an overloaded flow refuses new streams, keeps accepted ones whole, recovers.

The overload and its recovery, timed on the wall clock, are in
tests/perf/runtime/test_shedding_timing.py (it and the integration and browser
tests use ``overload`` from here).
"""

from __future__ import annotations

import asyncio
import time

from flowkit import MakeFlow, read_all

from icefloe import Context, Headers, Message, Node, NodePolicy
from icefloe.core.congestion import CongestionPolicy, CongestionState, Thresholds
from icefloe.runtime.flow import Flow

H = Headers(tenant="t")
#: reacts to one late probe, steps down after 0.2 s without pressure
FAST = CongestionPolicy(
    alpha=1.0,
    dwell_s=0.2,
    lag_congested_s=Thresholds(0.05, 0.02),
    lag_overloaded_s=Thresholds(0.1, 0.05),
)


def block_loop(seconds: float) -> None:
    """Hold the event loop, as a CPU-bound handler would (this is the load)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def overload(flow: Flow) -> None:
    """Block the loop until the flow's load watch says overloaded (bounded)."""
    seen = asyncio.Event()

    def listener(old: CongestionState, new: CongestionState) -> None:
        if new is CongestionState.OVERLOADED:
            seen.set()

    assert flow.load is not None
    flow.load.add_listener(listener)
    try:
        async with asyncio.timeout(10):
            while not seen.is_set():
                block_loop(0.25)
                await asyncio.sleep(0)  # let the late probe run
                if flow.congestion is CongestionState.OVERLOADED:
                    break
    finally:
        flow.load.remove_listener(listener)


def counter(n: int, reliability: str = "at_most_once") -> Node:
    async def count(msg: Message, ctx: Context) -> None:
        for i in range(n):
            await ctx.emit_chunk(parent=msg, text=str(i))
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return Node(count, name="count", policy=NodePolicy(reliability=reliability, max_concurrency=8))


async def test_congested_is_reported_but_admits(make_flow: MakeFlow) -> None:
    flow = make_flow(counter(3).to(), congestion=FAST)
    assert flow.load is not None
    # Drive the monitor straight to congested (a lag between the two thresholds).
    flow.load.observe(time.monotonic(), loop_lag_s=0.07)
    assert flow.congestion is CongestionState.CONGESTED
    low = flow.stream(Message("low", Headers(tenant="t", priority=-5)))
    async with asyncio.timeout(10):
        chunks, error = await read_all(low)
    assert error is None
    assert len(chunks) == 4


async def test_shedding_can_be_turned_off(make_flow: MakeFlow) -> None:
    flow = make_flow(counter(3).to(), congestion=None)
    assert flow.load is None
    assert flow.congestion is CongestionState.NORMAL
    async with asyncio.timeout(10):
        chunks, _ = await read_all(flow.stream(Message("x", H)))
    assert len(chunks) == 4
