"""Round-trip checks for the connector tests: chunks out, records back, order kept.

:func:`chunk_records` builds interleaved streams of chunk records;
:class:`StreamCheck` reads them back through
:func:`~icefloe.connectors.record.record_chunk`, drops duplicates with the
core :class:`~icefloe.core.dedup.DedupWindow` (counting them) and insists that
each stream's new chunks arrive in seq order, with no gap.
"""

from __future__ import annotations

import time

from icefloe.connectors.protocol import Source
from icefloe.connectors.record import Record, chunk_record, record_chunk
from icefloe.core.dedup import DedupWindow
from icefloe.core.messages import StreamChunk


def chunk_records(prefix: str, streams: int, chunks: int) -> list[Record]:
    """``streams`` streams of ``chunks`` chunks each, interleaved round robin."""
    return [
        chunk_record(
            StreamChunk(f"{prefix}-{s}", seq, f"token {seq} ", done=seq == chunks - 1),
            trace_id=f"trace-{s}",
            tenant="t1",
        )
        for seq in range(chunks)
        for s in range(streams)
    ]


async def read_then_crash(source: Source, check: StreamCheck, read: int, unacked: int) -> None:
    """Feed ``read`` records to ``check``, acking all but the last ``unacked``: a consumer
    that crashed before it acked those (its successor must get them again)."""
    done = 0
    async for inbound in source:
        check.feed(inbound.record)
        done += 1
        if done <= read - unacked:
            await source.ack(inbound)
        if done == read:
            break


class StreamCheck:
    """Feeds records back in; tracks each stream's next seq and the duplicates dropped."""

    def __init__(self) -> None:
        self.next_seq: dict[str, int] = {}
        self.dedup: DedupWindow[tuple[str, int]] = DedupWindow(3600.0, 1_000_000, time.monotonic)
        self.out_of_order: list[tuple[str, int, int]] = []

    def feed(self, record: Record) -> bool:
        """``True`` when the record is a new chunk (and in order), ``False`` for a duplicate."""
        chunk = record_chunk(record).chunk
        if self.dedup.seen((chunk.stream_id, chunk.seq)):
            return False
        expected = self.next_seq.get(chunk.stream_id, 0)
        if chunk.seq != expected:
            self.out_of_order.append((chunk.stream_id, expected, chunk.seq))
        self.next_seq[chunk.stream_id] = chunk.seq + 1
        return True

    @property
    def duplicates(self) -> int:
        return self.dedup.statistics().hits

    def received(self) -> int:
        return sum(self.next_seq.values())

    def assert_complete(self, prefix: str, streams: int, chunks: int) -> None:
        assert not self.out_of_order, self.out_of_order[:5]
        assert self.next_seq == {f"{prefix}-{s}": chunks for s in range(streams)}
