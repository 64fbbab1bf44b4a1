"""The fetch task both engines run: room, decoding, ends, retries, liveness, prefill."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from icefloe.backplane.fetching import UNREACHABLE, check_meta, fetch_loop, prepend_fetched
from icefloe.backplane.follower import Follower
from icefloe.backplane.limits import FETCH_COUNT
from icefloe.backplane.meta import DONE, LIVE, RUNNING, StreamMeta
from icefloe.backplane.reader import RemoteReader
from icefloe.core.messages import StreamChunk
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import StreamError

Item = StreamChunk | StreamError | Exception


def chunk(seq: int, *, done: bool = False) -> StreamChunk:
    return StreamChunk("s", seq, f"t{seq}", done=done)


class Log:
    """An engine's log double: each fetch answers the next batch (or raises it)."""

    def __init__(self, *batches: list[Item] | Exception) -> None:
        self.batches = list(batches)
        self.asked: list[int] = []
        self.idle = 0

    async def fetch(self, count: int) -> Sequence[Item]:
        self.asked.append(count)
        batch = self.batches.pop(0) if self.batches else []
        if isinstance(batch, Exception):
            raise batch
        return batch

    @staticmethod
    def decode(item: Item) -> StreamChunk | StreamError:
        if isinstance(item, StreamChunk | StreamError):
            return item
        raise item  # a bad entry

    async def check_alive(self, follower: Follower) -> None:
        self.idle += 1
        follower.end(StreamError(ErrorCode.UNAVAILABLE, "gone", follower.stream_id))


async def run(follower: Follower, log: Log, retried: tuple[type[BaseException], ...] = ()) -> None:
    await asyncio.wait_for(
        fetch_loop(follower, log.fetch, log.decode, log.check_alive, retried=retried), 5
    )


async def test_the_loop_feeds_the_follower_until_the_done_chunk() -> None:
    follower = Follower("s", 0, limit=100)
    log = Log([chunk(0), chunk(1)], [chunk(2, done=True)])
    await run(follower, log)
    assert (follower.head, follower.done_seq, follower.terminal) == (3, 2, None)
    assert log.asked == [min(100, FETCH_COUNT)] * 2


async def test_an_abnormal_end_keeps_the_chunks_before_it() -> None:
    follower = Follower("s", 0, limit=100)
    error = StreamError(ErrorCode.FAILED, "boom", "s")
    await run(follower, Log([chunk(0), error, chunk(1)]))
    assert (follower.head, follower.terminal) == (1, error)


async def test_an_idle_fetch_checks_the_producer() -> None:
    follower = Follower("s", 0, limit=100)
    log = Log([])
    await run(follower, log)
    assert log.idle == 1
    assert follower.terminal is not None
    assert follower.terminal.message == "gone"


async def test_the_fetch_asks_for_the_room_left_only() -> None:
    follower = Follower("s", 0, limit=3)
    RemoteReader(follower, 0, lambda _r: None)
    log = Log([chunk(0)], [chunk(1), chunk(2, done=True)])
    await run(follower, log)
    assert follower.head == 3
    assert log.asked == [3, 2]


async def test_a_bad_entry_ends_the_follow_unavailable() -> None:
    follower = Follower("s", 0, limit=100)
    await run(follower, Log([chunk(0), ValueError("garbage")]))
    assert follower.head == 0
    assert follower.terminal is not None
    assert (follower.terminal.code, follower.terminal.message) == (
        ErrorCode.UNAVAILABLE,
        UNREACHABLE,
    )


async def test_the_errors_of_an_outage_are_retried_when_named() -> None:
    follower = Follower("s", 0, limit=100)
    log = Log(ConnectionError("away"), ConnectionError("away"), [chunk(0, done=True)])
    await run(follower, log, retried=(ConnectionError,))
    assert (follower.done_seq, follower.terminal) == (0, None)
    unnamed = Follower("s", 0, limit=100)
    await run(unnamed, Log(ConnectionError("away"), [chunk(0, done=True)]))
    assert unnamed.terminal is not None
    assert unnamed.terminal.message == UNREACHABLE


def meta(state: str, last_seq: int, code: str | None = None) -> StreamMeta:
    return StreamMeta("s", "t", state, last_seq, code, "", "p")


def test_check_meta_ends_a_follow_whose_producer_is_gone_or_ended_unseen() -> None:
    follower = Follower("s", 0, limit=8)
    follower.extend([chunk(0), chunk(1)])
    check_meta(follower, meta(RUNNING, 5), LIVE)
    check_meta(follower, meta(DONE, 5), LIVE)  # chunks 2..5 still to fetch
    assert not follower.ended
    check_meta(follower, meta(DONE, 1), LIVE)
    assert follower.terminal is not None
    assert follower.terminal.message == "the stream ended unseen"
    gone = Follower("s", 0, limit=8)
    check_meta(gone, None, LIVE)
    assert gone.terminal is not None
    assert gone.terminal.message == "the producing gateway is gone"


def test_prepend_fetched_puts_the_missing_part_before_the_run() -> None:
    follower = Follower("s", 5, limit=8)
    follower.extend([chunk(5), chunk(6)])
    prepend_fetched(follower, 2, [chunk(2), chunk(3), chunk(4), chunk(5)])
    assert (follower.base, follower.head) == (2, 7)
    prepend_fetched(follower, 3, [])  # another reader fetched it meanwhile
    with pytest.raises(StreamError) as caught:
        prepend_fetched(follower, 0, [chunk(1)])  # 0 is no longer kept
    assert caught.value.code is ErrorCode.HISTORY_GONE
