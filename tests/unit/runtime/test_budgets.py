"""Byte budgets: bytes/s per stream and per tenant, in-flight bytes per tenant and per flow.

The pacing measured on the wall clock, and the checks that depend on real-time
margins, are in tests/perf/runtime/test_budgets_timing.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from itertools import pairwise
from types import SimpleNamespace
from typing import Any

import pytest
from flowkit import MakeFlow, read_all, until

from icefloe import (
    Context,
    Headers,
    Limits,
    Message,
    Node,
    StreamError,
    WouldBlock,
)
from icefloe.exceptions import ErrorCode
from icefloe.runtime.budgets import Budgets, Gate
from icefloe.runtime.flow import Flow
from icefloe.runtime.writer import StreamWriter

ACME = Headers(tenant="acme")
OTHER = Headers(tenant="other")
CHUNK = "x" * 100


def emitter(n: int) -> Node:
    async def emit(msg: Message, ctx: Context) -> None:
        for _ in range(n):
            await ctx.emit_chunk(parent=msg, text=CHUNK)
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return Node(emit, name="emit")


def fill(writer: StreamWriter) -> int:
    """Emit without waiting until a budget says no; how many chunks went."""
    sent = 0
    while True:
        try:
            writer.emit_nowait(CHUNK)
        except WouldBlock:
            return sent
        sent += 1


def test_limits_validate_byte_budgets() -> None:
    for bad in (
        {"stream_bytes_per_s": 0},
        {"tenant_bytes_per_s": float("inf")},
        {"bytes_burst_s": -1},
        {"max_inflight_bytes_per_tenant": 0},
        {"max_inflight_bytes": 1.5},
        {"inflight_stall_s": 0},
    ):
        with pytest.raises(ValueError):
            Limits(**bad)  # type: ignore[arg-type]


async def test_no_byte_limit_builds_no_budgets(make_flow: MakeFlow) -> None:
    flow = make_flow(emitter(3).to())
    assert flow.stats().budgets is None  # stats show the flow's budgets whenever it has some


async def test_tenant_inflight_bytes_block_producers_and_refuse_new_streams(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow(
        emitter(1).to(),
        limits=Limits(max_inflight_bytes_per_tenant=1_000, stream_buffer=1_000),
    )
    writer = flow.open_stream(ACME)
    reader = flow.subscribe(writer.stream_id)
    sent = fill(writer)
    assert 7 <= sent <= 10  # stops at or before the limit
    async with asyncio.timeout(5):
        blocked = asyncio.ensure_future(writer.emit(CHUNK))
        await until(lambda: flow.stats().budgets.tenants[0].blocked == 1)  # type: ignore[union-attr]
        assert not blocked.done()
        # Its producer waits: the tenant's new streams are refused, others admitted.
        with pytest.raises(StreamError) as refused:
            flow.stream(Message("more", ACME))
        assert refused.value.code is ErrorCode.LIMIT_EXCEEDED
        assert "acme" in refused.value.message
        other = flow.open_stream(OTHER)
        other.emit_nowait(CHUNK)
        budgets = flow.stats().budgets
        assert budgets is not None
        by_tenant = {t.tenant: t for t in budgets.tenants}
        assert by_tenant["acme"].inflight_bytes == sent * 100
        assert by_tenant["acme"].refused == 1
        assert by_tenant["other"].inflight_bytes == 100
        # The blocked emit resumes once the reader drains below three quarters.
        for _ in range(sent):
            await anext(reader)
        await blocked
        assert (await anext(reader)).seq == sent
    writer.abort("cancelled")
    other.abort("cancelled")


async def test_flow_inflight_bytes_refuse_as_overloaded(make_flow: MakeFlow) -> None:
    flow = make_flow(emitter(1).to(), limits=Limits(max_inflight_bytes=500, stream_buffer=100))
    writer = flow.open_stream(ACME)
    reader = flow.subscribe(writer.stream_id)
    assert fill(writer) == 4  # the fifth would reach 500 bytes
    async with asyncio.timeout(5):
        blocked = asyncio.ensure_future(writer.emit(CHUNK))
        await until(lambda: flow.stats().budgets.memory_waits == 1)  # type: ignore[union-attr]
        with pytest.raises(StreamError) as refused:
            flow.open_stream(OTHER)
        assert refused.value.code is ErrorCode.OVERLOADED
        # ACME's bytes are not OTHER's business: the refusal carries no figure
        assert not any(c.isdigit() for c in refused.value.message), refused.value.message
        writer.abort("cancelled")
        with pytest.raises(AssertionError):  # StreamClosedError: it ended while waiting
            await blocked
        reader.close()
        # Cancelling dropped the unread bytes: admission is open again.
        chunks, error = await read_all(flow.stream(Message("after", OTHER)))
    assert error is None
    assert len(chunks) == 2


async def test_waiting_producer_sees_its_stream_end(make_flow: MakeFlow) -> None:
    flow = make_flow(emitter(1).to(), limits=Limits(max_inflight_bytes_per_tenant=300))
    writer = flow.open_stream(ACME)
    flow.subscribe(writer.stream_id)
    for _ in range(3):
        await writer.emit(CHUNK)
    async with asyncio.timeout(5):
        blocked = asyncio.ensure_future(writer.emit(CHUNK))
        await until(lambda: flow.stats().budgets.tenants[0].blocked == 1)  # type: ignore[union-attr]
        flow.cancel(writer.stream_id)
        with pytest.raises(AssertionError):  # StreamClosedError
            await blocked


# -- a memory budget cannot stall for good --------------------------------------


async def eventually(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` every few ms until it holds; fail after 5 s."""
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.005)


