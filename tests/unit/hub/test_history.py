"""Tests for icefloe.hub replay: per-topic history, offsets and resuming."""

from __future__ import annotations

import pytest
from hubkit import drain

from icefloe.exceptions import ErrorCode, StreamError
from icefloe.hub import Hub, HubLimits, TopicError


async def publish_range(hub: Hub, topic: str, values: range, tenant: str = "t") -> None:
    for value in values:
        await hub.publish(topic, value, tenant=tenant)


async def test_resume_replays_then_continues_live_without_gap_or_duplicate(hub: Hub) -> None:
    await publish_range(hub, "a", range(5))
    sub = hub.subscribe("a", tenant="t", from_offset=2)
    assert sub.statistics().replay_pending == 3
    await publish_range(hub, "a", range(5, 7))
    events = drain(sub)
    assert [e.offset for e in events] == [2, 3, 4, 5, 6]
    assert [e.data for e in events] == [2, 3, 4, 5, 6]
    assert sub.statistics().delivered == 5


async def test_resume_at_the_next_offset_replays_nothing(hub: Hub) -> None:
    await publish_range(hub, "a", range(3))
    sub = hub.subscribe("a", tenant="t", from_offset=3)
    assert sub.held() == 0
    await publish_range(hub, "a", range(3, 4))
    assert [e.offset for e in drain(sub)] == [3]


async def test_an_offset_no_longer_retained_is_history_gone() -> None:
    async with Hub(HubLimits(history_per_topic=3)) as hub:
        await publish_range(hub, "a", range(10))
        with pytest.raises(
            StreamError,
            match="offset 6 of topic 'a' is no longer retained; the oldest retained is 7",
        ) as info:
            hub.subscribe("a", tenant="t", from_offset=6)
        assert info.value.code is ErrorCode.HISTORY_GONE
        assert hub.statistics().subscribers == 0
        sub = hub.subscribe("a", tenant="t", from_offset=7)
        assert [e.data for e in drain(sub)] == [7, 8, 9]


async def test_history_is_bounded_in_bytes_too() -> None:
    limits = HubLimits(history_bytes_per_topic=100, max_event_bytes=100)
    async with Hub(limits) as hub:
        for _ in range(10):
            await hub.publish("a", "x" * 29, tenant="t")  # 30 bytes with the topic
            assert hub.statistics().history_bytes <= 100
        assert hub.statistics().history_bytes == 90
        sub = hub.subscribe("a", tenant="t", from_offset=7)
        assert len(drain(sub)) == 3
        with pytest.raises(StreamError, match="history_gone"):
            hub.subscribe("a", tenant="t", from_offset=6)


async def test_an_offset_ahead_of_the_topic_is_history_gone(hub: Hub) -> None:
    await publish_range(hub, "a", range(3))
    with pytest.raises(StreamError, match="offset 9 is ahead of topic 'a'") as info:
        hub.subscribe("a", tenant="t", from_offset=9)
    assert info.value.code is ErrorCode.HISTORY_GONE


async def test_a_topic_the_hub_does_not_hold_is_history_gone(hub: Hub) -> None:
    with pytest.raises(StreamError, match="topic 'a' holds no history"):
        hub.subscribe("a", tenant="t", from_offset=0)
    await publish_range(hub, "a", range(1), tenant="other")
    with pytest.raises(StreamError, match="history_gone"):
        hub.subscribe("a", tenant="t", from_offset=0)


async def test_without_history_only_the_next_offset_resumes() -> None:
    async with Hub(HubLimits(history_per_topic=0)) as hub:
        await publish_range(hub, "a", range(3))
        assert hub.statistics().history_bytes == 0
        sub = hub.subscribe("a", tenant="t", from_offset=3)
        assert sub.held() == 0
        with pytest.raises(StreamError, match="no longer retained"):
            hub.subscribe("a", tenant="t", from_offset=2)


