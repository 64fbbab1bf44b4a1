"""Tests for icefloe.hub subscriptions and hub life cycle: reading, closing, causes, stats."""

from __future__ import annotations

import asyncio

import pytest
from hubkit import drain, until

from icefloe.exceptions import ClosedResourceError, ErrorCode, StreamError, WouldBlock
from icefloe.hub import (
    Hub,
    HubEvent,
    HubStatistics,
    HubSubscription,
    Overflow,
    SubscriptionStatistics,
)


async def read_all(sub: HubSubscription) -> None:
    async for _ in sub:
        pass


async def test_async_with_detaches_and_frees_the_buffer(hub: Hub) -> None:
    async with hub.subscribe("a", tenant="t") as sub:
        await hub.publish("a", "x", tenant="t")
        assert hub.statistics().subscribers == 1
        assert hub.statistics().bytes_held == 2 * (1 + 1)  # buffer + history
    assert sub.closed
    assert sub.held() == 0
    stats = hub.statistics()
    assert (stats.subscribers, stats.bytes_held) == (0, 2)
    with pytest.raises(ClosedResourceError, match="the subscription was closed"):
        sub.receive_nowait()
    with pytest.raises(ClosedResourceError):
        await sub.receive()
    assert isinstance(sub.end_reason(), ClosedResourceError)
    assert sub.statistics().ended == "closed"
    sub.close()  # idempotent
    await sub.aclose()


async def test_closing_from_another_task_ends_iteration_cleanly(hub: Hub) -> None:
    sub = hub.subscribe("a", tenant="t")
    seen: list[HubEvent] = []
    got_one = asyncio.Event()

    async def consume() -> None:
        async for event in sub:
            seen.append(event)
            got_one.set()

    async with asyncio.timeout(5):
        reader = asyncio.ensure_future(consume())
        await hub.publish("a", 1, tenant="t")
        await got_one.wait()
        await sub.aclose()
        await reader
    assert [e.data for e in seen] == [1]


async def test_dropping_the_last_reference_detaches(hub: Hub) -> None:
    sub = hub.subscribe("a", tenant="t")
    assert hub.statistics().subscribers == 1
    del sub
    assert hub.statistics().subscribers == 0


async def test_break_out_of_async_for_detaches(hub: Hub) -> None:
    for i in range(3):
        await hub.publish("a", i, tenant="t")
    async for event in hub.subscribe("a", tenant="t", from_offset=0):
        if event.data == 1:
            break
    assert hub.statistics().subscribers == 0
    assert hub.statistics().bytes_held == hub.statistics().history_bytes


async def test_closing_the_hub_lets_readers_drain_then_raises_cancelled() -> None:
    hub = Hub()
    sub = hub.subscribe("chat.*", tenant="t")
    for i in range(3):
        await hub.publish("chat.a", i, tenant="t")
    await hub.aclose()
    await hub.aclose()  # idempotent
    assert sub.closed
    assert sub.end_reason() is None  # events still held
    assert [(await sub.receive()).data for _ in range(3)] == [0, 1, 2]
    with pytest.raises(StreamError, match="the hub was closed") as info:
        await read_all(sub)
    assert info.value.code is ErrorCode.CANCELLED
    assert info.value.stream_id == "chat.*"
    reason = sub.end_reason()
    assert isinstance(reason, StreamError)
    assert reason.code is ErrorCode.CANCELLED
    stats = hub.statistics()
    assert (stats.closed, stats.subscribers, stats.topics, stats.bytes_held) == (True, 0, 0, 0)
    assert sub.statistics().ended == "cancelled"


async def test_closing_a_subscription_after_the_hub_discards_what_it_held() -> None:
    hub = Hub()
    sub = hub.subscribe("a", tenant="t")
    await hub.publish("a", 0, tenant="t")
    hub.close()
    assert hub.statistics().bytes_held == 9  # the buffered event; histories are freed
    sub.close()
    assert sub.held() == 0
    assert hub.statistics().bytes_held == 0
    with pytest.raises(StreamError, match="cancelled"):
        sub.receive_nowait()


async def test_async_with_hub_closes_it() -> None:
    async with Hub() as hub:
        sub = hub.subscribe("a", tenant="t")
    assert hub.closed
    with pytest.raises(StreamError, match="cancelled"):
        await sub.receive()


