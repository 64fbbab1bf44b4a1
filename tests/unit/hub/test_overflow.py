"""Tests for icefloe.hub overflow policies: drops, disconnects, and blocking publishers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from hubkit import drain, until

from icefloe.exceptions import ClosedResourceError, ErrorCode, StreamError, WouldBlock
from icefloe.hub import Hub, HubLimits, Overflow

SMALL = HubLimits(max_event_bytes=64, history_bytes_per_topic=64)


async def test_drop_oldest_keeps_the_newest_and_counts_exactly(hub: Hub) -> None:
    sub = hub.subscribe("a", tenant="t", buffer=3)
    for i in range(10):
        await hub.publish("a", i, tenant="t")
    assert [e.data for e in drain(sub)] == [7, 8, 9]
    stats = sub.statistics()
    assert (stats.dropped_oldest, stats.dropped_newest, stats.delivered) == (7, 0, 3)
    assert hub.statistics().dropped_oldest == 7
    assert hub.statistics().delivered == 10


async def test_drop_oldest_by_bytes() -> None:
    async with Hub(SMALL) as hub:
        sub = hub.subscribe("a", tenant="t", buffer=100, max_bytes=64)
        for i in range(10):
            await hub.publish("a", f"{i}" * 19, tenant="t")  # 20 bytes each, with the topic
        events = drain(sub)
        assert [e.data[0] for e in events] == ["7", "8", "9"]
        assert sub.statistics().dropped_oldest == 7


async def test_drop_newest_keeps_the_oldest(hub: Hub) -> None:
    sub = hub.subscribe("a", tenant="t", buffer=3, overflow="drop_newest")
    for i in range(10):
        await hub.publish("a", i, tenant="t")
    assert [e.data for e in drain(sub)] == [0, 1, 2]
    assert sub.statistics().dropped_newest == 7
    assert hub.statistics().dropped_newest == 7


async def test_disconnect_ends_only_the_slow_subscriber(hub: Hub) -> None:
    slow = hub.subscribe("a", tenant="t", buffer=2, overflow=Overflow.DISCONNECT)
    fine = hub.subscribe("a", tenant="t", buffer=10)
    for i in range(3):
        await hub.publish("a", i, tenant="t")
    assert slow.closed
    with pytest.raises(StreamError, match="fell behind: its buffer of 2 events") as info:
        await slow.receive()
    assert info.value.code is ErrorCode.OVERLOADED
    # Its buffer is freed at once: nothing of it is read after the disconnect.
    assert slow.held() == 0
    with pytest.raises(StreamError, match="overloaded"):
        async for _ in slow:
            pass
    assert slow.statistics().ended == "overloaded"
    assert [e.data for e in drain(fine)] == [0, 1, 2]
    stats = hub.statistics()
    assert (stats.disconnected, stats.subscribers) == (1, 1)
    await hub.publish("a", 3, tenant="t")
    assert [e.data for e in drain(fine)] == [3]


async def test_disconnect_wakes_a_waiting_reader(hub: Hub) -> None:
    slow = hub.subscribe("a", tenant="t", buffer=1, overflow="disconnect")
    async with asyncio.timeout(5):
        reader = asyncio.ensure_future(slow.receive())
        await until(lambda: bool(slow.statistics().waiting_readers))
        # Two events before the reader runs: the second overflows the buffer of one.
        hub.publish_nowait("a", 0, tenant="t")
        hub.publish_nowait("a", 1, tenant="t")
        with pytest.raises(StreamError, match="overloaded"):
            await reader


# -- block ---------------------------------------------------------------------------


async def test_publish_nowait_refuses_when_a_block_subscriber_is_full(hub: Hub) -> None:
    full = hub.subscribe("a", tenant="t", buffer=2, overflow="block", subscriber_id="full")
    other = hub.subscribe("a", tenant="t")
    hub.publish_nowait("a", 0, tenant="t")
    hub.publish_nowait("a", 1, tenant="t")
    with pytest.raises(WouldBlock, match="subscriber 'full' of topic 'a' is full"):
        hub.publish_nowait("a", 2, tenant="t")
    # Nothing of the refused event happened anywhere.
    assert [e.data for e in drain(other)] == [0, 1]
    assert hub.statistics().published == 2
    assert full.statistics().blocked == 1
    full.receive_nowait()
    assert hub.publish_nowait("a", 2, tenant="t").offset == 2


async def test_block_applies_backpressure_and_loses_nothing(hub: Hub) -> None:
    sub = hub.subscribe("a", tenant="t", buffer=4, overflow="block")
    received: list[int] = []

    async def consume() -> None:
        async for event in sub:
            received.append(event.data)
            if event.data == 99:
                return

    async with asyncio.timeout(5):
        reader = asyncio.ensure_future(consume())
        for i in range(100):
            await hub.publish("a", i, tenant="t")
            assert sub.statistics().buffered <= 4
        await reader
    assert received == list(range(100))
    assert sub.statistics().dropped_oldest == sub.statistics().dropped_newest == 0


async def test_blocked_publishers_wake_when_half_the_buffer_is_free(hub: Hub) -> None:
    sub = hub.subscribe("a", tenant="t", buffer=4, overflow="block")
    for i in range(4):
        await hub.publish("a", i, tenant="t")
    async with asyncio.timeout(5):
        publisher = asyncio.ensure_future(hub.publish("a", 4, tenant="t"))
        await until(lambda: hub.statistics().waiting_publishers == 1)
        assert sub.statistics().waiting_publishers == 1
        sub.receive_nowait()
        for _ in range(20):
            await asyncio.sleep(0)
        assert not publisher.done()  # 3 of 4 still held: above the low-water mark
        sub.receive_nowait()
        event = await publisher
    assert event.offset == 4
    assert [e.data for e in drain(sub)] == [2, 3, 4]
    assert sub.statistics().blocked >= 1


async def test_waiting_publishers_of_a_topic_go_in_order(hub: Hub) -> None:
    sub = hub.subscribe("a", tenant="t", buffer=1, overflow="block")
    await hub.publish("a", "first", tenant="t")
    async with asyncio.timeout(5):
        publishers = []
        for name in ("p1", "p2", "p3"):
            publishers.append(asyncio.ensure_future(hub.publish("a", name, tenant="t")))
            await until(queued(hub, len(publishers)))
        with pytest.raises(WouldBlock, match="publishers of topic 'a' are waiting"):
            hub.publish_nowait("a", "cheater", tenant="t")
        received = [(await sub.receive()).data for _ in range(4)]
        await asyncio.gather(*publishers)
    assert received == ["first", "p1", "p2", "p3"]


def queued(hub: Hub, n: int) -> Callable[[], bool]:
    return lambda: hub.statistics().queued_publishers == n


async def test_a_cancelled_waiting_publisher_delivers_nothing(hub: Hub) -> None:
    sub = hub.subscribe("a", tenant="t", buffer=1, overflow="block")
    await hub.publish("a", 0, tenant="t")
    async with asyncio.timeout(5):
        first = asyncio.ensure_future(hub.publish("a", "cancelled", tenant="t"))
        second = asyncio.ensure_future(hub.publish("a", "kept", tenant="t"))
        await until(queued(hub, 2))
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await until(lambda: sub.statistics().waiting_publishers == 1)  # only the second
        assert [(await sub.receive()).data for _ in range(2)] == [0, "kept"]
        await second
    assert hub.statistics().waiting_publishers == 0
    assert hub.statistics().queued_publishers == 0


async def test_closing_the_full_subscriber_releases_the_publisher(hub: Hub) -> None:
    full = hub.subscribe("a", tenant="t", buffer=1, overflow="block")
    other = hub.subscribe("a", tenant="t")
    await hub.publish("a", 0, tenant="t")
    async with asyncio.timeout(5):
        publisher = asyncio.ensure_future(hub.publish("a", 1, tenant="t"))
        await until(lambda: hub.statistics().waiting_publishers == 1)
        await full.aclose()
        await publisher
    assert [e.data for e in drain(other)] == [0, 1]


async def test_closing_the_hub_fails_waiting_publishers() -> None:
    hub = Hub()
    sub = hub.subscribe("a", tenant="t", buffer=1, overflow="block")
    await hub.publish("a", 0, tenant="t")
    async with asyncio.timeout(5):
        waiting = [asyncio.ensure_future(hub.publish("a", i, tenant="t")) for i in (1, 2)]
        await until(lambda: hub.statistics().waiting_publishers == 1)
        hub.close()
        for task in waiting:
            with pytest.raises(ClosedResourceError, match="the hub is closed"):
                await task
    assert (await sub.receive()).data == 0


async def test_a_block_subscriber_that_does_not_want_the_event_does_not_block(hub: Hub) -> None:
    picky = hub.subscribe(
        "a", tenant="t", buffer=1, overflow="block", filter="data > 10", subscriber_id="p"
    )
    await hub.publish("a", 11, tenant="t")
    hub.publish_nowait("a", 1, tenant="t")  # filtered out
    hub.publish_nowait("a", 2, tenant="t", to={"someone-else"})
    with pytest.raises(WouldBlock):
        hub.publish_nowait("a", 12, tenant="t")
    assert picky.held() == 1


async def test_per_subscriber_counters_in_hub_statistics(hub: Hub) -> None:
    a = hub.subscribe("x", tenant="t", buffer=1, subscriber_id="a")
    b = hub.subscribe("x", tenant="t", buffer=1, overflow="drop_newest", subscriber_id="b")
    c = hub.subscribe("x", tenant="u", subscriber_id="c")
    for i in range(5):
        await hub.publish("x", i, tenant="t")
    stats = {s.subscriber_id: s for s in hub.subscriber_statistics()}
    assert (stats["a"].dropped_oldest, stats["b"].dropped_newest) == (4, 4)
    assert [s.subscriber_id for s in hub.subscriber_statistics("u")] == ["c"]
    assert hub.subscriber_statistics("nobody") == []
    assert {a.subscriber_id, b.subscriber_id, c.subscriber_id} == {"a", "b", "c"}
