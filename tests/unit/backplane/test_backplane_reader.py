"""A local reader of a remote stream: the Subscription surface the edges use."""

from __future__ import annotations

import asyncio

import pytest

from icefloe.backplane.follower import Follower
from icefloe.backplane.reader import RemoteReader
from icefloe.core.messages import StreamChunk
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import EndOfStream, StreamError, WouldBlock


def chunk(seq: int, *, done: bool = False) -> StreamChunk:
    return StreamChunk("s", seq, f"t{seq}", done=done)


def test_receive_returns_chunks_in_order_then_the_end() -> None:
    follower = Follower("s", 0, limit=8)
    reader = RemoteReader(follower, 0, lambda _r: None)
    with pytest.raises(WouldBlock):
        reader.receive_nowait()
    follower.extend([chunk(0), chunk(1, done=True)])
    assert [reader.receive_nowait().seq, reader.receive_nowait().seq] == [0, 1]
    assert isinstance(reader.end_reason(), EndOfStream)
    with pytest.raises(EndOfStream):
        reader.receive_nowait()


def test_an_abnormal_end_comes_after_the_chunks_held() -> None:
    follower = Follower("s", 0, limit=8)
    reader = RemoteReader(follower, 0, lambda _r: None)
    follower.extend([chunk(0)])
    follower.end(StreamError(ErrorCode.CANCELLED, "cancelled", "s"))
    assert reader.end_reason() is None
    assert reader.receive_nowait().seq == 0
    with pytest.raises(StreamError) as caught:
        reader.receive_nowait()
    assert caught.value.code is ErrorCode.CANCELLED


def test_skip_refuses_more_than_held() -> None:
    follower = Follower("s", 0, limit=8)
    reader = RemoteReader(follower, 0, lambda _r: None)
    follower.extend([chunk(0)])
    with pytest.raises(ValueError, match="cannot skip 2"):
        reader.skip(2)


def test_close_detaches_once_and_tells_the_owner() -> None:
    closed: list[RemoteReader] = []
    follower = Follower("s", 0, limit=8)
    reader = RemoteReader(follower, 0, closed.append)
    reader.close()
    reader.close()
    assert closed == [reader]
    assert reader.held() == 0
    assert isinstance(reader.end_reason(), EndOfStream)


async def test_wait_wakes_on_a_fetch_and_on_interrupt() -> None:
    follower = Follower("s", 3, limit=8)
    reader = RemoteReader(follower, 3, lambda _r: None)
    async with asyncio.timeout(5):
        waiting = asyncio.ensure_future(reader.wait())
        await asyncio.sleep(0)
        assert not waiting.done()
        follower.extend([chunk(3)])
        await waiting
        assert reader.held() == 1
        reader.skip(1)
        waiting = asyncio.ensure_future(reader.wait())
        await asyncio.sleep(0)
        reader.interrupt()
        await waiting
        assert reader.next_seq == 4
