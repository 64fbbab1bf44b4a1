"""Examples for icefloe.core.streamlog: limits, misuse, signals, the solo fast path."""

from __future__ import annotations

import pytest

from icefloe.core.messages import NO_META, StreamChunk
from icefloe.core.streamlog import LogState, StreamLog, chunk_size
from icefloe.exceptions import InvalidState, ReorderOverflow


def _chunk(seq: int, text: str = "ab", done: bool = False) -> StreamChunk:
    return StreamChunk("s", seq, text, done, NO_META, None)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window": 0, "max_bytes": 10},
        {"window": 1, "max_bytes": 0},
        {"window": 1, "max_bytes": 10, "history": -1},
        {"window": 1, "max_bytes": 10, "reorder_limit": -1},
    ],
)
def test_invalid_limits_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be >="):
        StreamLog(**kwargs)


def test_append_in_order_reports_room_then_a_full_window() -> None:
    log = StreamLog(window=2, max_bytes=100)
    log.attach(0)
    assert log.append(_chunk(0))
    assert not log.append(_chunk(1))  # the window is full: the caller checks
    assert not log.has_room()
    assert log.credit() == 0


def test_a_done_chunk_closes_the_log_and_later_appends_are_refused() -> None:
    log = StreamLog(window=4, max_bytes=100)
    assert not log.append(_chunk(0, done=True))
    assert log.state is LogState.CLOSED
    assert not log.append(_chunk(0))  # a duplicate: dropped and counted
    assert log.duplicates == 1
    with pytest.raises(InvalidState, match="CLOSED"):
        log.append(_chunk(1))


def test_early_chunks_wait_for_the_gap_and_overflow_changes_nothing() -> None:
    log = StreamLog(window=8, max_bytes=100, reorder_limit=1)
    assert not log.append(_chunk(1))
    assert log.reorder_pending == 1
    with pytest.raises(ReorderOverflow):
        log.append(_chunk(2))
    assert log.reorder_pending == 1
    log.append(_chunk(0))
    assert log.next_seq == 2
    assert log.reorder_pending == 0


def test_want_data_makes_the_next_append_ask_the_caller_to_look() -> None:
    log = StreamLog(window=8, max_bytes=100)
    log.attach(0)
    log.want_data()
    assert not log.append(_chunk(0))
    assert log.append(_chunk(1))  # told once


def test_on_room_is_called_once_when_the_reader_moves() -> None:
    calls: list[int] = []
    log = StreamLog(window=1, max_bytes=100, history=1, on_room=lambda: calls.append(1))
    cursor = log.attach(0)
    log.append(_chunk(0))
    assert not log.has_room()
    log.want_room()
    assert cursor.take() is not None
    assert calls == [1]
    log.append(_chunk(1))
    assert cursor.take() is not None
    assert calls == [1]  # nobody asked again


def test_the_solo_reader_pops_and_releases_memory_chunk_by_chunk() -> None:
    log = StreamLog(window=8, max_bytes=100)
    cursor = log.attach(0)
    assert cursor.solo_queue is not None
    for seq in range(3):
        log.append(_chunk(seq))
    first = cursor.take()
    assert first is not None
    assert first.seq == 0
    assert log.held == 2  # popped, not just passed
    second = log.attach(None)  # a second reader ends the solo fast path
    assert cursor.solo_queue is None
    assert second.solo_queue is None
    log.detach(second)
    assert cursor.solo_queue is not None
    assert log.held == 2


def test_a_lag_tolerant_reader_is_overrun_and_told_by_lost() -> None:
    log = StreamLog(window=8, max_bytes=100)
    slow = log.attach(0, lag_limit=1)
    fast = log.attach(0, lag_limit=1)
    for seq in range(40):
        log.append(_chunk(seq))
        fast.take()
    log.refresh()
    assert slow.lost()
    assert slow.take() is None
    with pytest.raises(InvalidState, match="overrun"):
        slow.peek()
    assert not fast.lost()


def test_unread_bytes_leave_out_history_and_follow_the_pace() -> None:
    log = StreamLog(window=8, max_bytes=1000, history=4)
    cursor = log.attach(0)
    for seq in range(4):
        log.append(_chunk(seq, "abc"))
    assert log.unread_bytes() == 12
    cursor.skip(3)
    assert log.unread_bytes() == 3
    assert log.held_bytes() == 12  # history is still held
    assert chunk_size(_chunk(0, "abc")) == 3


def test_discard_skips_unread_chunks_without_delivering_them() -> None:
    log = StreamLog(window=8, max_bytes=100)
    cursor = log.attach(0)
    for seq in range(3):
        log.append(_chunk(seq))
    cursor.take()
    log.discard()
    assert log.held == 0
    assert cursor.pos == log.next_seq
    assert log.delivered_total() == 1
    stats = log.statistics()
    assert (stats.held, stats.readers, stats.delivered) == (0, 1, 1)
