"""Tests for the hub's tenant budgets, fair share at global limits and idle eviction.

Issue 15, finding 1 (one tenant filled the hub's global byte budget and
every other tenant was refused, still after it left) and finding 8's first
point (a new topic's first offset was the hub's global publish count). The
clock is injected: nothing here sleeps.
"""

from __future__ import annotations

import asyncio

import pytest
from hubkit import drain, until

from icefloe.exceptions import ErrorCode, StreamError
from icefloe.hub import Hub, HubLimits

#: 499 characters of data on a one-character topic: 500 bytes an event
BODY = "x" * 499


class Clock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def small(**overrides: object) -> HubLimits:
    """Events of 500 bytes, topics of at most 2 of them; overrides on top."""
    base: dict[str, object] = {
        "max_event_bytes": 500,
        "history_bytes_per_topic": 1000,
        "topic_idle_s": 10,
    }
    base.update(overrides)
    return HubLimits(**base)  # type: ignore[arg-type]


async def fill(hub: Hub, tenant: str, topics: list[str]) -> None:
    """Two 500-byte events to each topic: 1,000 bytes of history each."""
    for topic in topics:
        for _ in range(2):
            await hub.publish(topic, BODY, tenant=tenant)


# -- the global byte limit (base-compatible limits: these fail on the old hub) -------


async def test_a_tenant_that_fills_the_hub_does_not_lock_out_another() -> None:
    async with Hub(small(max_bytes_total=4000)) as hub:
        await fill(hub, "a", ["1", "2", "3", "4"])
        assert hub.statistics().bytes_held == 4000
        # b holds nothing, so it is below its fair share: it is served.
        await hub.publish("b", "hi", tenant="b")
        sub = hub.subscribe(">", tenant="b")
        await hub.publish("b", "again", tenant="b")
        assert [e.data for e in drain(sub)] == ["again"]
        # a holds more than its fair share of a full hub: its new work is refused.
        with pytest.raises(StreamError, match="tenant 'a' holds 4000 bytes, its share") as info:
            await hub.publish("5", "x", tenant="a")
        assert info.value.code is ErrorCode.OVERLOADED
        with pytest.raises(StreamError, match="its share"):
            hub.subscribe(">", tenant="a")
        # ...but what it was admitted keeps working.
        await hub.publish("1", BODY, tenant="a")


async def test_a_refusal_names_only_the_callers_own_holding() -> None:
    async with Hub(small(max_bytes_total=4000)) as hub:
        await fill(hub, "a", ["1", "2", "3"])
        await fill(hub, "b", ["1"])
        total = hub.statistics().bytes_held
        with pytest.raises(StreamError) as info:
            await hub.publish("4", "x", tenant="a")
        message = info.value.message
        assert "3000" in message  # a's own
        assert str(total) not in message
        assert "4000" not in message
        assert "'b'" not in message


async def test_idle_topics_are_freed_without_their_tenant_doing_anything() -> None:
    clock = Clock()
    async with Hub(small(max_bytes_total=4000), clock=clock) as hub:
        await fill(hub, "a", ["1", "2", "3", "4"])
        clock.now = 5
        await hub.publish("b", "hi", tenant="b")
        clock.now = 12  # a's topics idle for 12 s, b's for 7
        stats = hub.statistics()  # what /metrics reads: it sweeps the idle topics
        assert (stats.topics, stats.bytes_held) == (1, len("b") + len("hi"))
        assert hub.tenant_usage("a") == (0, 0)
        with pytest.raises(StreamError, match="holds no history"):
            hub.subscribe("1", tenant="a", from_offset=0)


# -- per-tenant budgets --------------------------------------------------------------


async def test_a_tenant_at_its_byte_budget_is_refused_and_no_other() -> None:
    async with Hub(small(max_bytes_per_tenant=2000, max_bytes_total=None)) as hub:
        await fill(hub, "a", ["1", "2"])
        assert hub.tenant_usage("a") == (2, 2000)
        with pytest.raises(StreamError) as info:
            await hub.publish("3", "x", tenant="a")
        assert info.value.code is ErrorCode.OVERLOADED
        assert "tenant 'a' holds 2000 bytes in the hub, at its limit of 2000" in info.value.message
        with pytest.raises(StreamError, match="at its limit of 2000"):
            hub.subscribe(">", tenant="a")
        await fill(hub, "b", ["1"])  # b has a budget of its own
        assert hub.subscribe(">", tenant="b").tenant == "b"
        await hub.publish("2", "x", tenant="a")  # a's admitted topics keep working


