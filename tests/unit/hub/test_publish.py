"""Tests for icefloe.hub: routing by pattern, tenancy, filters, targets, offsets, limits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hubkit import drain

from icefloe.exceptions import ClosedResourceError, EncodeError, ErrorCode, StreamError
from icefloe.hub import (
    FilterError,
    Hub,
    HubLimits,
    SubscriberInfo,
    TopicError,
    compile_filter,
)


def payloads(events: list[Any]) -> list[Any]:
    return [e.data for e in events]


# -- routing -------------------------------------------------------------------------


async def test_patterns_route_each_event_to_matching_subscribers(hub: Hub) -> None:
    exact = hub.subscribe("chat.room1.tokens", tenant="acme")
    star = hub.subscribe("chat.*.tokens", tenant="acme")
    rest = hub.subscribe("chat.>", tenant="acme")
    other = hub.subscribe("news.>", tenant="acme")
    await hub.publish("chat.room1.tokens", 1, tenant="acme")
    await hub.publish("chat.room2.tokens", 2, tenant="acme")
    await hub.publish("chat.room2.presence", 3, tenant="acme")
    assert payloads(drain(exact)) == [1]
    assert payloads(drain(star)) == [1, 2]
    assert payloads(drain(rest)) == [1, 2, 3]
    assert drain(other) == []


async def test_the_event_carries_topic_tenant_offset_headers_and_time(hub: Hub) -> None:
    sub = hub.subscribe("a.b", tenant="acme")
    published = await hub.publish("a.b", {"x": 1}, tenant="acme", headers={"lang": "en", "n": 2})
    event = await sub.receive()
    assert event is published
    assert (event.topic, event.tenant, event.data) == ("a.b", "acme", {"x": 1})
    assert event.headers == {"lang": "en", "n": 2}
    assert event.ts > 0


async def test_headers_are_copied_so_the_caller_may_reuse_them(hub: Hub) -> None:
    sub = hub.subscribe("a", tenant="t")
    headers = {"k": "v"}
    await hub.publish("a", None, tenant="t", headers=headers)
    headers["k"] = "changed"
    assert (await sub.receive()).headers == {"k": "v"}


async def test_subscribing_later_changes_the_route(hub: Hub) -> None:
    first = hub.subscribe("a.*", tenant="t")
    await hub.publish("a.b", 1, tenant="t")
    second = hub.subscribe("a.b", tenant="t")
    await hub.publish("a.b", 2, tenant="t")
    assert payloads(drain(first)) == [1, 2]
    await first.aclose()
    await hub.publish("a.b", 3, tenant="t")
    assert first.held() == 0
    assert payloads(drain(second)) == [2, 3]


async def test_publishing_with_no_subscriber_keeps_history_only(hub: Hub) -> None:
    event = await hub.publish("lonely", "x", tenant="t")
    stats = hub.statistics()
    assert (stats.published, stats.delivered, stats.topics) == (1, 0, 1)
    assert stats.bytes_held == stats.history_bytes == len("lonely") + 1
    assert event.offset == 0


# -- tenancy -------------------------------------------------------------------------


async def test_tenants_never_see_each_other(hub: Hub) -> None:
    acme = hub.subscribe(">", tenant="acme")
    globex = hub.subscribe(">", tenant="globex")
    a = await hub.publish("chat.room1", "for acme", tenant="acme")
    g = await hub.publish("chat.room1", "for globex", tenant="globex")
    assert payloads(drain(acme)) == ["for acme"]
    assert payloads(drain(globex)) == ["for globex"]
    # Same topic name, two topics: each numbers its own events.
    assert a.offset == 0
    assert g.offset == 0
    assert a.epoch != g.epoch
    assert hub.statistics().topics == 2


async def test_subscriber_ids_are_per_tenant(hub: Hub) -> None:
    held = [
        hub.subscribe("a", tenant="acme", subscriber_id="s1"),
        hub.subscribe("a", tenant="globex", subscriber_id="s1"),
    ]
    assert [s.subscriber_id for s in held] == ["s1", "s1"]
    with pytest.raises(ValueError, match="'s1' is in use by tenant 'acme'"):
        hub.subscribe("b", tenant="acme", subscriber_id="s1")


# -- filters -------------------------------------------------------------------------


async def test_filters_select_events(hub: Hub) -> None:
    final = hub.subscribe("chat.>", tenant="t", filter="data.final == true")
    english = hub.subscribe("chat.>", tenant="t", filter=compile_filter('headers.lang == "en"'))
    everything = hub.subscribe("chat.>", tenant="t")
    await hub.publish("chat.a", {"final": False}, tenant="t", headers={"lang": "en"})
    await hub.publish("chat.a", {"final": True}, tenant="t", headers={"lang": "fr"})
    assert payloads(drain(final)) == [{"final": True}]
    assert payloads(drain(english)) == [{"final": False}]
    assert len(drain(everything)) == 2
    assert final.filter == "data.final == true"
    assert everything.filter is None


async def test_a_bad_filter_is_refused_at_subscribe(hub: Hub) -> None:
    with pytest.raises(FilterError, match="expected a value after '==' at 10"):
        hub.subscribe("a", tenant="t", filter="data.x == ")
    assert hub.statistics().subscribers == 0


# -- selective broadcast -------------------------------------------------------------


async def test_to_a_set_of_ids(hub: Hub) -> None:
    subs = {sid: hub.subscribe("room", tenant="t", subscriber_id=sid) for sid in "abc"}
    await hub.publish("room", "to a and c", tenant="t", to={"a", "c", "zzz"})
    await hub.publish("room", "to all", tenant="t")
    assert payloads(drain(subs["a"])) == ["to a and c", "to all"]
    assert payloads(drain(subs["b"])) == ["to all"]
    assert payloads(drain(subs["c"])) == ["to a and c", "to all"]


async def test_to_a_predicate_over_subscriber_info(hub: Hub) -> None:
    admin = hub.subscribe("room", tenant="t", meta={"role": "admin"})
    user = hub.subscribe("room", tenant="t", meta={"role": "user"})
    seen: list[SubscriberInfo] = []

    def admins(info: SubscriberInfo) -> bool:
        seen.append(info)
        return info.meta.get("role") == "admin"

    await hub.publish("room", "secret", tenant="t", to=admins)
    assert payloads(drain(admin)) == ["secret"]
    assert drain(user) == []
    assert {info.subscriber_id for info in seen} == {admin.subscriber_id, user.subscriber_id}
    assert all(info.tenant == "t" and info.pattern == "room" for info in seen)


async def test_to_never_crosses_tenants(hub: Hub) -> None:
    other = hub.subscribe("room", tenant="other", subscriber_id="x")
    await hub.publish("room", "hi", tenant="t", to={"x"})
    assert drain(other) == []


async def test_a_raising_predicate_delivers_nothing(hub: Hub) -> None:
    sub = hub.subscribe("room", tenant="t")

    def broken(info: SubscriberInfo) -> bool:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await hub.publish("room", "x", tenant="t", to=broken)
    assert drain(sub) == []
    assert hub.statistics().published == 0
    assert (await hub.publish("room", "y", tenant="t")).offset == 0


@pytest.mark.parametrize("to", ["abc", b"abc", 5, [1, 2]])
async def test_bad_targets(hub: Hub, to: Any) -> None:
    with pytest.raises(ValueError, match="to= must"):
        await hub.publish("room", "x", tenant="t", to=to)


# -- offsets -------------------------------------------------------------------------


async def test_offsets_are_consecutive_per_topic(hub: Hub) -> None:
    a = [(await hub.publish("a", i, tenant="t")).offset for i in range(3)]
    b = [(await hub.publish("b", i, tenant="t")).offset for i in range(3)]
    a += [(await hub.publish("a", i, tenant="t")).offset for i in range(2)]
    assert a == [0, 1, 2, 3, 4]
    # A topic created later starts at 0 too: it says nothing of other topics.
    assert b == [0, 1, 2]


# -- validation ----------------------------------------------------------------------


@pytest.mark.parametrize("topic", ["", "a..b", "chat.*", "chat.>", "bad topic", 5])
async def test_publish_refuses_bad_topics(hub: Hub, topic: Any) -> None:
    with pytest.raises(TopicError):
        await hub.publish(topic, "x", tenant="t")
    assert hub.statistics().topics == 0


@pytest.mark.parametrize("tenant", ["", None, 3, "x" * 257])
async def test_bad_tenants(hub: Hub, tenant: Any) -> None:
    with pytest.raises(ValueError, match="tenant must be a non-empty str"):
        await hub.publish("a", "x", tenant=tenant)
    with pytest.raises(ValueError, match="tenant must be a non-empty str"):
        hub.subscribe("a", tenant=tenant)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ([("a", "b")], "headers must be a mapping"),
        ({1: "x"}, "header names must be str"),
        ({"a": [1]}, "header 'a' must be a str, number, bool or None, got list"),
    ],
)
async def test_bad_headers(hub: Hub, headers: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await hub.publish("a", "x", tenant="t", headers=headers)


async def test_unencodable_data_is_refused_before_anything_changes(hub: Hub) -> None:
    with pytest.raises(EncodeError):
        await hub.publish("a", {"x": object()}, tenant="t")
    assert hub.statistics().topics == 0


@pytest.mark.parametrize("pattern", ["", "a.>.b", "a*", "a..b"])
async def test_subscribe_refuses_bad_patterns(hub: Hub, pattern: str) -> None:
    with pytest.raises(TopicError):
        hub.subscribe(pattern, tenant="t")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"buffer": 0}, "buffer must be an int between 1 and 65536"),
        ({"buffer": 10**6}, "buffer must be"),
        ({"buffer": True}, "buffer must be"),
        ({"max_bytes": 10}, "max_bytes must be an int between 262144 and 16777216"),
        ({"overflow": "sometimes"}, "overflow must be one of"),
        ({"subscriber_id": ""}, "subscriber_id must be a non-empty str"),
        ({"from_offset": -1}, "from_offset must be an int >= 0"),
    ],
)
async def test_subscribe_refuses_bad_arguments(
    hub: Hub, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        hub.subscribe("a", tenant="t", **kwargs)
    assert hub.statistics().subscribers == 0


# -- limits --------------------------------------------------------------------------


async def test_an_event_over_max_event_bytes_is_refused() -> None:
    limits = HubLimits(max_event_bytes=100)
    async with Hub(limits) as hub:
        await hub.publish("a", "x" * 99, tenant="t")
        with pytest.raises(ValueError, match="an event of 101 bytes exceeds max_event_bytes"):
            await hub.publish("a", "x" * 100, tenant="t")


async def test_max_subscribers_and_per_tenant() -> None:
    async with Hub(HubLimits(max_subscribers=3, max_subscribers_per_tenant=2)) as hub:
        held = [hub.subscribe("a", tenant="t"), hub.subscribe("a", tenant="t")]
        with pytest.raises(StreamError, match="tenant 't' has its limit of 2") as info:
            hub.subscribe("a", tenant="t")
        assert info.value.code is ErrorCode.LIMIT_EXCEEDED
        held.append(hub.subscribe("a", tenant="u"))
        with pytest.raises(StreamError, match="no room for another subscriber"):
            hub.subscribe("a", tenant="v")
        held[0].close()
        held.append(hub.subscribe("a", tenant="v"))
        assert hub.statistics().subscribers == 3


async def test_max_topics_evicts_the_least_recently_used_idle_topic() -> None:
    now = [0.0]
    limits = HubLimits(max_topics=2, topic_idle_s=10)
    async with Hub(limits, clock=lambda: now[0]) as hub:
        await hub.publish("a", 1, tenant="t")
        await hub.publish("b", 1, tenant="t")
        with pytest.raises(StreamError, match="'t' holds 2 topics, its share of the hub") as info:
            await hub.publish("c", 1, tenant="t")
        assert info.value.code is ErrorCode.OVERLOADED
        now[0] = 11.0
        await hub.publish("a", 2, tenant="t")  # a is used again: b is now the oldest
        await hub.publish("c", 1, tenant="t")
        assert hub.statistics().topics == 2
        with pytest.raises(StreamError, match="holds no history"):
            hub.subscribe("b", tenant="t", from_offset=0)
        a = hub.subscribe("a", tenant="t", from_offset=0)
        assert payloads(drain(a)) == [1, 2]


async def test_max_bytes_total_refuses_new_subscribers_and_topics() -> None:
    limits = HubLimits(max_bytes_total=1000, max_event_bytes=500, history_bytes_per_topic=500)
    async with Hub(limits) as hub:
        sub = hub.subscribe("a", tenant="t", max_bytes=500)
        await hub.publish("a", "x" * 499, tenant="t")
        await hub.publish("a", "y" * 499, tenant="t")  # history and buffer each hold 500
        assert hub.statistics().bytes_held == 1000
        with pytest.raises(StreamError, match="'t' holds 1000 bytes, its share") as info:
            hub.subscribe("b", tenant="t", max_bytes=500)
        assert info.value.code is ErrorCode.OVERLOADED
        with pytest.raises(StreamError, match="its share"):
            await hub.publish("new", "z", tenant="t")
        # Publishing to an admitted topic still works, within its own limits.
        await hub.publish("a", "z" * 499, tenant="t")
        assert hub.statistics().bytes_held == 1000
        drain(sub)
        assert hub.statistics().bytes_held == 500
        assert hub.subscribe("b", tenant="t", max_bytes=500).tenant == "t"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_topics": 0}, "max_topics must be an int >= 1 or None"),
        ({"history_per_topic": -1}, "history_per_topic must be an int >= 0"),
        ({"max_event_bytes": 2.5}, "max_event_bytes must be an int >= 1"),
        ({"topic_idle_s": float("nan")}, "topic_idle_s must be a finite number"),
        ({"topic_idle_s": True}, "topic_idle_s must be a finite number"),
        ({"history_bytes_per_topic": 10}, "must be at least max_event_bytes"),
        ({"max_subscriber_bytes": 10}, "must be at least max_event_bytes"),
    ],
)
def test_invalid_limits(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HubLimits(**kwargs)


async def test_a_closed_hub_refuses_work() -> None:
    hub = Hub()
    hub.close()
    with pytest.raises(ClosedResourceError, match="the hub is closed"):
        await hub.publish("a", 1, tenant="t")
    with pytest.raises(ClosedResourceError):
        hub.publish_nowait("a", 1, tenant="t")
    with pytest.raises(ClosedResourceError):
        hub.subscribe("a", tenant="t")


async def test_concurrent_publishers_interleave_but_keep_their_own_order(hub: Hub) -> None:
    sub = hub.subscribe("a", tenant="t", buffer=1000)

    async def produce(name: str) -> None:
        for i in range(100):
            await hub.publish("a", (name, i), tenant="t")
            if i % 7 == 0:
                await asyncio.sleep(0)

    async with asyncio.timeout(5):
        await asyncio.gather(produce("p"), produce("q"))
    events = drain(sub)
    assert [e.offset for e in events] == list(range(200))
    for name in "pq":
        assert [i for n, i in (e.data for e in events) if n == name] == list(range(100))
