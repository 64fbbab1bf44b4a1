"""Tests for icefloe.hub reliability: what a full buffer may do to each level of event."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from hubkit import drain, until

from icefloe import Context, Headers, Message, Node, create
from icefloe.core.codec import Format
from icefloe.core.messages import StreamChunk
from icefloe.exceptions import ErrorCode, StreamError, WouldBlock
from icefloe.hub import Hub, HubLimits, HubSubscription
from icefloe.runtime.node import Reliability

RELIABLE = [Reliability.AT_LEAST_ONCE, Reliability.EXACTLY_ONCE]
DROPPING = ["drop_oldest", "drop_newest"]


async def test_at_most_once_is_the_default_and_meets_the_overflow_policy(hub: Hub) -> None:
    sub = hub.subscribe("a", tenant="t", buffer=2)
    for i in range(5):
        event = await hub.publish("a", i, tenant="t")
        assert event.reliability is Reliability.AT_MOST_ONCE
    assert [e.data for e in drain(sub)] == [3, 4]
    assert sub.statistics().dropped_oldest == 3


@pytest.mark.parametrize("level", RELIABLE)
@pytest.mark.parametrize("overflow", DROPPING)
async def test_a_reliable_event_is_never_dropped_the_publisher_waits(
    hub: Hub, level: Reliability, overflow: str
) -> None:
    sub = hub.subscribe("a", tenant="t", buffer=2, overflow=overflow, subscriber_id="s")
    for i in range(2):
        await hub.publish("a", i, tenant="t", reliability=level)
    with pytest.raises(WouldBlock, match=f"subscriber 's' of topic 'a' is full.*{level.value}"):
        hub.publish_nowait("a", 2, tenant="t", reliability=level)
    async with asyncio.timeout(5):
        publisher = asyncio.ensure_future(hub.publish("a", 2, tenant="t", reliability=level))
        await until(lambda: hub.statistics().waiting_publishers == 1)
        assert not publisher.done()
        received = [(await sub.receive()).data for _ in range(3)]
        event = await publisher
    assert received == [0, 1, 2]
    assert event.reliability is level
    stats = sub.statistics()
    assert (stats.dropped_oldest, stats.dropped_newest) == (0, 0)
    assert stats.blocked >= 2  # the refused publish_nowait and the waiting publish
    assert hub.statistics().published == 3


@pytest.mark.parametrize("overflow", DROPPING)
async def test_reliable_streams_through_a_dropping_subscriber_lose_nothing(
    hub: Hub, overflow: str
) -> None:
    sub = hub.subscribe("a", tenant="t", buffer=4, overflow=overflow)
    received: list[int] = []

    async def consume() -> None:
        async for event in sub:
            received.append(event.data)
            if event.data == 199:
                return

    async with asyncio.timeout(5):
        reader = asyncio.ensure_future(consume())
        for i in range(200):
            await hub.publish("a", i, tenant="t", reliability="at_least_once")
            assert sub.statistics().buffered <= 4
        await reader
    assert received == list(range(200))


async def test_a_disconnect_subscriber_is_still_cut_and_may_resume_from_history(
    hub: Hub,
) -> None:
    cut = hub.subscribe("a", tenant="t", buffer=2, overflow="disconnect")
    for i in range(3):
        # Never waits: the disconnect subscriber is cut instead.
        hub.publish_nowait("a", i, tenant="t", reliability=Reliability.EXACTLY_ONCE)
    assert cut.closed
    assert cut.held() == 0
    with pytest.raises(StreamError) as info:
        await cut.receive()
    assert info.value.code is ErrorCode.OVERLOADED
    # Nothing is lost to it: the events it missed are in the topic's history.
    async with hub.subscribe("a", tenant="t", from_offset=0) as again:
        assert [e.data for e in drain(again)] == [0, 1, 2]


async def test_at_most_once_events_do_not_evict_reliable_ones(hub: Hub) -> None:
    sub = hub.subscribe("a", tenant="t", buffer=3)  # drop_oldest
    await hub.publish("a", "r0", tenant="t", reliability="at_least_once")
    await hub.publish("a", "m0", tenant="t")
    await hub.publish("a", "r1", tenant="t", reliability="at_least_once")
    # Full, and its oldest is reliable: the new at-most-once event goes instead.
    await hub.publish("a", "m1", tenant="t")
    stats = sub.statistics()
    assert (stats.dropped_oldest, stats.dropped_newest) == (0, 1)
    assert hub.statistics().dropped_newest == 1
    assert (await sub.receive()).data == "r0"
    assert (await sub.receive()).data == "m0"
    # One reliable event still held: once full again, still nothing evicted.
    for name in ("m2", "m3", "m4"):
        await hub.publish("a", name, tenant="t")
    assert sub.statistics().dropped_newest == 2
    assert [e.data for e in drain(sub)] == ["r1", "m2", "m3"]
    # No reliable event held: drop_oldest as usual.
    for name in ("m5", "m6", "m7", "m8"):
        await hub.publish("a", name, tenant="t")
    assert [e.data for e in drain(sub)] == ["m6", "m7", "m8"]
    assert sub.statistics().dropped_oldest == 1


async def test_a_later_at_most_once_publish_queues_behind_a_waiting_reliable_one(
    hub: Hub,
) -> None:
    sub = hub.subscribe("a", tenant="t", buffer=1, overflow="drop_newest")
    await hub.publish("a", "first", tenant="t", reliability="at_least_once")
    async with asyncio.timeout(5):
        reliable = asyncio.ensure_future(
            hub.publish("a", "second", tenant="t", reliability="at_least_once")
        )
        await until(lambda: hub.statistics().waiting_publishers == 1)
        later = asyncio.ensure_future(hub.publish("a", "third", tenant="t"))
        await until(lambda: hub.statistics().queued_publishers == 2)
        assert (await sub.receive()).data == "first"
        await reliable
        await later
    # Order is kept; the at-most-once event met a full drop_newest buffer.
    assert [e.data for e in drain(sub)] == ["second"]
    assert sub.statistics().dropped_newest == 1


async def test_reliability_is_validated_and_accepts_its_string_values(hub: Hub) -> None:
    with pytest.raises(ValueError, match="reliability must be one of"):
        await hub.publish("a", 1, tenant="t", reliability="sometimes")
    with pytest.raises(ValueError, match="reliability must be one of"):
        hub.publish_nowait("a", 1, tenant="t", reliability=1)  # type: ignore[arg-type]
    assert hub.statistics().topics == 0  # nothing was created
    event = await hub.publish("a", 1, tenant="t", reliability="exactly_once")
    assert event.reliability is Reliability.EXACTLY_ONCE


async def test_the_wire_form_does_not_carry_the_reliability(hub: Hub) -> None:
    event = await hub.publish("a", {"x": 1}, tenant="t", reliability="at_least_once")
    wire = msgspec.json.decode(event.encoded(Format.JSON))
    assert set(wire) == {"op", "topic", "offset", "epoch", "data", "headers", "ts"}


async def test_closing_the_subscriber_releases_a_waiting_reliable_publisher(hub: Hub) -> None:
    full = hub.subscribe("a", tenant="t", buffer=1)
    other = hub.subscribe("a", tenant="t", buffer=8)
    await hub.publish("a", 0, tenant="t", reliability="at_least_once")
    async with asyncio.timeout(5):
        publisher = asyncio.ensure_future(
            hub.publish("a", 1, tenant="t", reliability="at_least_once")
        )
        await until(lambda: hub.statistics().waiting_publishers == 1)
        await full.aclose()
        await publisher
    assert [e.data for e in drain(other)] == [0, 1]


# -- stream chunks through the hub ---------------------------------------------------


async def test_a_stream_relayed_through_the_hub_reaches_every_watcher() -> None:
    limits = HubLimits(history_per_topic=16)
    async with Hub(limits) as hub:
        topic = "streams.s1"
        watchers = [hub.subscribe("streams.*", tenant="t", buffer=4) for _ in range(3)]
        finals = hub.subscribe(topic, tenant="t", filter="data.done == true")
        chunks = [StreamChunk("s1", seq, f"tok{seq}") for seq in range(9)]
        chunks.append(StreamChunk("s1", 9, "", done=True))
        seen: list[list[int]] = [[] for _ in watchers]

        async def watch(i: int) -> None:
            async for event in watchers[i]:
                seen[i].append(event.data.seq)
                if event.data.done:
                    return

        async with asyncio.timeout(5):
            readers = [asyncio.ensure_future(watch(i)) for i in range(len(watchers))]
            for chunk in chunks:
                await hub.publish(topic, chunk, tenant="t", reliability="at_least_once")
            await asyncio.gather(*readers)
        assert seen == [list(range(10))] * 3
        assert [e.data.seq for e in drain(finals)] == [9]
        # A late watcher replays the stream from its first chunk.
        async with hub.subscribe(topic, tenant="t", from_offset=0) as late:
            assert [e.data.text for e in drain(late)] == [c.text for c in chunks]


async def test_a_flow_stream_relayed_through_the_hub_as_docs_hub_md_shows() -> None:
    async def idle(msg: Message, ctx: Context) -> None:
        pass

    flow = create(Node(idle, name="idle").to())
    async with flow, Hub() as hub, asyncio.timeout(5):
        writer = flow.open_stream(Headers(tenant="acme"))
        topic = f"streams.{writer.stream_id}"
        watchers = [hub.subscribe(topic, tenant="acme", buffer=2) for _ in range(2)]

        async def relay() -> None:
            async for chunk in flow.subscribe(writer.stream_id):
                await hub.publish(topic, chunk, tenant="acme", reliability="at_least_once")

        async def watch(watcher: HubSubscription) -> list[StreamChunk]:
            chunks: list[StreamChunk] = []
            async for event in watcher:
                chunks.append(event.data)
                if event.data.done:
                    return chunks
            return chunks

        # Watchers with room for 2 chunks: the relay waits for them, loses nothing.
        relaying = asyncio.ensure_future(relay())
        watching = [asyncio.ensure_future(watch(w)) for w in watchers]
        async with writer:
            for text in ("Hel", "lo", "!", " How", " are", " you?"):
                await writer.emit(text)
        await relaying
        for chunks in await asyncio.gather(*watching):
            assert "".join(c.text for c in chunks) == "Hello! How are you?"
            assert [c.seq for c in chunks] == list(range(7))


# -- waking and protecting parked reliable publishers --------------------------------


async def test_a_publisher_is_woken_when_evictions_and_nowait_reads_empty_the_buffer() -> None:
    limits = HubLimits(max_event_bytes=1024, max_subscriber_bytes=4096)
    async with Hub(limits) as hub, asyncio.timeout(5):
        sub = hub.subscribe("a.*", tenant="t", buffer=8, max_bytes=1024)
        for i in range(8):
            hub.publish_nowait("a.x", f"s{i:04}", tenant="t")  # 8 bytes each
        publisher = asyncio.ensure_future(
            hub.publish("a.x", "r", tenant="t", reliability="at_least_once")
        )
        await until(lambda: hub.statistics().waiting_publishers == 1)
        # An event too big for what is left of the buffer: it would evict six to fit.
        hub.publish_nowait("a.y", "B" * 1000, tenant="t")
        # Read as the WebSocket and SSE pumps do: only what is held, never an empty take.
        read: list[str] = []
        while sub.held():
            read.append(sub.receive_nowait().data)
        assert sub.held() == 0
        event = await publisher
        assert event.data == "r"
        # The topic is not stuck behind it either.
        later = await hub.publish("a.x", "later", tenant="t", reliability="at_least_once")
        assert [e.data for e in drain(sub)] == ["r", "later"]
        assert later.offset == event.offset + 1
        assert "r" not in read
        assert hub.statistics().waiting_publishers == 0


async def test_a_publisher_is_woken_by_nowait_reads_to_the_low_water_mark(hub: Hub) -> None:
    sub = hub.subscribe("a", tenant="t", buffer=8)
    for i in range(8):
        hub.publish_nowait("a", i, tenant="t")
    async with asyncio.timeout(5):
        publisher = asyncio.ensure_future(
            hub.publish("a", "r", tenant="t", reliability="exactly_once")
        )
        await until(lambda: sub.statistics().waiting_publishers == 1)
        for i in range(3):
            assert sub.receive_nowait().data == i
        assert not publisher.done()
        assert sub.receive_nowait().data == 3  # four left: half drained
        await publisher
    assert [e.data for e in drain(sub)] == [4, 5, 6, 7, "r"]


@pytest.mark.parametrize("overflow", DROPPING)
async def test_a_waiting_reliable_publish_is_not_starved_by_at_most_once_traffic(
    hub: Hub, overflow: str
) -> None:
    sub = hub.subscribe("t.*", tenant="t", buffer=8, overflow=overflow)
    for i in range(8):
        await hub.publish("t.b", i, tenant="t")
    async with asyncio.timeout(5):
        reliable = asyncio.ensure_future(
            hub.publish("t.a", "r", tenant="t", reliability="at_least_once")
        )
        await until(lambda: hub.statistics().waiting_publishers == 1)
        queued = asyncio.ensure_future(hub.publish("t.a", "after", tenant="t"))
        # Topic b keeps pace with the reader: one event in for every one read,
        # then a turn of the loop for the other tasks, the waiting publisher's.
        read = []
        for i in range(8, 40):
            read.append((await sub.receive()).data)
            await hub.publish("t.b", i, tenant="t")
            await asyncio.sleep(0)
            if reliable.done():
                break
        assert reliable.done(), "the reliable publish is starved"
        await reliable
        await queued
    read += [e.data for e in drain(sub)]
    assert "r" in read
    assert read.index("r") < read.index("after")
    stats = sub.statistics()
    # What topic b lost meanwhile was dropped, never an event already buffered.
    assert stats.dropped_oldest == 0
    assert stats.dropped_newest > 0
    assert hub.statistics().dropped_newest == stats.dropped_newest
    b_events = [x for x in read if isinstance(x, int)]
    assert b_events == sorted(b_events)
    assert b_events[:8] == list(range(8))


async def _block_counts(subscribe_order: list[str]) -> dict[str, tuple[int, ...]]:
    """Refuse x's and y's publishes as below; their counters, with y the lead or not."""
    async with Hub() as hub:
        subs = {
            sid: hub.subscribe("a", tenant="t", buffer=1, overflow="block", subscriber_id=sid)
            for sid in subscribe_order
        }
        await hub.publish("a", 0, tenant="t")
        drain(subs["x"])
        for _ in range(3):  # x has room, y has none
            with pytest.raises(WouldBlock, match="subscriber 'y'"):
                hub.publish_nowait("a", 1, tenant="t")
        async with asyncio.timeout(5):
            publisher = asyncio.ensure_future(hub.publish("a", 1, tenant="t"))
            await until(lambda: hub.statistics().waiting_publishers == 1)
            assert subs["y"].receive_nowait().data == 0
            await publisher
        # White-box: the subscriber offered the event first (the lead) is the
        # last to subscribe, so the two orders give each role to each buffer.
        state = subs["x"]._s.registry.topic("t", "a")
        assert state is not None
        lead = state.lead
        assert lead is not None
        assert lead.subscriber_id == subscribe_order[-1]
        counts = {}
        for sid, sub in subs.items():
            ring = sub._s.ring.statistics()
            stats = sub.statistics()
            counts[sid] = (ring.offered, ring.accepted, ring.would_block, stats.blocked)
        return counts


async def test_block_counters_do_not_depend_on_which_subscriber_leads() -> None:
    y_leads = await _block_counts(["x", "y"])
    x_leads = await _block_counts(["y", "x"])
    assert y_leads == x_leads
    # Every refusal counts once, in the refusing buffer only.
    offered, accepted, would_block, blocked = y_leads["y"]
    assert accepted == 2
    assert would_block == blocked >= 4  # three publish_nowait, and the publish that waited
    assert offered == accepted + would_block
    assert y_leads["x"] == (2, 2, 0, 0)
