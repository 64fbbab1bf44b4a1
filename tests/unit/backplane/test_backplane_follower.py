"""The shared chunks of a followed stream: fetching room, trimming, ends."""

from __future__ import annotations

import pytest

from icefloe.backplane.follower import REPORT_EVERY, Follower
from icefloe.backplane.reader import RemoteReader
from icefloe.core.messages import StreamChunk
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import StreamError


def chunks(start: int, stop: int, *, done_at: int | None = None) -> list[StreamChunk]:
    return [StreamChunk("s", seq, f"t{seq}", done=seq == done_at) for seq in range(start, stop)]


def reader(follower: Follower, at: int) -> RemoteReader:
    return RemoteReader(follower, at, lambda _r: None)


def test_the_slowest_reader_bounds_the_fetching() -> None:
    follower = Follower("s", 0, limit=10)
    slow, fast = reader(follower, 0), reader(follower, 0)
    follower.extend(chunks(0, 10))
    assert follower.room_left() == 0
    fast.skip(10)
    assert follower.room_left() == 0  # slow still holds it
    slow.skip(4)
    assert follower.room_left() == 4
    assert follower.base == 4  # what every reader passed is dropped
    assert follower.held_chunks() == 6


def test_a_follower_with_no_reader_holds_nothing() -> None:
    follower = Follower("s", 0, limit=8)
    only = reader(follower, 0)
    follower.extend(chunks(0, 5))
    only.close()
    assert follower.held_chunks() == 0
    assert follower.readers == set()


def test_a_gap_restarts_the_run_and_overruns_readers_behind_it() -> None:
    follower = Follower("s", 0, limit=8)
    behind = reader(follower, 0)
    follower.extend(chunks(5, 7))  # the engine's log was trimmed past 0..4
    assert follower.base == 5
    assert behind.held() == 1
    with pytest.raises(StreamError) as caught:
        behind.peek(0)
    assert caught.value.code is ErrorCode.HISTORY_GONE


def test_prepend_takes_only_the_chunks_right_before_base() -> None:
    follower = Follower("s", 10, limit=8)
    follower.extend(chunks(10, 12))
    assert not follower.prepend(chunks(5, 8))  # ends at 7, not 9
    assert not follower.prepend([chunks(7, 8)[0], chunks(9, 10)[0]])  # not contiguous
    assert follower.prepend(chunks(7, 10))
    assert follower.base == 7
    assert follower.head == 12


def test_the_done_chunk_and_a_terminal_end_the_follow() -> None:
    follower = Follower("s", 0, limit=8)
    follower.extend(chunks(0, 3, done_at=2))
    assert follower.ended
    assert follower.done_seq == 2
    failed = Follower("s", 0, limit=8)
    failed.end(StreamError(ErrorCode.CANCELLED, "cancelled", "s"))
    failed.end(StreamError(ErrorCode.UNAVAILABLE, "later", "s"))
    assert failed.terminal is not None
    assert failed.terminal.code is ErrorCode.CANCELLED


async def test_reading_many_chunks_asks_for_a_report() -> None:
    import asyncio

    follower = Follower("s", 0, limit=1000)
    follower.report_due = asyncio.Event()
    one = reader(follower, 0)
    follower.extend(chunks(0, REPORT_EVERY))
    one.skip(REPORT_EVERY - 1)
    assert not follower.report_due.is_set()
    one.skip(1)
    assert follower.report_due.is_set()


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit"):
        Follower("s", 0, limit=0)
