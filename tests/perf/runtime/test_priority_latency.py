"""Priority under saturation: a high-priority stream keeps its latency budget; low ones wait."""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise

import pytest
from flowkit import MakeFlow, until

from icefloe import Context, Headers, Message, Node, NodePolicy

pytestmark = pytest.mark.perf

#: generous for a loaded machine (was 250 ms): served after the queued flood,
#: a high-priority stream would wait about 5 s for its first token and fail
BUDGET_MS = 1000.0
TOKENS = 10
GAP_S = 0.01  # a token every 10 ms, as an LLM would


async def test_high_priority_stays_within_budget_while_low_priority_queues(
    make_flow: MakeFlow,
) -> None:
    async def llm(msg: Message, ctx: Context) -> None:
        for i in range(TOKENS):
            await asyncio.sleep(GAP_S)
            await ctx.emit_chunk(parent=msg, text=str(i))
        await ctx.emit_chunk(parent=msg, text="", done=True)

    policy = NodePolicy(max_concurrency=4, queue_maxsize=512, latency_budget_ms=BUDGET_MS)
    flow = make_flow(Node(llm, name="llm", policy=policy).to())

    async def run(priority: int) -> tuple[float, list[float]]:
        """Time to first token and the gaps between tokens, in seconds."""
        started = time.time_ns()
        stream = flow.stream(Message(priority, Headers(tenant="t", priority=priority)))
        stamps = [chunk.ts async for chunk in stream]
        gaps = [(b - a) / 1e9 for a, b in pairwise(stamps)]
        return (stamps[0] - started) / 1e9, gaps

    async with asyncio.timeout(60):
        # 200 low-priority streams saturate the 4 workers: ~50 rounds of ~0.1 s.
        flood = [asyncio.ensure_future(run(0)) for _ in range(200)]
        # The flood is running and queued.
        await until(lambda: flow.stats().nodes[0].queue.used > 150)
        high = [await run(5) for _ in range(3)]
        low = await asyncio.gather(*flood)

    for first, gaps in high:
        # Served at the next free worker, not after the queued flood.
        assert first < BUDGET_MS / 1000
        assert max(gaps) < BUDGET_MS / 1000
    # The low-priority streams were the ones held back.
    waits = sorted(first for first, _ in low)
    assert waits[-1] > 1.0
    assert waits[len(waits) // 2] > max(first for first, _ in high)
    latency = flow.stats().nodes[0].latency
    assert latency is not None
    assert latency.observations == 203 * (TOKENS + 1)
    assert latency.violations > 0  # the queued low-priority first tokens
    assert latency.p99_s is not None