def ended_code(flow: Flow, sid: str) -> str | None:
    """The error code ``sid`` ended with, "" if it is still running."""
    stats = flow.lookup(sid)
    if stats is not None:
        return "" if stats.state == "running" else stats.code
    finished = flow.finished(sid)
    assert finished is not None
    return finished.code


def memory_waits(flow: Flow) -> int:
    """Times a producer of ``flow`` waited for in-flight bytes to drain."""
    budgets = flow.stats().budgets
    assert budgets is not None
    return budgets.memory_waits


async def test_stream_nobody_reads_is_ended_not_its_tenant(make_flow: MakeFlow) -> None:
    limits = Limits(max_inflight_bytes_per_tenant=2_000, inflight_stall_s=0.2)
    flow = make_flow(emitter(50).to(), limits=limits)
    stalled = await flow.start(Message("A", ACME))  # nobody ever reads it
    await eventually(lambda: memory_waits(flow) == 1)
    with pytest.raises(StreamError) as refused:
        flow.stream(Message("early", ACME))
    assert refused.value.code is ErrorCode.LIMIT_EXCEEDED
    # Within the stall deadline (plus re-checks), the stream holding the
    # tenant's budget is ended with limit_exceeded, and the tenant goes on.
    await eventually(lambda: ended_code(flow, stalled) == "limit_exceeded")
    async with asyncio.timeout(5):
        chunks, error = await read_all(flow.stream(Message("B", ACME)))
    assert error is None
    assert len(chunks) == 51
    stats = flow.stats().budgets
    assert stats is not None
    assert stats.stalled == 1
    assert stats.tenants[0].inflight_bytes == 0


async def test_paused_reader_is_ended_with_limit_exceeded(make_flow: MakeFlow) -> None:
    limits = Limits(max_inflight_bytes_per_tenant=1_000, inflight_stall_s=0.2)
    flow = make_flow(emitter(50).to(), limits=limits)
    paused = flow.stream(Message("paused", ACME))
    async with asyncio.timeout(5):
        await anext(paused)  # reads one chunk, then stops reading
        await eventually(lambda: ended_code(flow, paused.stream_id) == "limit_exceeded")
        chunks, error = await read_all(paused)
    assert error is not None
    assert error.code is ErrorCode.LIMIT_EXCEEDED
    assert len(chunks) < 50