async def test_a_wildcard_pattern_resumes_from_a_mapping(hub: Hub) -> None:
    await hub.publish("chat.a", "a0", tenant="t")
    await hub.publish("chat.b", "b0", tenant="t")
    await hub.publish("chat.a", "a1", tenant="t")
    await hub.publish("chat.b", "b1", tenant="t")
    await hub.publish("news.x", "n0", tenant="t")
    a_first = 0
    b_first = 0  # every topic numbers its own events from 0
    sub = hub.subscribe("chat.*", tenant="t", from_offset={"chat.a": a_first, "chat.b": b_first})
    # Interleaved in publish order, as a live subscriber saw them.
    assert [e.data for e in drain(sub)] == ["a0", "b0", "a1", "b1"]


@pytest.mark.parametrize(
    ("pattern", "from_offset", "error", "message"),
    [
        ("chat.*", 0, ValueError, "an int from_offset needs an exact topic"),
        ("chat.*", {"news.x": 0}, ValueError, "which pattern 'chat.\\*' does not match"),
        ("chat.*", {"chat.*": 0}, TopicError, "cannot contain the wildcard"),
        ("chat.*", {"chat.a": -1}, ValueError, "from_offset must be an int >= 0"),
        ("chat.a", "0", ValueError, "from_offset must be an int >= 0"),
    ],
)
async def test_bad_resume_points(
    hub: Hub, pattern: str, from_offset: object, error: type[Exception], message: str
) -> None:
    await hub.publish("chat.a", 1, tenant="t")
    with pytest.raises(error, match=message):
        hub.subscribe(pattern, tenant="t", from_offset=from_offset)  # type: ignore[arg-type]


async def test_replay_honours_the_filter_and_the_target(hub: Hub) -> None:
    await hub.publish("a", {"n": 1}, tenant="t")
    await hub.publish("a", {"n": 2}, tenant="t", to={"me"})
    await hub.publish("a", {"n": 3}, tenant="t", to=lambda info: info.meta.get("vip") is True)
    await hub.publish("a", {"n": 4}, tenant="t")
    me = hub.subscribe("a", tenant="t", from_offset=0, subscriber_id="me")
    vip = hub.subscribe("a", tenant="t", from_offset=0, meta={"vip": True})
    big = hub.subscribe("a", tenant="t", from_offset=0, filter="data.n >= 3")
    assert [e.data["n"] for e in drain(me)] == [1, 2, 4]
    assert [e.data["n"] for e in drain(vip)] == [1, 3, 4]
    assert [e.data["n"] for e in drain(big)] == [4]  # 3 was for VIPs only


async def test_a_recreated_topic_numbers_from_zero_under_a_new_epoch() -> None:
    now = [0.0]
    async with Hub(HubLimits(max_topics=1, topic_idle_s=1), clock=lambda: now[0]) as hub:
        old = [await hub.publish("a", i, tenant="t") for i in range(3)]  # offsets 0, 1, 2
        assert {e.epoch for e in old} == {old[0].epoch}
        now[0] = 5
        await hub.publish("b", 0, tenant="t")  # evicts a
        now[0] = 10
        event = await hub.publish("a", "again", tenant="t")  # evicts b
        assert (event.offset, event.epoch != old[0].epoch) == (0, True)
        # A subscriber that remembers offset 3 of the old topic cannot resume...
        with pytest.raises(StreamError, match="ahead of topic"):
            hub.subscribe("a", tenant="t", from_offset=3)
        # ...nor one at an offset the new numbering has, if it gives its epoch.
        with pytest.raises(StreamError, match="topic 'a' was reset") as info:
            hub.subscribe("a", tenant="t", from_offset=0, epoch=old[0].epoch)
        assert info.value.code is ErrorCode.HISTORY_GONE
        sub = hub.subscribe("a", tenant="t", from_offset=0, epoch=event.epoch)
        assert [e.data for e in drain(sub)] == ["again"]
        assert hub.statistics().history_bytes == len("a") + len("again")


async def test_replayed_events_do_not_count_against_the_buffer(hub: Hub) -> None:
    await publish_range(hub, "a", range(10))
    sub = hub.subscribe("a", tenant="t", from_offset=0, buffer=2, overflow="block")
    hub.publish_nowait("a", 10, tenant="t")
    hub.publish_nowait("a", 11, tenant="t")
    assert sub.statistics().buffered == 2
    assert [e.data for e in drain(sub)] == list(range(12))
