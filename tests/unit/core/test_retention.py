"""What a stream log forgets: core/retention.py's trim, fed by hand."""

from __future__ import annotations

from collections import deque

from icefloe.core.bytecount import ByteCount, chunk_size
from icefloe.core.messages import NO_META, StreamChunk
from icefloe.core.retention import TRIM_BATCH, trim


def _queue(first: int, last: int, text: str = "ab") -> deque[StreamChunk]:
    return deque(StreamChunk("s", seq, text, False, NO_META, None) for seq in range(first, last))


def _count(queue: deque[StreamChunk], limit: int = 1 << 20) -> ByteCount:
    count = ByteCount(limit)
    count.recount(queue)
    return count


def test_consumed_chunks_below_a_batch_stay() -> None:
    queue = _queue(0, 40)
    count = _count(queue)
    trim(queue, count, head=40, keep_from=TRIM_BATCH - 1, floor=TRIM_BATCH - 1, solo=False)
    assert len(queue) == 40


def test_a_full_batch_goes_at_once_and_the_bytes_are_recounted() -> None:
    queue = _queue(0, 40)
    count = _count(queue)
    trim(queue, count, head=40, keep_from=TRIM_BATCH, floor=TRIM_BATCH, solo=False)
    assert queue[0].seq == TRIM_BATCH
    assert count.bound == sum(map(chunk_size, queue))


def test_a_solo_reader_trims_exactly() -> None:
    queue = _queue(0, 10)
    count = _count(queue)
    trim(queue, count, head=10, keep_from=3, floor=3, solo=True)
    assert [c.seq for c in queue] == list(range(3, 10))


def test_everything_consumed_clears_the_log() -> None:
    queue = _queue(5, 9)
    count = _count(queue)
    trim(queue, count, head=9, keep_from=9, floor=9, solo=False)
    assert not queue
    assert count.bound == 0


def test_byte_pressure_trims_history_down_to_the_floor() -> None:
    queue = _queue(0, 10)  # 2 bytes each: 20 held
    count = _count(queue, limit=20)
    trim(queue, count, head=10, keep_from=0, floor=6, solo=False)
    assert queue[0].seq == 6  # retained history went; nothing unread did


def test_nothing_to_keep_before_the_base_keeps_everything() -> None:
    queue = _queue(4, 8)
    count = _count(queue)
    trim(queue, count, head=8, keep_from=2, floor=2, solo=True)
    assert [c.seq for c in queue] == [4, 5, 6, 7]
