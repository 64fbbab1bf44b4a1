"""Tests for Limits: validation, admission (overloaded) and the per-stream byte limit."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from typing import Any

import pytest
from flowkit import MakeFlow, until

from icefloe import (
    Context,
    ErrorCode,
    Headers,
    Limits,
    Message,
    Node,
    NodePolicy,
    StreamClosedError,
    StreamError,
    WouldBlock,
    create,
)

ACME = Headers(tenant="acme")
GLOBEX = Headers(tenant="globex")


async def ticker(msg: Message, ctx: Context) -> None:
    for i in range(msg.payload):
        await ctx.emit_chunk(parent=msg, text=f"t{i}")
    await ctx.emit_chunk(parent=msg, text="", done=True)


async def idle(msg: Message, ctx: Context) -> None:
    pass


def texts(n: int) -> list[str]:
    return [f"t{i}" for i in range(n)] + [""]


# -- validation --------------------------------------------------------------------------


def test_defaults() -> None:
    limits = Limits()
    assert limits.max_streams == 10_000
    assert limits.max_streams_per_tenant == 2_500
    assert limits.max_bytes == 256 * 1024 * 1024
    assert limits.stream_buffer == 64
    assert limits.stream_max_bytes == 4 * 1024 * 1024
    assert limits.stream_history == 0
    assert limits.linger_s == 30.0
    assert limits.reorder_limit == 1024


def test_none_lifts_admission_limits_and_zeros_are_allowed_where_documented() -> None:
    limits = Limits(
        max_streams=None, max_streams_per_tenant=None, max_bytes=None, stream_history=0, linger_s=0
    )
    assert limits.max_streams is None
    assert limits.linger_s == 0


@pytest.mark.parametrize("field", ["max_streams", "max_streams_per_tenant", "max_bytes"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True, "10"])
def test_bad_admission_limits_are_value_errors(field: str, value: object) -> None:
    if (field, value) == ("max_streams_per_tenant", 0):
        return  # 0 is the default: a share of max_streams (tested below)
    with pytest.raises(ValueError, match=field):
        Limits(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("max_streams", "per_tenant"), [(10_000, 2_500), (60, 15), (3, 1), (1, 1), (None, None)]
)
def test_the_per_tenant_cap_defaults_to_a_quarter_of_max_streams(
    max_streams: int | None, per_tenant: int | None
) -> None:
    assert Limits(max_streams=max_streams).max_streams_per_tenant == per_tenant
    assert Limits(max_streams=max_streams, max_streams_per_tenant=0) == Limits(
        max_streams=max_streams
    )
    # An explicit cap (or None: no cap) is kept as given.
    assert Limits(max_streams=max_streams, max_streams_per_tenant=7).max_streams_per_tenant == 7
    assert Limits(max_streams_per_tenant=None).max_streams_per_tenant is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stream_buffer": 0},
        {"stream_buffer": None},
        {"stream_buffer": 2.0},
        {"stream_max_bytes": 0},
        {"stream_max_bytes": False},
        {"stream_history": -1},
        {"stream_history": 1.0},
        {"reorder_limit": 0},
        {"linger_s": -0.5},
        {"linger_s": "30"},
        {"linger_s": None},
    ],
)
def test_bad_stream_limits_are_value_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Limits(**kwargs)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_linger_is_value_error(value: float) -> None:
    with pytest.raises(ValueError, match="linger_s"):
        Limits(linger_s=value)


def test_limits_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Limits().max_streams = 1  # type: ignore[misc]


@pytest.mark.parametrize("queue_maxsize", [0, -3, 1.0])
def test_bad_queue_maxsize_is_value_error(queue_maxsize: object) -> None:
    with pytest.raises(ValueError, match="queue_maxsize"):
        create(Node(idle).to(), queue_maxsize=queue_maxsize)  # type: ignore[arg-type]


def test_create_needs_a_node_and_unique_names() -> None:
    with pytest.raises(ValueError, match="at least one node"):
        create()
    with pytest.raises(ValueError, match="unique"):
        create(Node(idle, name="x").to(Node(ticker, name="x")))
    with pytest.raises(TypeError):
        create(Node(idle))  # type: ignore[arg-type]


# -- admission ---------------------------------------------------------------------------


async def test_max_streams_refuses_new_streams_and_keeps_accepted_ones(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow(
        Node(ticker, name="ticker").to(), limits=Limits(max_streams=2, max_streams_per_tenant=None)
    )
    async with asyncio.timeout(10):
        first = flow.stream(Message(payload=20, headers=ACME))
        second = flow.stream(Message(payload=20, headers=GLOBEX))
        for headers in (ACME, GLOBEX):
            with pytest.raises(StreamError) as info:
                flow.stream(Message(payload=1, headers=headers))
            assert info.value.code is ErrorCode.OVERLOADED
            # Nothing of the flow's totals (other tenants' load) in the refusal.
            assert info.value.message == "the server is at capacity; retry later"
            assert not any(ch.isdigit() for ch in info.value.message)
        with pytest.raises(StreamError) as info:
            flow.open_stream(ACME)
        assert info.value.code is ErrorCode.OVERLOADED
        stats = flow.stats().streams
        assert (stats.admitted, stats.refused, stats.active, stats.registered) == (2, 3, 2, 2)
        assert [c.text async for c in first] == texts(20)
        # One slot is free again; the other accepted stream is unaffected.
        third = flow.stream(Message(payload=3, headers=ACME))
        assert [c.text async for c in second] == texts(20)
        assert [c.text async for c in third] == texts(3)
    stats = flow.stats().streams
    assert (stats.admitted, stats.refused, stats.active, stats.registered) == (3, 3, 0, 0)


async def test_max_streams_per_tenant_only_limits_that_tenant(make_flow: MakeFlow) -> None:
    limits = Limits(max_streams_per_tenant=2)
    flow = make_flow(Node(ticker, name="ticker").to(), limits=limits)
    async with asyncio.timeout(10):
        acme = [flow.stream(Message(payload=5, headers=ACME)) for _ in range(2)]
        with pytest.raises(StreamError) as info:
            flow.stream(Message(payload=5, headers=Headers(tenant="acme", topic="other")))
        assert info.value.code is ErrorCode.OVERLOADED
        # The tenant's own cap is named; no flow-wide count is.
        assert info.value.message == "tenant 'acme' has reached its stream limit (2); retry later"
        globex = [flow.stream(Message(payload=5, headers=GLOBEX)) for _ in range(2)]
        for sub in acme + globex:
            assert [c.text async for c in sub] == texts(5)
        # Finished streams no longer count against the tenant.
        again = flow.stream(Message(payload=1, headers=ACME))
        assert [c.text async for c in again] == texts(1)
    assert flow.stats().streams.refused == 1


async def test_max_bytes_refuses_new_streams_while_bytes_are_buffered(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow(Node(idle, name="idle").to(), limits=Limits(max_bytes=100))
    async with asyncio.timeout(10):
        writer = flow.open_stream(ACME)
        reader = flow.subscribe(writer.stream_id)
        await writer.emit("x" * 60)
        other = flow.open_stream(ACME)  # 60 < 100 bytes held: admitted
        await other.emit("y" * 40)
        assert flow.stats().streams.bytes_in_flight == 100
        with pytest.raises(StreamError) as info:
            flow.stream(Message(payload=1, headers=ACME))
        assert info.value.code is ErrorCode.OVERLOADED
        assert info.value.message == "the server is at capacity; retry later"
        # An admitted stream is never refused: it may go past the flow's limit.
        await writer.emit("z" * 10)
        assert [len((await anext(reader)).text) for _ in range(2)] == [60, 10]
        other.abort("cancelled")
        assert flow.stats().streams.bytes_in_flight == 0
        sub = flow.stream(Message(payload=1, headers=ACME))
        await writer.close()
        assert [c.done async for c in reader] == [True]
        await sub.aclose()
    assert flow.stats().streams.refused == 1


async def test_refused_stream_leaves_nothing_behind(make_flow: MakeFlow) -> None:
    flow = make_flow(Node(ticker, name="ticker").to(), limits=Limits(max_streams=1))
    async with asyncio.timeout(10):
        held = flow.stream(Message(payload=1, headers=ACME))
        refused = Message(payload=2, headers=ACME)
        with pytest.raises(StreamError):
            flow.stream(refused)
        assert flow.stats().streams.registered == 1
        assert flow.brief(refused.trace_id) is None
        assert flow.finished(refused.trace_id) is None  # never registered at all
        assert flow.stats().queue_depth == 0
        await held.aclose()
        assert [c.text async for c in flow.stream(refused)] == texts(2)


async def test_a_node_refused_a_new_stream_gets_stream_closed_error(make_flow: MakeFlow) -> None:
    refusals: list[StreamClosedError] = []

    async def brancher(msg: Message, ctx: Context) -> None:
        try:
            await ctx.emit_chunk(parent=msg, stream_id=msg.trace_id + ".extra", text="x")
        except StreamClosedError as exc:
            refusals.append(exc)
        await ctx.emit_chunk(parent=msg, text="main")
        await ctx.emit_chunk(parent=msg, text="", done=True)

    flow = make_flow(Node(brancher, name="brancher").to(), limits=Limits(max_streams=1))
    async with asyncio.timeout(10):
        assert [c.text async for c in flow.stream(Message(payload=None, headers=ACME))] == [
            "main",
            "",
        ]
    assert len(refusals) == 1
    assert refusals[0].code is ErrorCode.OVERLOADED
    assert flow.stats().streams.refused == 1


async def test_node_queue_maxsize_overrides_the_flow_default(make_flow: MakeFlow) -> None:
    a = Node(idle, name="a", policy=NodePolicy(queue_maxsize=3))
    b = Node(idle, name="b")
    flow = make_flow(a.to(b), b.to(), queue_maxsize=7)
    sizes = {n.name: n.queue.maxsize for n in flow.stats().nodes}
    assert sizes == {"a": 3, "b": 7}
    assert flow.stats().egress.maxsize == 7


async def test_a_gap_wider_than_reorder_limit_fails_the_stream(make_flow: MakeFlow) -> None:
    refused: list[StreamClosedError] = []

    async def gappy(msg: Message, ctx: Context) -> None:
        try:
            for seq in (5, 4, 3):  # seq 0 never comes; the third one overflows
                await ctx.emit_chunk(parent=msg, seq=seq, text=str(seq))
        except StreamClosedError as exc:
            refused.append(exc)

    flow = make_flow(Node(gappy, name="gappy").to(), limits=Limits(reorder_limit=2))
    async with asyncio.timeout(10):
        with pytest.raises(StreamError) as info:
            await anext(flow.stream(Message(payload=None, headers=ACME)))
    assert info.value.code is ErrorCode.FAILED
    assert "gap" in info.value.message
    assert len(refused) == 1
    assert refused[0].code is ErrorCode.FAILED


# -- the per-stream byte limit -------------------------------------------------------------


async def test_stream_max_bytes_stops_a_writer_until_bytes_are_read(make_flow: MakeFlow) -> None:
    flow = make_flow(Node(idle, name="idle").to(), limits=Limits(stream_max_bytes=10))
    async with asyncio.timeout(10):
        writer = flow.open_stream(ACME)
        reader = flow.subscribe(writer.stream_id)
        await writer.emit("x" * 6)
        await writer.emit("x" * 6)  # 12 bytes held: over the limit, the next emit waits
        with pytest.raises(WouldBlock):
            writer.emit_nowait("y")
        blocked = asyncio.create_task(writer.emit("y"))
        await until(lambda: flow.stats().streams.producers_waiting == 1)
        assert not blocked.done()
        assert (await anext(reader)).text == "x" * 6  # 6 bytes held: room again
        assert (await blocked).seq == 2
        await writer.close()
        assert [c.text async for c in reader] == ["x" * 6, "y", ""]


async def test_history_exactly_at_stream_max_bytes_does_not_block_the_writer(
    make_flow: MakeFlow,
) -> None:
    # Regression: history that exactly filled stream_max_bytes was never trimmed.
    limits = Limits(stream_history=10, stream_max_bytes=4)
    flow = make_flow(Node(idle, name="idle").to(), limits=limits)
    writer = flow.open_stream(ACME)
    reader = flow.subscribe(writer.stream_id)
    try:
        for _ in range(4):
            await writer.emit("a")
        assert [(await anext(reader)).seq for _ in range(4)] == [0, 1, 2, 3]
        async with asyncio.timeout(1):
            await writer.emit("b")
    finally:
        writer.abort("cancelled")
        await reader.aclose()