async def test_recheck_backs_off_and_recounts_cheaply_while_stalled(
    make_flow: MakeFlow, monkeypatch: pytest.MonkeyPatch
) -> None:
    from icefloe.core import streamlog as stream_module
    from icefloe.runtime.inflight import RECHECK_MAX_S

    limits = Limits(max_inflight_bytes_per_tenant=2_000, inflight_stall_s=60.0)
    flow = make_flow(emitter(50).to(), limits=limits)
    await flow.start(Message("A", ACME))
    budgets = flow._budgets
    assert budgets is not None
    in_flight = budgets.in_flight
    await eventually(lambda: in_flight.memory_waits == 1)
    sized = 0
    real = stream_module.chunk_size

    def counting(chunk: Any) -> int:
        nonlocal sized
        sized += 1
        return real(chunk)

    monkeypatch.setattr(stream_module, "chunk_size", counting)
    before = in_flight.recounts
    budgets.recount()
    budgets.recount()
    assert in_flight.recounts == before + 2
    assert sized == 0  # an unchanged stream costs O(1), not O(its unread chunks)
    assert in_flight.inflight == 1_900  # the 20th chunk waits to be released
    # Nothing moves: the re-check interval doubles up to its ceiling.
    await eventually(lambda: in_flight.recheck_s == RECHECK_MAX_S)


# -- bytes/s: oversize chunks, and what counts as released -------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def bare_gate(limits: Limits, clock: FakeClock) -> tuple[Budgets, Gate]:
    """A gate of one stream of tenant acme, on a fake clock (no flow)."""
    budgets = Budgets(limits, [], clock)  # type: ignore[arg-type]
    state = SimpleNamespace(budget_gate=None, headers=ACME)
    return budgets, budgets.gate(state)  # type: ignore[arg-type]


@pytest.mark.parametrize("which", ["stream_bytes_per_s", "tenant_bytes_per_s"])
def test_try_acquire_charges_oversize_chunks_in_full(which: str) -> None:
    # 1,000 B/s with a 100-byte burst; every emit_nowait is a 1,000-byte chunk.
    clock = FakeClock()
    _, gate = bare_gate(Limits(**{which: 1_000.0}, bytes_burst_s=0.1), clock)
    granted: list[float] = []
    for step in range(3_000):  # 3 s, a try every millisecond
        clock.now = step / 1_000
        if gate.try_acquire(1_000):
            granted.append(clock.now)
    # The bucket's bound: its burst plus its rate over the time, plus the one
    # chunk charged ahead. Paying only the burst, it let one through every 0.1 s.
    assert 1_000 * len(granted) <= 100 + 1_000 * 3.0 + 900
    assert len(granted) >= 2
    assert all(b - a >= 0.999 for a, b in pairwise(granted))
    # Small chunks wait for the debt as well.
    clock.now = 10.0
    assert gate.try_acquire(1_000)
    clock.now = 10.5
    assert not gate.try_acquire(10)
    clock.now = 10.95  # 900 bytes of debt repaid at 10.9, then 50 bytes of refill
    assert gate.try_acquire(10)
    assert not gate.try_acquire(50)


async def test_acquire_counts_bytes_released_only_after_the_wait() -> None:
    clock = FakeClock()  # frozen until the test moves it: the wait cannot end early
    budgets, gate = bare_gate(Limits(stream_bytes_per_s=1_000.0, bytes_burst_s=0.1), clock)
    await gate.acquire(100)  # the burst: no wait
    async with asyncio.timeout(5):
        waiting = asyncio.ensure_future(gate.acquire(100))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not waiting.done()
        assert budgets.statistics().tenants[0].released_bytes == 100
        clock.now = 1.0
        await waiting
    assert budgets.statistics().tenants[0].released_bytes == 200


async def test_a_waiting_producer_is_not_overtaken_by_emit_nowait() -> None:
    clock = FakeClock()
    budgets, gate = bare_gate(Limits(tenant_bytes_per_s=1_000.0, bytes_burst_s=0.1), clock)
    await gate.acquire(100)  # the burst: no wait
    async with asyncio.timeout(5):
        waiting = asyncio.ensure_future(gate.acquire(100))  # pays ahead, waits 0.1 s
        await asyncio.sleep(0)
        clock.now = 0.15  # 150 bytes of refill, 100 of them promised to the waiter
        assert not gate.try_acquire(100)
        assert gate.try_acquire(50)
        await waiting
    assert budgets.statistics().tenants[0].released_bytes == 250
