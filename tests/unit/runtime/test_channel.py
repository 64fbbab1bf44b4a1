"""Tests for icefloe.runtime.channel: the bounded FIFO behind inboxes and the egress."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.exceptions import ClosedResourceError, EndOfStream, WouldBlock
from icefloe.runtime.channel import Channel, ChannelStatistics

T = TypeVar("T")


async def until(predicate: Callable[[], bool], *, spins: int = 1000) -> None:
    """Yield to the loop until ``predicate()`` holds; fail after ``spins`` turns."""
    for _ in range(spins):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


def drain(channel: Channel[T]) -> list[T]:
    items: list[T] = []
    while True:
        try:
            items.append(channel.receive_nowait())
        except (WouldBlock, EndOfStream):
            return items


def waiting_senders_are(channel: Channel[int], n: int) -> Callable[[], bool]:
    return lambda: channel.statistics().waiting_senders == n


# -- construction ------------------------------------------------------------------


@pytest.mark.parametrize("maxsize", [0, -1, 1.5, True, "2", None])
def test_invalid_maxsize_is_value_error(maxsize: object) -> None:
    with pytest.raises(ValueError, match="maxsize"):
        Channel(maxsize)  # type: ignore[arg-type]


def test_new_channel_is_empty_and_open() -> None:
    channel: Channel[int] = Channel(3)
    assert len(channel) == 0
    assert channel.maxsize == 3
    assert not channel.closed
    assert channel.statistics() == ChannelStatistics(
        used=0, maxsize=3, waiting_senders=0, waiting_receivers=0, closed=False
    )


# -- order and bounds ----------------------------------------------------------------


async def test_items_come_out_in_fifo_order() -> None:
    channel: Channel[int] = Channel(8)
    for i in range(5):
        channel.send_nowait(i)
    for i in range(5, 8):
        await channel.send(i)
    assert len(channel) == 8
    assert [await channel.receive() for _ in range(4)] == [0, 1, 2, 3]
    assert drain(channel) == [4, 5, 6, 7]


def test_send_nowait_on_full_channel_raises_would_block() -> None:
    channel: Channel[str] = Channel(2)
    channel.send_nowait("a")
    channel.send_nowait("b")
    with pytest.raises(WouldBlock):
        channel.send_nowait("c")
    assert len(channel) == 2
    assert channel.receive_nowait() == "a"
    channel.send_nowait("c")
    assert [channel.receive_nowait(), channel.receive_nowait()] == ["b", "c"]


def test_receive_nowait_on_empty_channel_raises_would_block() -> None:
    channel: Channel[int] = Channel(1)
    with pytest.raises(WouldBlock):
        channel.receive_nowait()


async def test_send_waits_while_full() -> None:
    channel: Channel[str] = Channel(1)
    await channel.send("a")
    async with asyncio.timeout(5):
        sender = asyncio.create_task(channel.send("b"))
        await until(lambda: channel.statistics().waiting_senders == 1)
        assert not sender.done()
        assert len(channel) == 1
        assert await channel.receive() == "a"
        await sender
    assert channel.receive_nowait() == "b"
    assert channel.statistics().waiting_senders == 0


async def test_blocked_senders_are_served_in_arrival_order() -> None:
    channel: Channel[int] = Channel(1)
    channel.send_nowait(0)
    async with asyncio.timeout(5):
        senders = []
        for i in range(1, 4):
            senders.append(asyncio.create_task(channel.send(i)))
            await until(waiting_senders_are(channel, i))
        received = [await channel.receive() for _ in range(4)]
        await asyncio.gather(*senders)
    assert received == [0, 1, 2, 3]


async def test_receive_waits_until_an_item_arrives() -> None:
    channel: Channel[str] = Channel(1)
    async with asyncio.timeout(5):
        receiver = asyncio.create_task(channel.receive())
        await until(lambda: channel.statistics().waiting_receivers == 1)
        assert not receiver.done()
        await channel.send("x")
        assert await receiver == "x"
    assert channel.statistics().waiting_receivers == 0


# -- closing -------------------------------------------------------------------------


async def test_closed_channel_refuses_senders() -> None:
    channel: Channel[int] = Channel(2)
    channel.close()
    with pytest.raises(ClosedResourceError):
        channel.send_nowait(1)
    with pytest.raises(ClosedResourceError):
        await channel.send(1)
    assert len(channel) == 0


async def test_close_wakes_a_blocked_sender_with_closed_resource_error() -> None:
    channel: Channel[int] = Channel(1)
    channel.send_nowait(1)
    async with asyncio.timeout(5):
        sender = asyncio.create_task(channel.send(2))
        await until(lambda: channel.statistics().waiting_senders == 1)
        channel.close()
        with pytest.raises(ClosedResourceError):
            await sender
    # What was buffered before close is still delivered; the refused item is not.
    assert drain(channel) == [1]


async def test_receivers_drain_then_get_end_of_stream() -> None:
    channel: Channel[int] = Channel(3)
    for i in range(3):
        channel.send_nowait(i)
    channel.close()
    assert await channel.receive() == 0
    assert channel.receive_nowait() == 1
    assert await channel.receive() == 2
    with pytest.raises(EndOfStream):
        await channel.receive()
    with pytest.raises(EndOfStream):
        channel.receive_nowait()


async def test_close_wakes_every_waiting_receiver_with_end_of_stream() -> None:
    channel: Channel[int] = Channel(1)
    async with asyncio.timeout(5):
        receivers = [asyncio.create_task(channel.receive()) for _ in range(3)]
        await until(lambda: channel.statistics().waiting_receivers == 3)
        channel.close()
        results = await asyncio.gather(*receivers, return_exceptions=True)
    assert all(isinstance(r, EndOfStream) for r in results)
    assert channel.statistics().waiting_receivers == 0


def test_close_is_idempotent() -> None:
    channel: Channel[int] = Channel(1)
    channel.send_nowait(7)
    channel.close()
    channel.close()
    assert channel.closed
    assert channel.statistics().closed
    assert channel.receive_nowait() == 7


# -- cancellation --------------------------------------------------------------------


async def test_cancelled_waiting_sender_adds_nothing() -> None:
    channel: Channel[str] = Channel(1)
    channel.send_nowait("a")
    async with asyncio.timeout(5):
        sender = asyncio.create_task(channel.send("lost"))
        await until(lambda: channel.statistics().waiting_senders == 1)
        sender.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sender
    assert channel.statistics().waiting_senders == 0
    assert drain(channel) == ["a"]
    channel.send_nowait("b")
    assert drain(channel) == ["b"]


async def test_cancelled_woken_sender_passes_its_turn_on() -> None:
    channel: Channel[int] = Channel(1)
    channel.send_nowait(0)
    async with asyncio.timeout(5):
        first = asyncio.create_task(channel.send(1))
        await until(lambda: channel.statistics().waiting_senders == 1)
        second = asyncio.create_task(channel.send(2))
        await until(lambda: channel.statistics().waiting_senders == 2)
        assert channel.receive_nowait() == 0  # wakes ``first``...
        first.cancel()  # ...which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await first
        await second  # the free slot went to the next sender
    assert drain(channel) == [2]


async def test_cancelled_waiting_receiver_loses_nothing() -> None:
    channel: Channel[str] = Channel(1)
    async with asyncio.timeout(5):
        receiver = asyncio.create_task(channel.receive())
        await until(lambda: channel.statistics().waiting_receivers == 1)
        receiver.cancel()
        with pytest.raises(asyncio.CancelledError):
            await receiver
    assert channel.statistics().waiting_receivers == 0
    channel.send_nowait("kept")
    assert channel.receive_nowait() == "kept"


async def test_receiver_cancelled_after_wake_up_leaves_the_item_buffered() -> None:
    channel: Channel[str] = Channel(1)
    async with asyncio.timeout(5):
        receiver = asyncio.create_task(channel.receive())
        await until(lambda: channel.statistics().waiting_receivers == 1)
        channel.send_nowait("item")  # wakes the receiver...
        receiver.cancel()  # ...which is cancelled before it takes the item
        with pytest.raises(asyncio.CancelledError):
            await receiver
    assert drain(channel) == ["item"]


async def test_receiver_cancelled_after_wake_up_passes_the_item_on() -> None:
    channel: Channel[str] = Channel(1)
    async with asyncio.timeout(5):
        first = asyncio.create_task(channel.receive())
        await until(lambda: channel.statistics().waiting_receivers == 1)
        second = asyncio.create_task(channel.receive())
        await until(lambda: channel.statistics().waiting_receivers == 2)
        channel.send_nowait("item")
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await second == "item"
    assert len(channel) == 0


# -- statistics, discard, clear ------------------------------------------------------


async def test_statistics_count_items_and_waiters() -> None:
    channel: Channel[int] = Channel(2)
    async with asyncio.timeout(5):
        receivers = [asyncio.create_task(channel.receive()) for _ in range(2)]
        await until(lambda: channel.statistics().waiting_receivers == 2)
        assert channel.statistics() == (0, 2, 0, 2, False)
        channel.send_nowait(1)
        channel.send_nowait(2)
        assert sorted(await asyncio.gather(*receivers)) == [1, 2]
        for i in range(2):
            channel.send_nowait(i)
        senders = [asyncio.create_task(channel.send(9)) for _ in range(3)]
        await until(lambda: channel.statistics().waiting_senders == 3)
        stats = channel.statistics()
        assert (stats.used, stats.maxsize, stats.waiting_senders) == (2, 2, 3)
        assert stats.waiting_receivers == 0
        assert not stats.closed
        channel.close()
        await asyncio.gather(*senders, return_exceptions=True)
    assert channel.statistics() == ChannelStatistics(2, 2, 0, 0, True)


async def test_discard_removes_matching_items_and_wakes_senders() -> None:
    channel: Channel[int] = Channel(3)
    for i in (1, 2, 3):
        channel.send_nowait(i)
    async with asyncio.timeout(5):
        sender = asyncio.create_task(channel.send(4))
        await until(lambda: channel.statistics().waiting_senders == 1)
        assert channel.discard(lambda x: x % 2 == 1) == 2
        await sender
    assert channel.discard(lambda x: x > 100) == 0
    assert drain(channel) == [2, 4]


async def test_clear_returns_everything_and_wakes_senders() -> None:
    channel: Channel[int] = Channel(2)
    channel.send_nowait(1)
    channel.send_nowait(2)
    async with asyncio.timeout(5):
        sender = asyncio.create_task(channel.send(3))
        await until(lambda: channel.statistics().waiting_senders == 1)
        assert channel.clear() == [1, 2]
        await sender
    assert drain(channel) == [3]
    assert channel.clear() == []


# -- property: random interleavings ----------------------------------------------------

# One producer's plan: for each item, (use send_nowait?, loop turns to yield first).
_plan = st.lists(st.tuples(st.booleans(), st.integers(0, 3)), max_size=12)


async def _interleave(
    maxsize: int, plans: list[list[tuple[bool, int]]], consumers: list[list[int]]
) -> tuple[list[tuple[int, int]], int]:
    channel: Channel[tuple[int, int]] = Channel(maxsize)
    received: list[tuple[int, int]] = []
    peak = 0

    def check() -> None:
        nonlocal peak
        peak = max(peak, len(channel))

    async def produce(p: int, plan: list[tuple[bool, int]]) -> None:
        for i, (nowait, turns) in enumerate(plan):
            for _ in range(turns):
                await asyncio.sleep(0)
            if nowait:
                while True:
                    try:
                        channel.send_nowait((p, i))
                        break
                    except WouldBlock:
                        await asyncio.sleep(0)
            else:
                await channel.send((p, i))
            check()

    async def consume(turns: list[int]) -> None:
        k = 0
        while True:
            for _ in range(turns[k % len(turns)] if turns else 0):
                await asyncio.sleep(0)
            try:
                if k % 2:
                    try:
                        item = channel.receive_nowait()
                    except WouldBlock:
                        await asyncio.sleep(0)
                        continue
                else:
                    item = await channel.receive()
            except EndOfStream:
                return
            received.append(item)  # no await since the take: this is the take order
            check()
            k += 1

    async with asyncio.timeout(10):
        readers = [asyncio.create_task(consume(c)) for c in consumers]
        await asyncio.gather(*(produce(p, plan) for p, plan in enumerate(plans)))
        channel.close()
        await asyncio.gather(*readers)
    return received, peak


@settings(max_examples=60, deadline=None)
@given(
    maxsize=st.integers(1, 4),
    plans=st.lists(_plan, min_size=1, max_size=4),
    consumers=st.lists(st.lists(st.integers(0, 3), max_size=4), min_size=1, max_size=3),
)
def test_random_interleavings_keep_fifo_and_the_bound(
    maxsize: int, plans: list[list[tuple[bool, int]]], consumers: list[list[int]]
) -> None:
    received, peak = asyncio.run(_interleave(maxsize, plans, consumers))
    expected = [(p, i) for p, plan in enumerate(plans) for i in range(len(plan))]
    assert sorted(received) == expected  # nothing lost, nothing duplicated
    for p, plan in enumerate(plans):
        assert [i for q, i in received if q == p] == list(range(len(plan)))
    assert peak <= maxsize
