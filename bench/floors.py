"""Raw-asyncio floors: the same shapes as the icefloe scenarios, with nothing but
``asyncio.Queue(64)`` and a small slotted chunk built per item.

Each function returns one :data:`~measure.Sample`. They set the bar icefloe's
figures are divided by: what a hand-written asyncio program of the same shape
does on this machine, in this run, on this event loop.
"""

from __future__ import annotations

import asyncio
import time

from measure import DELIVERIES_PER_S, Sample, latency_sample, throughput_sample

__all__ = [
    "FloorChunk",
    "StampedChunk",
    "floor_fan_out_4",
    "floor_loaded_latency",
    "floor_one_hop",
    "floor_paced_latency",
    "floor_pipeline_3",
]

#: capacity of every floor queue, as icefloe's default ``queue_maxsize``
QUEUE_MAXSIZE = 64
STREAM_ID = "floor"
TEXT = "tok"


class FloorChunk:
    """The least a token chunk can be: stream id, seq, text, done."""

    __slots__ = ("done", "seq", "stream_id", "text")

    def __init__(self, stream_id: str, seq: int, text: str, done: bool) -> None:
        self.stream_id = stream_id
        self.seq = seq
        self.text = text
        self.done = done


class StampedChunk(FloorChunk):
    """A :class:`FloorChunk` carrying the producer's ``perf_counter_ns`` stamp."""

    __slots__ = ("stamp",)

    def __init__(self, stream_id: str, seq: int, text: str, done: bool, stamp: int) -> None:
        super().__init__(stream_id, seq, text, done)
        self.stamp = stamp


FloorQueue = asyncio.Queue[FloorChunk]


async def _produce(queue: FloorQueue, n: int) -> None:
    put = queue.put
    for seq in range(n):
        await put(FloorChunk(STREAM_ID, seq, TEXT, False))
    await put(FloorChunk(STREAM_ID, n, "", True))


async def _transform(source: FloorQueue, sink: FloorQueue) -> None:
    get = source.get
    put = sink.put
    while True:
        ch = await get()
        await put(FloorChunk(ch.stream_id, ch.seq, ch.text, ch.done))
        if ch.done:
            return


async def _drain(queue: FloorQueue) -> int:
    """Chunks taken from ``queue`` up to and including the done chunk."""
    get = queue.get
    count = 0
    while True:
        ch = await get()
        count += 1
        if ch.done:
            return count


def _check(count: int, expected: int) -> None:
    if count != expected:
        raise RuntimeError(f"floor delivered {count} chunks, expected {expected}")


async def floor_one_hop(n: int) -> Sample:
    """Chunks/s from one producer task through one queue to one consumer."""
    queue: FloorQueue = asyncio.Queue(QUEUE_MAXSIZE)
    start = time.perf_counter()
    producer = asyncio.create_task(_produce(queue, n))
    count = await _drain(queue)
    elapsed = time.perf_counter() - start
    await producer
    _check(count, n + 1)
    return throughput_sample(n, elapsed)


async def floor_pipeline_3(n: int) -> Sample:
    """Chunks/s at the consumer of producer -> transform -> transform, three queues."""
    q1: FloorQueue = asyncio.Queue(QUEUE_MAXSIZE)
    q2: FloorQueue = asyncio.Queue(QUEUE_MAXSIZE)
    q3: FloorQueue = asyncio.Queue(QUEUE_MAXSIZE)
    start = time.perf_counter()
    tasks = [
        asyncio.create_task(_produce(q1, n)),
        asyncio.create_task(_transform(q1, q2)),
        asyncio.create_task(_transform(q2, q3)),
    ]
    count = await _drain(q3)
    elapsed = time.perf_counter() - start
    await asyncio.gather(*tasks)
    _check(count, n + 1)
    return throughput_sample(n, elapsed)


async def _produce_stamped(queue: asyncio.Queue[StampedChunk], n: int) -> None:
    put = queue.put
    clock = time.perf_counter_ns
    for seq in range(n):
        await put(StampedChunk(STREAM_ID, seq, TEXT, False, clock()))
    await put(StampedChunk(STREAM_ID, n, "", True, clock()))


async def floor_loaded_latency(n: int) -> Sample:
    """p50/p99 µs from stamping to receipt, one queue, producer at full speed."""
    queue: asyncio.Queue[StampedChunk] = asyncio.Queue(QUEUE_MAXSIZE)
    latencies: list[int] = []
    record = latencies.append
    clock = time.perf_counter_ns
    producer = asyncio.create_task(_produce_stamped(queue, n))
    get = queue.get
    while True:
        ch = await get()
        if ch.done:
            break
        record(clock() - ch.stamp)
    await producer
    _check(len(latencies), n)
    return latency_sample(latencies)


async def _produce_paced(queue: asyncio.Queue[StampedChunk], n: int, ack: asyncio.Event) -> None:
    put = queue.put
    clock = time.perf_counter_ns
    for seq in range(n):
        await put(StampedChunk(STREAM_ID, seq, TEXT, False, clock()))
        await ack.wait()
        ack.clear()
    await put(StampedChunk(STREAM_ID, n, "", True, clock()))


async def floor_paced_latency(n: int) -> Sample:
    """p50/p99 one-way µs when producer and consumer alternate one chunk at a time.

    The producer puts one stamped chunk, then waits for the consumer's ack.
    """
    queue: asyncio.Queue[StampedChunk] = asyncio.Queue(QUEUE_MAXSIZE)
    ack = asyncio.Event()
    latencies: list[int] = []
    record = latencies.append
    clock = time.perf_counter_ns
    producer = asyncio.create_task(_produce_paced(queue, n, ack))
    get = queue.get
    while True:
        ch = await get()
        if ch.done:
            break
        record(clock() - ch.stamp)
        ack.set()
    await producer
    _check(len(latencies), n)
    return latency_sample(latencies)


async def _broadcast(queues: list[FloorQueue], n: int) -> None:
    puts = [q.put for q in queues]
    for seq in range(n):
        ch = FloorChunk(STREAM_ID, seq, TEXT, False)
        for put in puts:
            await put(ch)
    done = FloorChunk(STREAM_ID, n, "", True)
    for put in puts:
        await put(done)


async def floor_fan_out_4(n: int) -> Sample:
    """Deliveries/s (4*N / elapsed): one producer, the same chunk into 4 queues, 4 consumers."""
    queues: list[FloorQueue] = [asyncio.Queue(QUEUE_MAXSIZE) for _ in range(4)]
    start = time.perf_counter()
    consumers = [asyncio.create_task(_drain(q)) for q in queues]
    await _broadcast(queues, n)
    counts = await asyncio.gather(*consumers)
    elapsed = time.perf_counter() - start
    for count in counts:
        _check(count, n + 1)
    return throughput_sample(4 * n, elapsed, DELIVERIES_PER_S)
