"""The icefloe side of every scenario, through the public API only.

Each function builds a fresh flow, runs it inside ``async with`` (so it is
stopped whatever happens), measures, and returns one :data:`~measure.Sample`.
Flow construction and start-up are outside the timed region; the timed region
starts when the run's message enters the flow.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from icefloe import Context, Flow, Headers, Message, Node, create
from measure import DELIVERIES_PER_S, Sample, latency_sample, throughput_sample

__all__ = [
    "icefloe_fan_out_4",
    "icefloe_loaded_latency",
    "icefloe_one_hop",
    "icefloe_paced_latency",
    "icefloe_pipeline_3",
]

HEADERS = Headers(tenant="bench")
TEXT = "tok"


def _message() -> Message:
    return Message(payload="go", headers=HEADERS)


def _check(count: int, expected: int) -> None:
    if count != expected:
        raise RuntimeError(f"icefloe delivered {count} chunks, expected {expected}")


def _source(n: int) -> Node:
    """A node emitting ``n`` text chunks and then a done chunk."""

    async def source(msg: Message, ctx: Context) -> None:
        emit = ctx.emit_chunk
        for _ in range(n):
            await emit(parent=msg, text=TEXT)
        await emit(parent=msg, text="", done=True)

    return Node(source, name="a")


async def _relay(msg: Message, ctx: Context) -> None:
    """Re-emit the received chunk unchanged (same stream, seq, text, done)."""
    ch = msg.payload
    await ctx.emit_chunk(parent=msg, stream_id=ch.stream_id, seq=ch.seq, text=ch.text, done=ch.done)


async def _drain(flow: Flow) -> int:
    """Chunks read from ``flow.stream`` of a new run, done chunk included."""
    count = 0
    async for _ in flow.stream(_message()):
        count += 1
    return count


async def icefloe_one_hop(n: int) -> Sample:
    """Chunks/s from one node's ``emit_chunk`` to a ``flow.stream`` consumer."""
    async with create(_source(n).to()) as flow:
        start = time.perf_counter()
        count = await _drain(flow)
        elapsed = time.perf_counter() - start
    _check(count, n + 1)
    return throughput_sample(n, elapsed)


async def icefloe_pipeline_3(n: int) -> Sample:
    """Chunks/s at ``flow.stream`` of a -> b -> c, where b and c re-emit every chunk."""
    a = _source(n)
    b = Node(_relay, name="b")
    c = Node(_relay, name="c")
    async with create(a.to(b), b.to(c), c.to()) as flow:
        start = time.perf_counter()
        count = await _drain(flow)
        elapsed = time.perf_counter() - start
    _check(count, n + 1)
    return throughput_sample(n, elapsed)


def _stamped_source(n: int, ack: asyncio.Event | None) -> Node:
    """A node emitting ``n`` chunks with ``data=perf_counter_ns()``, then done.

    With ``ack`` it waits for the consumer to set it after every chunk.
    """

    async def stamped(msg: Message, ctx: Context) -> None:
        emit = ctx.emit_chunk
        clock = time.perf_counter_ns
        for _ in range(n):
            await emit(parent=msg, text=TEXT, data=clock())
            if ack is not None:
                await ack.wait()
                ack.clear()
        await emit(parent=msg, text="", done=True, data=clock())

    return Node(stamped, name="stamped")


async def _latencies(flow: Flow, ack: asyncio.Event | None) -> list[int]:
    """Receipt time minus stamp, in ns, for every non-done chunk of a new run."""
    latencies: list[int] = []
    record = latencies.append
    clock = time.perf_counter_ns
    async for ch in flow.stream(_message()):
        if not ch.done:
            record(clock() - ch.data)
            if ack is not None:
                ack.set()
    return latencies


async def icefloe_loaded_latency(n: int) -> Sample:
    """p50/p99 µs from stamping to receipt through one hop, producer at full speed."""
    async with create(_stamped_source(n, None).to()) as flow:
        latencies = await _latencies(flow, None)
    _check(len(latencies), n)
    return latency_sample(latencies)


async def icefloe_paced_latency(n: int) -> Sample:
    """p50/p99 one-way µs when producer and consumer alternate one chunk at a time."""
    ack = asyncio.Event()
    async with create(_stamped_source(n, ack).to()) as flow:
        latencies = await _latencies(flow, ack)
    _check(len(latencies), n)
    return latency_sample(latencies)


@dataclass(slots=True)
class _Tally:
    """What one fan-out sink received."""

    chunks: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


def _counting_sink(tally: _Tally, name: str) -> Node:
    """A sink counting chunk messages; sets ``tally.done`` on the done chunk."""

    async def sink(msg: Message, ctx: Context) -> None:
        if msg.payload.done:
            tally.done.set()
        else:
            tally.chunks += 1

    return Node(sink, name=name)


async def icefloe_fan_out_4(n: int) -> Sample:
    """Deliveries/s (4*N / elapsed) from node a to 4 counting sinks ``a.to(b1..b4)``."""
    tallies = [_Tally() for _ in range(4)]
    sinks = [_counting_sink(t, f"b{i}") for i, t in enumerate(tallies, 1)]
    async with create(_source(n).to(*sinks)) as flow:
        start = time.perf_counter()
        await flow.emit(_message())
        await asyncio.gather(*(t.done.wait() for t in tallies))
        elapsed = time.perf_counter() - start
    for tally in tallies:
        _check(tally.chunks, n)
    return throughput_sample(4 * n, elapsed, DELIVERIES_PER_S)