async def test_topics_made_first_and_filled_later_stay_within_the_budget() -> None:
    async with Hub(small(max_bytes_per_tenant=2000, max_bytes_total=None)) as hub:
        for topic in ("1", "2", "3", "4"):
            await hub.publish(topic, "", tenant="a")  # 4 topics of 1 byte: all admitted
        await fill(hub, "a", ["1", "2", "3", "4"])  # 4,000 bytes asked of a 2,000 budget
        assert hub.tenant_usage("a") == (4, 2000)
        assert hub.statistics().history_bytes == 2000
        with pytest.raises(StreamError, match="at its limit of 2000"):
            hub.subscribe("4", tenant="a", from_offset=1)
        await fill(hub, "b", ["1"])  # b has a budget of its own: its history is whole
        assert [e.offset for e in drain(hub.subscribe("1", tenant="b", from_offset=0))] == [0, 1]


async def test_a_byte_budget_evicts_idle_topics_to_make_room() -> None:
    clock = Clock()
    async with Hub(small(max_bytes_per_tenant=2000), clock=clock) as hub:
        await fill(hub, "a", ["1"])
        clock.now = 8
        await fill(hub, "a", ["2"])
        clock.now = 11  # "1" is idle, "2" is not
        await hub.publish("3", "x", tenant="a")
        assert hub.tenant_usage("a") == (2, 1000 + len("3x"))
        with pytest.raises(StreamError, match="holds no history"):
            hub.subscribe("1", tenant="a", from_offset=0)


async def test_a_tenant_at_its_topic_budget_is_refused_and_no_other() -> None:
    clock = Clock()
    async with Hub(small(max_topics_per_tenant=3), clock=clock) as hub:
        for topic in ("1", "2", "3"):
            await hub.publish(topic, "x", tenant="a")
        with pytest.raises(StreamError) as info:
            await hub.publish("4", "x", tenant="a")
        assert info.value.code is ErrorCode.OVERLOADED
        assert "tenant 'a' holds its limit of 3 topics, none idle for 10 s" in info.value.message
        for topic in ("1", "2", "3"):
            await hub.publish(topic, "x", tenant="b")
        clock.now = 10
        await hub.publish("4", "x", tenant="a")  # its idle topics made room
        assert hub.tenant_usage("a").topics == 1


async def test_at_a_global_limit_the_tenants_past_their_fair_share_are_refused() -> None:
    limits = small(max_bytes_total=6000, max_bytes_per_tenant=3000)
    async with Hub(limits) as hub:
        # Two tenants within their own budgets fill the hub together.
        await fill(hub, "a", ["1", "2", "3"])
        await fill(hub, "b", ["1", "2", "3"])
        # A third is admitted, and up to its fair share (6000 / 3) past the limit.
        await fill(hub, "c", ["1"])
        await fill(hub, "c", ["2"])
        with pytest.raises(StreamError, match="tenant 'c' holds 2000 bytes, its share"):
            await hub.publish("3", "x", tenant="c")
        for tenant in ("a", "b"):
            with pytest.raises(StreamError, match=f"tenant '{tenant}' holds 3000"):
                await hub.publish("4", "x", tenant=tenant)


async def test_the_global_topic_limit_refuses_only_tenants_at_their_fair_share() -> None:
    async with Hub(small(max_topics=4, max_topics_per_tenant=None)) as hub:
        for topic in ("1", "2", "3", "4"):
            await hub.publish(topic, "x", tenant="a")
        await hub.publish("1", "x", tenant="b")  # b holds none: below its share of 2
        with pytest.raises(StreamError, match="tenant 'a' holds 4 topics, its share"):
            await hub.publish("5", "x", tenant="a")
        await hub.publish("2", "x", tenant="b")
        with pytest.raises(StreamError, match="tenant 'b' holds 2 topics, its share"):
            await hub.publish("3", "x", tenant="b")


