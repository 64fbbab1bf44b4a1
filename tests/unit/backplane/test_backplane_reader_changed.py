"""RemoteReader.wait_changed: what a WebSocket pump held back by credit waits on."""

from __future__ import annotations

import asyncio

from icefloe.backplane.follower import Follower
from icefloe.backplane.reader import RemoteReader
from icefloe.core.messages import StreamChunk
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import StreamError


def chunk(seq: int) -> StreamChunk:
    return StreamChunk("s", seq, f"t{seq}")


async def test_wait_changed_waits_while_chunks_are_held_until_the_next_fetch() -> None:
    follower = Follower("s", 0, limit=8)
    reader = RemoteReader(follower, 0, lambda _r: None)
    follower.extend([chunk(0)])
    waiting = asyncio.ensure_future(reader.wait_changed())
    await asyncio.sleep(0)
    assert not waiting.done()  # a chunk is held, yet it waits for news
    follower.extend([chunk(1)])
    await asyncio.wait_for(waiting, 1)


async def test_wait_changed_wakes_on_the_end_and_on_interrupt() -> None:
    follower = Follower("s", 0, limit=8)
    reader = RemoteReader(follower, 0, lambda _r: None)
    waiting = asyncio.ensure_future(reader.wait_changed())
    await asyncio.sleep(0)
    follower.end(StreamError(ErrorCode.CANCELLED, "cancelled", "s"))
    await asyncio.wait_for(waiting, 1)
    # Ended: nothing changes any more, only interrupt() (credit, resume) wakes it.
    waiting = asyncio.ensure_future(reader.wait_changed())
    await asyncio.sleep(0)
    assert not waiting.done()
    reader.interrupt()
    await asyncio.wait_for(waiting, 1)


async def test_wait_changed_returns_at_once_when_closed() -> None:
    follower = Follower("s", 0, limit=8)
    reader = RemoteReader(follower, 0, lambda _r: None)
    reader.close()
    await asyncio.wait_for(reader.wait_changed(), 1)
