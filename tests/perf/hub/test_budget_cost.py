"""The cost of tenant budgets and idle eviction does not grow with the topics held.

Issue 15, item 1: budgets and eviction must not scan every topic on a
publish. A publish to a held topic, and a refused admission of a tenant at
its budget, cost about the same with 10,000 topics held as with a few;
evicting 10,000 idle topics is spread over the admissions that follow.
CPU time, best of several rounds, so that a loaded machine does not decide.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from icefloe.exceptions import StreamError
from icefloe.hub import Hub, HubLimits

pytestmark = pytest.mark.perf

MANY = 10_000
PUBLISHES = 20_000
ROUNDS = 5
#: the rate with many topics held, against with few, at least (generous: a scan
#: of 10,000 topics per publish would give a ratio near 0.001)
RATIO_FLOOR = 0.5


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limits() -> HubLimits:
    return HubLimits(max_topics=None, max_topics_per_tenant=None, topic_idle_s=10)


async def best_rate(run: Callable[[], Awaitable[int]]) -> float:
    best = 0.0
    for _ in range(ROUNDS):
        started = time.process_time()
        done = await run()
        best = max(best, done / max(time.process_time() - started, 1e-9))
    return best


async def publish_rate(held: int) -> float:
    async with Hub(limits()) as hub:
        for i in range(held):
            await hub.publish(f"held.t{i}", "x", tenant=f"tenant{i % 10}")

        async def run() -> int:
            for i in range(PUBLISHES):
                # Two topics in turn: every publish switches topic (the LRU path).
                await hub.publish("ab"[i & 1], "tok", tenant="tenant0")
            return PUBLISHES

        return await best_rate(run)


async def refusal_rate(held: int) -> float:
    budget = HubLimits(
        max_bytes_per_tenant=64 * 1024,
        history_bytes_per_topic=64 * 1024,
        max_event_bytes=16 * 1024,
        max_topics=None,
        max_topics_per_tenant=None,
    )
    async with Hub(budget) as hub:
        for i in range(held):
            await hub.publish(f"held.t{i}", "x", tenant=f"tenant{i % 10}")
        for _ in range(4):
            await hub.publish("full", "x" * 16_000, tenant="greedy")  # its whole budget

        async def run() -> int:
            refused = 0
            for i in range(PUBLISHES // 10):
                try:
                    await hub.publish(f"new.t{i}", "x", tenant="greedy")
                except StreamError:
                    refused += 1
            assert refused == PUBLISHES // 10
            return refused

        return await best_rate(run)


def test_a_publish_costs_the_same_with_many_topics_held() -> None:
    few = asyncio.run(publish_rate(2))
    many = asyncio.run(publish_rate(MANY))
    assert many / few >= RATIO_FLOOR, (few, many)


def test_a_refusal_at_a_budget_costs_the_same_with_many_topics_held() -> None:
    few = asyncio.run(refusal_rate(2))
    many = asyncio.run(refusal_rate(MANY))
    assert many / few >= RATIO_FLOOR, (few, many)


async def eviction_spread() -> tuple[int, int]:
    clock = Clock()
    async with Hub(limits(), clock=clock) as hub:
        for i in range(MANY):
            await hub.publish(f"old.t{i}", "x", tenant=f"tenant{i % 10}")
        clock.now = 20  # every one of them idle now
        # Each admission evicts a bounded batch, so the first is not a 10,000-topic stall.
        await hub.publish("new.first", "x", tenant="b")
        after_first = hub.statistics().topics
        for i in range(MANY):
            await hub.publish(f"new.t{i}", "x", tenant="b")
        return after_first, hub.tenant_usage("tenant0").topics


def test_idle_topics_are_evicted_in_bounded_batches() -> None:
    after_first, left = asyncio.run(eviction_spread())
    # new.first's admission swept one batch and statistics() one more.
    assert MANY - 2 * 64 <= after_first - 1 < MANY
    assert left == 0
