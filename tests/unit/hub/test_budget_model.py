"""Property tests of the hub's budgets: the fair-share arithmetic, and a hub
driven by random publishes of several tenants with an injected clock."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.exceptions import ErrorCode, StreamError
from icefloe.hub import Hub, HubLimits
from icefloe.hub.budget import fair_share, no_room, over_limit, over_share

TENANTS = ("a", "b", "c", "d")
TOPICS = ("t0", "t1", "t2", "t3", "t4", "t5")
LIMITS = HubLimits(
    max_topics=8,
    max_topics_per_tenant=4,
    max_bytes_total=3000,
    max_bytes_per_tenant=1500,
    max_event_bytes=300,
    history_bytes_per_topic=600,
    topic_idle_s=5,
)


@given(st.integers(1, 10**9), st.lists(st.integers(0, 10**8), min_size=1, max_size=40))
def test_a_full_hub_always_has_a_tenant_at_its_fair_share(limit: int, held: list[int]) -> None:
    total = sum(held)
    refused = [h for h in held if over_share(h, total, limit, len(held))]
    if total >= limit:
        # Pigeonhole: someone holds at least limit / n, so a full hub refuses someone...
        assert refused
    else:
        assert not refused
    # ...and never a tenant below its fair share.
    assert all(h >= fair_share(limit, len(held)) for h in refused)


@given(st.integers(0, 100), st.one_of(st.none(), st.integers(1, 100)), st.integers(1, 10))
def test_over_limit_and_no_room(held: int, limit: int | None, unit: int) -> None:
    assert over_limit(held, limit) == (limit is not None and held >= limit)
    assert no_room(held, limit, unit) == (limit is not None and limit - held < unit)


Step = tuple[int, int, int, float]
steps = st.lists(
    st.tuples(
        st.integers(0, len(TENANTS) - 1),
        st.integers(0, len(TOPICS) - 1),
        st.integers(1, 290),
        st.sampled_from([0.0, 0.0, 1.0, 6.0]),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_budgets_hold_whatever_the_tenants_publish(script: list[Step]) -> None:
    asyncio.run(asyncio.wait_for(run(script), 30))


async def run(script: list[Step]) -> None:
    now = [0.0]
    async with Hub(LIMITS, clock=lambda: now[0]) as hub:
        for tenant_i, topic_i, size, advance in script:
            now[0] += advance
            tenant, topic = TENANTS[tenant_i], TOPICS[topic_i]
            usage = {t: hub.tenant_usage(t) for t in TENANTS}
            try:
                await hub.publish(topic, "x" * (size - len(topic)), tenant=tenant)
            except StreamError as exc:
                code = exc.code
                check_refusal(hub, tenant, usage[tenant].topics)
                assert code is ErrorCode.OVERLOADED
            check_invariants(hub)


def check_refusal(hub: Hub, tenant: str, topics_before: int) -> None:
    """Only a tenant at one of its budgets or at its fair share of a full hub is refused."""
    mine = hub.tenant_usage(tenant)
    # Nothing was created; the admission's sweep may have evicted idle topics,
    # the refused tenant's too (idle topics go at any admission).
    assert mine.topics <= topics_before
    present = sum(1 for t in TENANTS if hub.tenant_usage(t).topics) + (mine.topics == 0)
    stats = hub.statistics()
    assert (
        over_limit(mine.topics, LIMITS.max_topics_per_tenant)
        or no_room(mine.bytes_held, LIMITS.max_bytes_per_tenant, LIMITS.max_event_bytes)
        or over_share(mine.topics, stats.topics, LIMITS.max_topics, present)
        or over_share(mine.bytes_held, stats.bytes_held, LIMITS.max_bytes_total, present)
    )


def check_invariants(hub: Hub) -> None:
    stats = hub.statistics()
    usage = [hub.tenant_usage(t) for t in TENANTS]
    # Every byte and topic is some tenant's; nothing is counted twice.
    assert stats.bytes_held == stats.history_bytes == sum(u.bytes_held for u in usage)
    assert stats.topics == sum(u.topics for u in usage)
    for u in usage:
        assert u.topics <= LIMITS.max_topics_per_tenant  # type: ignore[operator]
        # Histories are trimmed to the budget however the topics were made and filled.
        assert u.bytes_held <= (LIMITS.max_bytes_per_tenant or 0)
    # Past a global limit only tenants below their fair share are admitted.
    assert stats.topics <= 2 * (LIMITS.max_topics or 0)
