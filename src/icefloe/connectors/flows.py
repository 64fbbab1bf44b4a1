"""Flows that start from a :class:`Source` and end in a :class:`Sink`.

Three small pieces of glue, each acking only what the flow took:

* :func:`drain_to_sink` sends the chunks of a stream (``flow.stream(...)``,
  ``flow.subscribe(...)``, any async iterable) to a sink as records, flushing
  every ``flush_every`` chunks and at the end: the chunks -> records end.
* :func:`feed_messages` turns each record of a source into a
  :class:`~icefloe.core.messages.Message` (by default one whose payload is
  the chunk) and acks it once ``flow.emit`` accepted it.
* :class:`StreamFeed` reassembles the chunk streams a source carries
  (:class:`~icefloe.core.reassembly.Reassembler`: seq order, duplicates
  dropped) and replays each as a stream of the flow through
  ``flow.open_stream``, so ``flow.subscribe(stream_id)`` and every transport
  read it; a record is acked once its chunk was emitted into the flow.

Poison records (a :class:`~icefloe.exceptions.DecodeError`) go to
``dead_letters`` with the reason and are then acked; without a dead-letter
sink they are acked and counted in ``poison``, never retried forever. A
stream with a gap that cannot fill ends with ``history_gone``; one whose
records stop coming (``idle_timeout_s`` of the reassembler) with
``interrupted``; one the flow refuses (``overloaded``) is counted in
``refused`` and its records acked.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, Callable
from typing import NamedTuple

from icefloe.connectors.deadletter import DeadLetters
from icefloe.connectors.protocol import Inbound, Sink, Source
from icefloe.connectors.record import ChunkRecord, chunk_record, record_chunk
from icefloe.core.codec import Format
from icefloe.core.messages import Headers, Message, StreamChunk
from icefloe.core.reassembly import Reassembler, ReassemblyFull, StreamGap
from icefloe.core.reliability import Reliability
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import DecodeError, InvalidState, StreamError
from icefloe.runtime.flow import Flow
from icefloe.runtime.node import Node
from icefloe.runtime.writer import StreamWriter

__all__ = [
    "FeedStatistics",
    "StreamFeed",
    "chunk_message",
    "drain_to_sink",
    "feed_messages",
]


async def drain_to_sink(
    chunks: AsyncIterable[StreamChunk],
    sink: Sink,
    *,
    tenant: str,
    trace_id: str,
    reliability: Reliability = Reliability.AT_LEAST_ONCE,
    fmt: Format = Format.MSGPACK,
    flush_every: int = 500,
) -> int:
    """Send every chunk of ``chunks`` to ``sink``; returns how many.

    :raises DeliveryFailed: the sink could not deliver some (at a flush).
    """
    if flush_every < 1:
        raise ValueError(f"flush_every must be >= 1, got {flush_every}")
    sent = 0
    async for chunk in chunks:
        record = chunk_record(
            chunk, trace_id=trace_id, tenant=tenant, reliability=reliability, fmt=fmt
        )
        await sink.send(record)
        sent += 1
        if sent % flush_every == 0:
            await sink.flush()
    await sink.flush()
    return sent


class FeedStatistics(NamedTuple):
    """Counters of :func:`feed_messages` or a :class:`StreamFeed`."""

    #: records handed to the flow (and acked)
    fed: int
    #: duplicate records dropped (and acked)
    duplicates: int
    #: poison records dead-lettered or, without a dead-letter sink, dropped
    poison: int
    #: streams ended with a gap (history_gone) or idle (interrupted)
    broken: int
    #: streams the flow refused (overloaded)
    refused: int


def chunk_message(got: ChunkRecord) -> Message:
    """The default record -> message mapping: the chunk as payload, tenant and trace kept."""
    return Message(got.chunk, Headers(tenant=got.tenant), trace_id=got.trace_id)


async def _poison(
    source: Source, inbound: Inbound, reason: str, dead_letters: DeadLetters | None
) -> None:
    if dead_letters is not None:
        await dead_letters.send(inbound, reason, source=source.name)
    await source.ack(inbound)


async def feed_messages(
    source: Source,
    flow: Flow,
    *,
    to: Node | None = None,
    to_message: Callable[[ChunkRecord], Message] = chunk_message,
    dead_letters: DeadLetters | None = None,
    limit: int | None = None,
) -> FeedStatistics:
    """Emit one message per record into ``flow`` (or ``to``), acking each after.

    Runs until the source ends, ``limit`` records were taken, or it is cancelled.
    """
    fed = poison = 0
    async for inbound in source:
        try:
            got = record_chunk(inbound.record)
        except DecodeError as exc:
            await _poison(source, inbound, str(exc), dead_letters)
            poison += 1
        else:
            await flow.emit(to_message(got), to)
            await source.ack(inbound)
            fed += 1
        if limit is not None and fed + poison >= limit:
            break
    return FeedStatistics(fed, 0, poison, 0, 0)


class StreamFeed:
    """Replays the chunk streams a source carries as streams of ``flow``.

    :param reassembler: its limits apply (streams at once, items held, gap
        and idle timeouts); default ``Reassembler(time.monotonic)``.
    :param expire_every_s: how often the reassembler's timeouts are checked.
    """

    def __init__(
        self,
        source: Source,
        flow: Flow,
        *,
        reassembler: Reassembler[tuple[Inbound, ChunkRecord]] | None = None,
        dead_letters: DeadLetters | None = None,
        clock: Callable[[], float] = time.monotonic,
        expire_every_s: float = 1.0,
    ) -> None:
        self._source = source
        self._flow = flow
        self._r = reassembler or Reassembler(clock)
        self._dead = dead_letters
        self._clock = clock
        self._expire_every = expire_every_s
        self._writers: dict[str, StreamWriter | None] = {}
        self._fed = self._poison = self._broken = self._refused = 0

    def statistics(self) -> FeedStatistics:
        return FeedStatistics(
            self._fed, self._r.statistics().duplicates, self._poison, self._broken, self._refused
        )

    async def run(self, *, until_ended: int | None = None) -> FeedStatistics:
        """Feed until the source ends, ``until_ended`` streams ended, or cancellation."""
        next_expiry = self._clock() + self._expire_every
        ended = 0
        async for inbound in self._source:
            ended += await self._take(inbound)
            if self._clock() >= next_expiry:
                next_expiry = self._clock() + self._expire_every
                await self._expire()
            if until_ended is not None and ended >= until_ended:
                break
        return self.statistics()

    async def _take(self, inbound: Inbound) -> int:
        source = self._source
        try:
            got = record_chunk(inbound.record)
        except DecodeError as exc:
            await _poison(source, inbound, str(exc), self._dead)
            self._poison += 1
            return 0
        chunk = got.chunk
        try:
            pushed = self._r.push(chunk.stream_id, chunk.seq, (inbound, got), done=chunk.done)
        except ReassemblyFull:
            await source.nack(inbound, "too many streams being reassembled")
            return 0
        except StreamGap as gap:
            await self._break(gap, ErrorCode.HISTORY_GONE)
            await source.ack(inbound)
            return 1
        if pushed.duplicate:
            await source.ack(inbound)
        for held_inbound, held in pushed.released:
            await self._emit(held)
            await source.ack(held_inbound)
            self._fed += 1
        if pushed.ended:
            self._writers.pop(chunk.stream_id, None)
            return 1
        return 0

    async def _emit(self, got: ChunkRecord) -> None:
        chunk = got.chunk
        writer = self._writers.get(chunk.stream_id)
        if writer is None:
            if chunk.stream_id in self._writers:
                return  # refused earlier: drop the rest of the stream
            writer = self._open(got)
            if writer is None:
                return
        try:
            await writer.emit(chunk.text, meta=dict(chunk.meta), data=chunk.data, done=chunk.done)
        except InvalidState:
            pass  # the stream was cancelled in the flow; its records are done with

    def _open(self, got: ChunkRecord) -> StreamWriter | None:
        sid = got.chunk.stream_id
        try:
            writer = self._flow.open_stream(Headers(tenant=got.tenant), stream_id=sid)
        except (StreamError, InvalidState):
            self._writers[sid] = None
            self._refused += 1
            return None
        self._writers[sid] = writer
        return writer

    async def _break(self, gap: StreamGap, code: ErrorCode) -> None:
        self._broken += 1
        writer = self._writers.pop(gap.stream_id or "", None)
        if writer is not None:
            writer.abort(code, gap.message)
        for item in gap.dropped:
            if isinstance(item, tuple):
                await self._source.ack(item[0])

    async def _expire(self) -> None:
        for gap in self._r.expire():
            await self._break(gap, ErrorCode.HISTORY_GONE)
        for sid in [s for s in self._writers if self._r.next_seq(s) is None]:
            writer = self._writers.pop(sid)
            if writer is not None and not writer.closed:
                # records stopped coming: the upstream producer is gone
                writer.abort(ErrorCode.INTERRUPTED, "the source stopped sending this stream")
                self._broken += 1