async def test_a_topic_a_publisher_waits_on_is_not_evicted() -> None:
    clock = Clock()
    async with Hub(small(), clock=clock) as hub:
        sub = hub.subscribe("a", tenant="t", buffer=1, overflow="block")
        await hub.publish("a", 1, tenant="t")
        waiting = asyncio.ensure_future(hub.publish("a", 2, tenant="t"))
        await until(lambda: hub.statistics().waiting_publishers == 1)
        clock.now = 100
        assert hub.statistics().topics == 1
        assert [e.data for e in drain(sub)] == [1]
        async with asyncio.timeout(5):
            event = await waiting
        assert event.offset == 1
        clock.now = 200
        assert hub.statistics().topics == 0  # idle now, and nobody waits


async def test_a_subscriber_buffer_counts_against_its_tenant() -> None:
    async with Hub(small(max_bytes_per_tenant=1500, history_per_topic=0)) as hub:
        sub = hub.subscribe(">", tenant="a", max_bytes=1000)
        await hub.publish("1", BODY, tenant="a")
        await hub.publish("1", BODY, tenant="a")
        assert hub.tenant_usage("a") == (1, 1000)
        hub.subscribe(">", tenant="a", max_bytes=500).close()
        await hub.publish("1", BODY, tenant="a")  # drop_oldest: still 1000
        assert hub.tenant_usage("a").bytes_held == 1000
        drain(sub)
        assert hub.tenant_usage("a").bytes_held == 0


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"max_bytes_per_tenant": 0}, "max_bytes_per_tenant must be an int >= 1 or None"),
        ({"max_topics_per_tenant": True}, "max_topics_per_tenant must be an int >= 1 or None"),
        (
            {"max_bytes_per_tenant": 1000, "history_bytes_per_topic": 2000},
            r"max_bytes_per_tenant \(1000\) must be at least history_bytes_per_topic \(2000\)",
        ),
    ],
)
def test_bad_budgets_are_refused(limits: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HubLimits(max_event_bytes=500, **limits)  # type: ignore[arg-type]


# -- per-topic offsets and epochs ----------------------------------------------------


async def test_a_new_topics_first_offset_says_nothing_of_other_topics() -> None:
    async with Hub() as hub:
        for i in range(7):
            await hub.publish("busy", i, tenant="other")
            await hub.publish("mine.a", i, tenant="me")
        first = await hub.publish("mine.b", "x", tenant="me")
        assert first.offset == 0
        assert hub.statistics().published == 15  # the hub still counts them all


async def test_an_epoch_resumes_only_the_numbering_it_came_from() -> None:
    clock = Clock()
    async with Hub(small(), clock=clock) as hub:
        old = await hub.publish("a", 0, tenant="t")
        await hub.publish("a", 1, tenant="t")
        sub = hub.subscribe("a", tenant="t", from_offset=1, epoch=old.epoch)
        assert [e.data for e in drain(sub)] == [1]
        clock.now = 20
        assert hub.statistics().topics == 0  # "a" is idle: swept
        new = await hub.publish("a", "fresh", tenant="t")
        assert (new.offset, new.epoch == old.epoch) == (0, False)
        with pytest.raises(StreamError, match=f"epoch is now|epoch {old.epoch!r} is gone") as info:
            hub.subscribe("a", tenant="t", from_offset=0, epoch=old.epoch)
        assert info.value.code is ErrorCode.HISTORY_GONE
        assert new.epoch in info.value.message
        mapping = hub.subscribe("*", tenant="t", from_offset={"a": 0}, epoch={"a": new.epoch})
        assert [e.data for e in drain(mapping)] == ["fresh"]


@pytest.mark.parametrize(
    ("from_offset", "epoch", "message"),
    [
        (None, "e", "epoch is given only with from_offset"),
        (0, {"a": "e"}, "an int from_offset takes a str epoch"),
        ({"a": 0}, "e", "takes {topic: epoch}"),
        ({"a": 0}, {"b": "e"}, "epoch names topic 'b', which from_offset does not"),
        ({"a": 0}, {"a": ""}, "epoch must be a non-empty str"),
    ],
)
async def test_a_bad_epoch_is_a_value_error(
    from_offset: object, epoch: object, message: str
) -> None:
    async with Hub() as hub:
        await hub.publish("a", 0, tenant="t")
        with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
            hub.subscribe("a", tenant="t", from_offset=from_offset, epoch=epoch)  # type: ignore[arg-type]
        assert hub.statistics().subscribers == 0
