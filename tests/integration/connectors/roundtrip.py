"""One round trip every platform test runs: chunks through a Sink, back through a Source.

``STREAMS`` concurrent streams of ``CHUNKS`` chunks each are sent as records
(:func:`~icefloe.connectors.chunk_record`), read back, reassembled with
:class:`~icefloe.core.reassembly.Reassembler` and acked as they are released;
every stream must come out complete and in order. A plain module (not a
conftest) so each platform's test imports it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import NamedTuple

from icefloe.connectors import Inbound, Sink, Source, chunk_record, record_chunk
from icefloe.core.messages import StreamChunk
from icefloe.core.reassembly import Reassembler, ReassemblyStatistics

STREAMS = 10
CHUNKS = 1000


class RoundTrip(NamedTuple):
    """What a round trip measured."""

    chunks: int
    #: seconds from the first send to the last chunk released in order
    seconds: float
    #: chunks per second over that time
    rate: float
    reassembly: ReassemblyStatistics


def stream_ids(tag: str, streams: int = STREAMS) -> list[str]:
    return [f"{tag}-s{i}" for i in range(streams)]


async def produce(sink: Sink, sids: list[str], chunks: int = CHUNKS) -> None:
    """Send every stream's chunks, the streams interleaved by concurrent tasks."""

    async def one(sid: str) -> None:
        for seq in range(chunks):
            chunk = StreamChunk(sid, seq, f"t{seq}", seq == chunks - 1)
            await sink.send(chunk_record(chunk, trace_id=sid, tenant="acme"))
            if seq % 50 == 0:
                await asyncio.sleep(0)  # interleave the streams

    async with asyncio.TaskGroup() as tg:
        for sid in sids:
            tg.create_task(one(sid))
    await sink.flush()


async def consume(
    source: Source,
    reassembler: Reassembler[tuple[Inbound, int]],
    sids: list[str],
    chunks: int = CHUNKS,
) -> dict[str, list[int]]:
    """Read until every stream ended; ack each record once it is released (or dropped)."""
    out: dict[str, list[int]] = {sid: [] for sid in sids}
    open_streams = set(sids)
    async for inbound in source:
        chunk = record_chunk(inbound.record).chunk
        sid = chunk.stream_id
        pushed = reassembler.push(sid, chunk.seq, (inbound, chunk.seq), done=chunk.done)
        if pushed.duplicate:
            await source.ack(inbound)
        for released, seq in pushed.released:
            out[sid].append(seq)
            await source.ack(released)
        if pushed.ended:
            open_streams.discard(sid)
            if not open_streams:
                break
    return out


async def round_trip(
    make_sink: Callable[[], AbstractAsyncContextManager[Sink]],
    make_source: Callable[[], AbstractAsyncContextManager[Source]],
    tag: str,
    *,
    streams: int = STREAMS,
    chunks: int = CHUNKS,
) -> RoundTrip:
    """Run the round trip and check it; returns the timing."""
    sids = stream_ids(tag, streams)
    reassembler: Reassembler[tuple[Inbound, int]] = Reassembler(time.monotonic)
    start = time.perf_counter()
    async with make_source() as source, make_sink() as sink:
        producing = asyncio.create_task(produce(sink, sids, chunks))
        try:
            out = await consume(source, reassembler, sids, chunks)
        except BaseException:
            producing.cancel()
            raise
        await producing
    seconds = time.perf_counter() - start
    assert out == {sid: list(range(chunks)) for sid in sids}
    total = streams * chunks
    return RoundTrip(total, seconds, total / seconds, reassembler.statistics())
