"""The reader side of a stream log (core/logreaders.py), over a recording double of its log."""

from __future__ import annotations

from collections import deque

from icefloe.core.cursor import Cursor
from icefloe.core.logreaders import LogReaders
from icefloe.core.messages import NO_META, StreamChunk
from icefloe.core.streamlog import StreamLog


class RecordingLog:
    """A PacedLog that records refreshes and makes the floor exact as the real one does."""

    def __init__(self, head: int) -> None:
        self.queue: deque[StreamChunk] = deque(
            StreamChunk("s", seq, "x", False, NO_META, None) for seq in range(head)
        )
        self.next_seq = head
        self.room_wanted = False
        self.refreshes = 0
        self.readers: LogReaders | None = None

    @property
    def base(self) -> int:
        return self.next_seq - len(self.queue)

    def refresh(self) -> None:
        self.refreshes += 1
        assert self.readers is not None
        self.readers.repace()


def _setup(head: int = 10, history: int = 0) -> tuple[RecordingLog, LogReaders, StreamLog]:
    log = RecordingLog(head)
    readers = LogReaders(log, 0, history)
    log.readers = readers
    # Cursors need a StreamLog to read from; these tests only attach and detach them.
    return log, readers, StreamLog(window=4, max_bytes=1 << 20)


def _solo(readers: LogReaders, cursor: Cursor) -> bool:
    """Whether ``cursor`` reads solo (both sides agree)."""
    assert readers.solo == (cursor.solo_queue is not None)
    return readers.solo


def test_the_first_cursor_makes_the_floor_exact() -> None:
    log, readers, owner = _setup()
    readers.attach(Cursor(owner, 6, None))
    assert log.refreshes >= 1
    assert readers.floor == 6
    assert len(readers) == 1


def test_a_lone_blocking_cursor_without_history_is_solo_and_pops_the_queue() -> None:
    log, readers, owner = _setup()
    cursor = Cursor(owner, 3, None)
    readers.attach(cursor)
    assert _solo(readers, cursor)
    assert cursor.solo_queue is log.queue
    readers.attach(Cursor(owner, 5, None))
    assert not _solo(readers, cursor)


def test_history_rules_out_solo() -> None:
    _, readers, owner = _setup(history=4)
    readers.attach(Cursor(owner, 3, None))
    assert not readers.solo


def test_a_slower_blocking_cursor_lowers_the_blocking_minimum_without_a_recount() -> None:
    log, readers, owner = _setup(history=4)
    readers.attach(Cursor(owner, 8, None))
    readers.attach(Cursor(owner, 5, 3))  # behind the floor: a recount
    assert (readers.floor, readers.blocking_min) == (5, 8)
    before = log.refreshes
    assert not readers.attach(Cursor(owner, 6, None))
    assert log.refreshes == before  # the stale floor (5) is still conservative
    assert (readers.floor, readers.blocking_min) == (5, 6)


def test_a_fast_lag_tolerant_cursor_raises_the_floor_for_a_waiting_producer() -> None:
    log, readers, owner = _setup(history=4)
    readers.attach(Cursor(owner, 2, 3))
    assert readers.floor == 2
    log.room_wanted = True
    before = log.refreshes
    assert readers.attach(Cursor(owner, 7, 3))  # the floor rose in O(1)
    assert log.refreshes == before
    assert readers.floor == 7


def test_detaching_from_a_closed_log_skips_the_recount() -> None:
    log, readers, owner = _setup(history=4)
    first, second = Cursor(owner, 2, None), Cursor(owner, 4, None)
    readers.attach(first)
    readers.attach(second)
    before = log.refreshes
    assert readers.detach(first, producing=False)
    assert log.refreshes == before
    assert readers.detach(second, producing=True)
    assert log.refreshes == before + 1
    assert not readers.detach(second, producing=True)


def test_skip_to_moves_cursors_and_the_pace_to_the_head() -> None:
    _, readers, owner = _setup(history=4)
    cursor = Cursor(owner, 2, None)
    readers.attach(cursor)
    readers.skip_to(10)
    assert (cursor.pos, readers.floor, readers.blocking_min) == (10, 10, 10)
    assert readers.delivered_total() == 0
    assert readers.cursors() == (cursor,)
