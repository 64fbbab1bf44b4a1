"""Byte budgets on the wall clock: bytes/s pacing, and the checks with real-time margins.

Moved from tests/unit/runtime/test_budgets.py: these measure rates on the wall
clock or depend on how long a reader pauses between reads, so they run in the
perf suite (``-m perf``). Their helpers are the unit test's, imported from
tests/unit/runtime (on sys.path: see conftest.py).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from flowkit import MakeFlow, read_all
from test_budgets import ACME, CHUNK, OTHER, emitter, fill

from icefloe import (
    Limits,
    Message,
    Node,
    NodePolicy,
    Subscription,
    WouldBlock,
)
from icefloe.runtime.inflight import RECHECK_S

pytestmark = pytest.mark.perf

#: slack on the pacing bound for the reader's stamps: a stamp is taken when the
#: reader runs, which a loaded machine delays (was 20 ms). Unpaced, the 40,000
#: bytes would arrive in milliseconds, far over the bound
STAMP_SLACK_S = 0.1
#: the paced rate is at least this share of the limit (was 0.5): loose, because a
#: loaded machine only ever makes the producer slower; a pacer that crawled fails
MIN_RATE_SHARE = 0.25


def assert_paced(sent: float, elapsed: float, rate: float, *, burst: float) -> None:
    """``sent`` bytes in ``elapsed`` s obey a ``rate`` bucket of ``burst``: never
    more than the bucket allows (with STAMP_SLACK_S for the reader's stamps), and
    not far below it (loose: a loaded machine only ever makes it slower)."""
    assert sent <= burst + rate * (elapsed + STAMP_SLACK_S), (sent, elapsed)
    assert sent >= MIN_RATE_SHARE * rate * elapsed, (sent, elapsed)


async def test_stream_bytes_per_s_paces_the_producer(make_flow: MakeFlow) -> None:
    rate = 40_000.0
    flow = make_flow(emitter(400).to(), limits=Limits(stream_bytes_per_s=rate, bytes_burst_s=0.05))
    async with asyncio.timeout(10):
        stamps = [time.monotonic() async for c in flow.stream(Message("go", ACME)) if c.text]
    # 40,000 bytes at 40,000 B/s after a 2,000-byte burst: about 0.95 s. The
    # bucket's hard bound holds however loaded the machine is: after the first
    # chunk, at most the burst plus the rate over the time (STAMP_SLACK_S for
    # the reader's stamps); a loose lower bound shows that it does not crawl.
    elapsed = stamps[-1] - stamps[0]
    assert_paced(400 * 100 - 100, elapsed, rate, burst=2_000)
    budgets = flow.stats().budgets
    assert budgets is not None
    (acme,) = budgets.tenants
    assert acme.released_bytes == 40_000
    assert acme.throttled_s > 0.5


async def test_tenant_bytes_per_s_is_shared_by_its_streams(make_flow: MakeFlow) -> None:
    rate = 40_000.0
    flow = make_flow(
        Node(emitter(100).func, name="emit", policy=NodePolicy(max_concurrency=4)).to(),
        limits=Limits(tenant_bytes_per_s=rate, bytes_burst_s=0.05),
    )
    stamps: list[float] = []

    async def stamp(sub: Subscription) -> None:
        stamps.extend([time.monotonic() async for c in sub if c.text])

    async with asyncio.timeout(10):
        await asyncio.gather(*(stamp(flow.stream(Message(i, ACME))) for i in range(4)))
        free, error = await read_all(flow.stream(Message("free", OTHER)))
    assert error is None
    assert len(free) == 101
    assert len(stamps) == 400
    # 40,000 bytes of acme's four streams after the first chunk: the shared
    # bucket's bound (see assert_paced), not four streams' worth.
    assert_paced(40_000 - 100, max(stamps) - min(stamps), rate, burst=2_000)


async def test_slow_reader_that_progresses_is_not_ended(make_flow: MakeFlow) -> None:
    # The budget stays full longer than the stall deadline, but the reader
    # keeps draining it: that is backpressure, not a stall. The deadline is
    # generous for a loaded machine (was 0.15 s over 40 chunks): a reader's
    # pause between two reads must not reach it; a budget that ended every
    # stream full for longer than the deadline would still end this one.
    limits = Limits(max_inflight_bytes_per_tenant=1_000, inflight_stall_s=0.4)
    flow = make_flow(emitter(100).to(), limits=limits)
    got = 0
    async with asyncio.timeout(20):
        async for _ in flow.stream(Message("slow", ACME)):
            got += 1
            await asyncio.sleep(0.02)  # 100 chunks: about 2 s, over five deadlines
    assert got == 101
    budgets = flow.stats().budgets
    assert budgets is not None
    assert budgets.stalled == 0
    assert budgets.memory_waits > 0


async def test_emit_nowait_over_the_limit_does_not_recount_every_call(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow(emitter(1).to(), limits=Limits(max_inflight_bytes_per_tenant=1_000))
    writer = flow.open_stream(ACME)
    flow.subscribe(writer.stream_id)
    fill(writer)
    stats = flow.stats().budgets
    assert stats is not None
    before = stats.recounts
    started = time.perf_counter()
    for _ in range(1_000):
        with pytest.raises(WouldBlock):
            writer.emit_nowait(CHUNK)
    elapsed = time.perf_counter() - started
    # At most one exact count per RECHECK_S (5 ms) of retries, over the time the
    # retries really took (was a flat 2, which a loaded machine could pass 10 ms
    # in); a recount on every call would be about 1,000.
    stats = flow.stats().budgets
    assert stats is not None
    assert stats.recounts - before <= 2 + elapsed / RECHECK_S, elapsed
    writer.abort("cancelled")
