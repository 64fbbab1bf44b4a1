"""The streams one process follows: the cap, the fetch tasks, report pacing."""

from __future__ import annotations

import asyncio

import pytest

from icefloe.backplane.followers import Followers, ended_reader
from icefloe.backplane.limits import REPORT_EVERY, REPORT_S
from icefloe.backplane.meta import FAILED, StreamMeta
from icefloe.core.messages import StreamChunk
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import StreamError


def test_an_ended_reader_gets_the_terminal_at_once() -> None:
    meta = StreamMeta("s", "t", FAILED, 3, "no_such_code", "boom", "p")
    reader = ended_reader(meta, 4)
    with pytest.raises(StreamError) as caught:
        reader.receive_nowait()
    assert (caught.value.code, caught.value.message) == (ErrorCode.FAILED, "boom")


def test_past_the_cap_a_new_stream_is_unavailable() -> None:
    followers = Followers(history=8, on_dropped=lambda _sid: None, max_followed=1)
    first, made = followers.follower("a", 0)
    assert made
    assert followers.follower("a", 5) == (first, False)
    with pytest.raises(StreamError) as caught:
        followers.follower("b", 0)
    assert caught.value.code is ErrorCode.UNAVAILABLE


async def test_the_last_reader_closed_drops_the_follower_and_its_fetch() -> None:
    dropped: list[str] = []
    followers = Followers(history=8, on_dropped=dropped.append)
    follower, _ = followers.follower("a", 0)
    one, two = followers.reader(follower, 0), followers.reader(follower, 0)
    followers.start_fetch("a", asyncio.sleep(60))
    assert followers.fetching("a")
    (fetch,) = followers.fetch_tasks()
    one.close()
    assert dropped == []
    assert "a" in followers.followed()
    two.close()
    await asyncio.sleep(0)
    assert dropped == ["a"]
    assert followers.followed() == {}
    assert not followers.fetching("a")
    assert fetch.cancelled()


async def test_a_report_waits_for_its_period_unless_many_chunks_were_read() -> None:
    followers = Followers(history=1000, on_dropped=lambda _sid: None)
    follower, _ = followers.follower("a", 0)
    reader = followers.reader(follower, 0)
    follower.extend([StreamChunk("a", seq, "x") for seq in range(REPORT_EVERY)])
    with pytest.raises(TimeoutError):  # not due before REPORT_S
        await asyncio.wait_for(followers.next_report(), REPORT_S / 10)
    reader.skip(REPORT_EVERY)  # due now
    report = asyncio.ensure_future(followers.next_report())
    for _ in range(5):
        await asyncio.sleep(0)
    assert report.done()
    assert report.result() == {"a": REPORT_EVERY}
    assert follower.moved == 0
