"""Examples for the stream log's parts: cursor.py, bytecount.py, intake.py, loglimits.py,
and the producer fast path (the in-order append written out by the caller)."""

from __future__ import annotations

import pytest

from icefloe.core.bytecount import ByteCount, chunk_size
from icefloe.core.cursor import PARKED, Cursor, CursorSet
from icefloe.core.intake import Intake
from icefloe.core.loglimits import LogLimits
from icefloe.core.messages import NO_META, StreamChunk
from icefloe.core.streamlog import LogState, StreamLog
from icefloe.exceptions import ReorderOverflow


def _chunk(seq: int, text: str = "ab", done: bool = False, data: object = None) -> StreamChunk:
    return StreamChunk("s", seq, text, done, NO_META, data)


def _fast_append(log: StreamLog, chunk: StreamChunk) -> bool:
    # The producer fast path exactly as the StreamLog module docstring states it.
    assert log.in_order
    assert chunk.seq == log.next_seq
    log.queue.append(chunk)
    log.next_seq = chunk.seq + 1
    log.byte_count.bound += chunk_size(chunk)
    if chunk.done or log.data_wanted:
        log.appended(chunk)
        return False
    return len(log.queue) < log.room_len and log.byte_count.bound < log.byte_count.limit


def test_the_producer_fast_path_matches_append() -> None:
    chunks = [_chunk(i, "x" * (i % 3), done=i == 9) for i in range(10)]
    results = []
    for append in (StreamLog.append, _fast_append):
        log = StreamLog(window=4, max_bytes=12)
        cursor = log.attach(0)
        seen = []
        for chunk in chunks:
            if chunk.seq == 5:
                log.want_data()
            seen.append((append(log, chunk), log.state, log.data_wanted))
            if chunk.seq % 2:
                cursor.take()
        results.append((seen, log.statistics()))
    assert results[0] == results[1]
    assert results[0][1].state == "closed"


def test_bytecount_bound_is_an_upper_bound_made_exact_by_recount() -> None:
    count = ByteCount(10)
    held = [_chunk(0, "abc"), _chunk(1, "de", data=b"xyz")]
    count.bound = 100  # as after appends the log has since trimmed
    assert count.full(held) is False  # recounted: 3 + 5 < 10
    assert count.bound == 8
    count.bound = 10
    assert count.recount([*held, _chunk(2, "ab")]) == 10
    assert count.full([*held, _chunk(2, "ab")])
    count.clear()
    assert count.bound == 0


def test_bytecount_unread_is_incremental_and_exact() -> None:
    count = ByteCount(1000)
    held = [_chunk(i, "x" * i) for i in range(10)]  # seqs 0..9
    assert count.unread(held, 10, 4) == sum(range(4, 10))
    assert count.unread(held, 10, 4) == sum(range(4, 10))  # cached
    held.append(_chunk(10, "y" * 10))
    assert count.unread(held, 11, 5) == sum(range(5, 11))  # from the last count
    assert count.unread(held[3:], 11, 1) == sum(range(3, 11))  # a pace below the log


def test_a_cursor_set_paces_by_its_slowest_blocking_and_fastest_lag_tolerant_cursor() -> None:
    log = StreamLog(window=100, max_bytes=1000)
    for i in range(10):
        log.append(_chunk(i))
    # Cursors of the log's (it holds seqs 0..9) in a set of their own.
    blocking = Cursor(log, 2, None)
    fast = Cursor(log, 8, 3)
    slow = Cursor(log, 1, 3)
    cursors = CursorSet()
    assert cursors.pace(10, 0) is None  # no cursor: nothing sets a pace
    for cursor in (blocking, fast, slow):
        cursors.add(cursor)
    paced = cursors.pace(10, 0)
    assert paced is not None
    floor, blocking_min, keep = paced
    assert (floor, blocking_min) == (2, 2)
    assert keep == 2  # slow is more than its lag_limit behind: its chunks may go
    assert cursors.remove(fast)
    assert not cursors.remove(fast)
    assert fast.pos == PARKED
    assert fast.take() is None
    assert fast.available() == 0
    assert cursors.lone_blocking() is None
    assert cursors.remove(slow)
    assert cursors.lone_blocking() is blocking
    blocking.take()
    assert cursors.delivered_total() == 1
    cursors.skip_to(10)
    assert (blocking.pos, blocking.pos - blocking.start) == (10, 1)


def test_intake_holds_early_chunks_counts_duplicates_and_refuses_overflow() -> None:
    intake = Intake(limit=2)
    assert intake.push(_chunk(2), 0) == []
    assert intake.push(_chunk(2), 0) == []
    assert intake.duplicates == 1
    assert intake.push(_chunk(1), 0) == []
    with pytest.raises(ReorderOverflow):
        intake.push(_chunk(3), 0)
    assert intake.pending == 2  # nothing changed
    assert [c.seq for c in intake.push(_chunk(0), 0)] == [0, 1, 2]
    assert intake.pending == 0
    intake.push(_chunk(5), 3)
    intake.drop()
    assert intake.pending == 0


@pytest.mark.parametrize(
    "limits",
    [
        LogLimits(-1, 1, 1, 0, 0),
        LogLimits(0, 0, 1, 0, 0),
        LogLimits(0, 1, 0, 0, 0),
        LogLimits(0, 1, 1, -1, 0),
        LogLimits(0, 1, 1, 0, -1),
    ],
)
def test_loglimits_refuses_a_value_out_of_range(limits: LogLimits) -> None:
    with pytest.raises(ValueError, match="must be >="):
        limits.checked()


def test_loglimits_in_range_are_the_logs_limits() -> None:
    log = StreamLog(3, window=4, max_bytes=5, history=6, reorder_limit=7)
    assert log.limits == LogLimits(3, 4, 5, 6, 7)
    assert log.state is LogState.OPEN
    assert log.next_seq == 3
