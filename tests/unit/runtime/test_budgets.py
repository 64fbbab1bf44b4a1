"""Byte budgets: bytes/s per stream and per tenant, in-flight bytes per tenant and per flow."""

from __future__ import annotations

import asyncio
import time

import pytest
from flowkit import MakeFlow, read_all, until

from icefloe import (
    Context,
    Headers,
    Limits,
    Message,
    Node,
    NodePolicy,
    StreamError,
    Subscription,
    WouldBlock,
)
from icefloe.exceptions import ErrorCode
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
    ):
        with pytest.raises(ValueError):
            Limits(**bad)  # type: ignore[arg-type]


async def test_no_byte_limit_builds_no_budgets(make_flow: MakeFlow) -> None:
    flow = make_flow(emitter(3).to())
    assert flow._budgets is None
    assert flow.stats().budgets is None


async def test_stream_bytes_per_s_paces_the_producer(make_flow: MakeFlow) -> None:
    rate = 40_000.0
    flow = make_flow(emitter(400).to(), limits=Limits(stream_bytes_per_s=rate, bytes_burst_s=0.05))
    async with asyncio.timeout(10):
        stamps = [time.monotonic() async for c in flow.stream(Message("go", ACME)) if c.text]
    # 40,000 bytes at 40,000 B/s after a 2,000-byte burst: about 0.95 s.
    measured = (400 * 100 - 2_000 - 100) / (stamps[-1] - stamps[0])
    assert measured == pytest.approx(rate, rel=0.05)
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
    # 40,000 bytes of acme's four streams, minus the 2,000-byte burst and the first chunk.
    measured = (40_000 - 2_000 - 100) / (max(stamps) - min(stamps))
    assert measured == pytest.approx(rate, rel=0.05)


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