async def test_a_waiting_reader_is_woken_by_a_publish(hub: Hub) -> None:
    sub = hub.subscribe("a", tenant="t")
    async with asyncio.timeout(5):
        reader = asyncio.ensure_future(sub.receive())
        await until(lambda: sub.statistics().waiting_readers > 0)
        await hub.publish("a", "hi", tenant="t")
        assert (await reader).data == "hi"


async def test_several_waiting_readers_are_all_woken(hub: Hub) -> None:
    sub = hub.subscribe("a", tenant="t")
    async with asyncio.timeout(5):
        readers = [asyncio.ensure_future(sub.receive()) for _ in range(2)]
        await until(lambda: sub.statistics().waiting_readers == 2)
        await hub.publish("a", 1, tenant="t")
        await hub.publish("a", 2, tenant="t")
        assert sorted([(await r).data for r in readers]) == [1, 2]


async def test_cancelling_a_read_keeps_the_subscription(hub: Hub) -> None:
    sub = hub.subscribe("a", tenant="t")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await sub.receive()
    assert not sub.closed
    assert sub.statistics().waiting_readers == 0
    await hub.publish("a", 1, tenant="t")
    assert sub.receive_nowait().data == 1


async def test_wait_interrupt_held_and_end_reason(hub: Hub) -> None:
    sub = hub.subscribe("a", tenant="t")
    assert sub.held() == 0
    assert sub.end_reason() is None
    with pytest.raises(WouldBlock, match="no event for subscriber"):
        sub.receive_nowait()
    async with asyncio.timeout(5):
        waiting = asyncio.ensure_future(sub.wait())
        await until(lambda: sub.statistics().waiting_readers > 0)
        sub.interrupt()
        await waiting
        assert sub.held() == 0
        waiting = asyncio.ensure_future(sub.wait())
        await until(lambda: sub.statistics().waiting_readers > 0)
        await hub.publish("a", 1, tenant="t")
        await waiting
        assert sub.held() == 1
        await sub.wait()  # returns at once: something is held
        sub.close()
        await sub.wait()  # returns at once: ended


async def test_subscription_properties_repr_and_statistics(hub: Hub) -> None:
    sub = hub.subscribe(
        "a.*",
        tenant="t",
        filter="data > 0",
        buffer=8,
        max_bytes=300_000,
        overflow="drop_newest",
        subscriber_id="me",
    )
    await hub.publish("a.b", 5, tenant="t")
    assert (sub.subscriber_id, sub.tenant) == ("me", "t")
    assert (sub.pattern, sub.filter) == ("a.*", "data > 0")
    assert sub.overflow is Overflow.DROP_NEWEST
    assert repr(sub) == "HubSubscription(id='me', tenant='t', pattern='a.*', buffered=1)"
    assert sub.statistics() == SubscriptionStatistics(
        subscriber_id="me",
        tenant="t",
        pattern="a.*",
        filter="data > 0",
        overflow="drop_newest",
        buffered=1,
        buffer=8,
        buffered_bytes=3 + 8,
        max_bytes=300_000,
        replay_pending=0,
        delivered=0,
        dropped_oldest=0,
        dropped_newest=0,
        blocked=0,
        waiting_publishers=0,
        ended=None,
    )


async def test_hub_statistics_and_repr() -> None:
    hub = Hub()
    assert hub.statistics() == HubStatistics(
        topics=0,
        subscribers=0,
        published=0,
        delivered=0,
        dropped_oldest=0,
        dropped_newest=0,
        disconnected=0,
        bytes_held=0,
        history_bytes=0,
        waiting_publishers=0,
        closed=False,
    )
    sub = hub.subscribe("a", tenant="t", buffer=2)
    for i in range(3):
        await hub.publish("a", i, tenant="t")
    assert repr(hub) == "Hub(topics=1, subscribers=1, closed=False)"
    stats = hub.statistics()
    assert (stats.published, stats.delivered, stats.dropped_oldest) == (3, 3, 1)
    assert stats.history_bytes == 3 * 9
    assert stats.bytes_held == 3 * 9 + 2 * 9
    assert len(drain(sub)) == 2
    assert hub.statistics().bytes_held == 3 * 9
    assert hub.limits.max_topics == 10_000
    hub.close()
