"""The futures parked on one stream (runtime/stream_waiters.py)."""

from __future__ import annotations

import asyncio

from icefloe.runtime.stream_waiters import StreamWaiters


async def test_parked_readers_wake_together_and_once() -> None:
    waiters = StreamWaiters()
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    second.cancel()  # a reader that gave up is skipped
    waiters.park_reader(first)
    waiters.park_reader(second)
    assert waiters.readers
    waiters.wake_readers()
    assert first.done()
    assert not waiters.readers
    waiters.wake_readers()  # nothing parked: nothing to do


async def test_a_producer_waits_until_ready_says_so() -> None:
    waiters = StreamWaiters()
    wants: list[int] = []
    room = False

    task = asyncio.create_task(waiters.wait_room(lambda: wants.append(1), lambda: room))
    await asyncio.sleep(0)
    assert waiters.producers == 1
    assert wants == [1]
    waiters.wake_producers()  # woken, but no room yet: it waits again
    await asyncio.sleep(0)
    assert not task.done()
    assert waiters.producers == 1
    assert wants == [1, 1]
    room = True
    waiters.wake_producers()
    await asyncio.wait_for(task, 1)
    assert waiters.producers == 0


async def test_a_cancelled_producer_leaves_no_future_behind() -> None:
    waiters = StreamWaiters()
    task = asyncio.create_task(waiters.wait_room(lambda: None, lambda: True))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert waiters.producers == 0
