"""Entry nodes share their workers fairly between priority classes."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from flowkit import MakeFlow, until
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe import Context, Headers, Message, Node, NodePolicy
from icefloe.runtime.fair import FairQueue, priority_weight


def msg(priority: int, tag: object = None) -> Message:
    return Message(tag, Headers(tenant="t", priority=priority))


@given(st.lists(st.integers(-3, 3), max_size=200))
@settings(max_examples=200, deadline=None)
def test_each_class_leaves_in_arrival_order_and_nothing_is_lost(priorities: list[int]) -> None:
    q = FairQueue()
    for i, p in enumerate(priorities):
        q.append(msg(p, i))
    assert len(q) == len(priorities)
    out = [q.popleft() for _ in range(len(priorities))]
    assert not q
    assert sorted(m.payload for m in out) == list(range(len(priorities)))
    for p in set(priorities):
        tags = [m.payload for m in out if m.headers.priority == p]
        assert tags == sorted(tags)


def test_one_class_is_plain_fifo_and_mixing_is_weighted() -> None:
    q = FairQueue()
    for i in range(5):
        q.append(msg(0, i))
    assert not q.mixing  # one class: the plain deque
    assert [q.popleft().payload for _ in range(5)] == list(range(5))
    # Backlogged classes 0 and 2 (weight 1 and 4): shares 1:4.
    for i in range(400):
        q.append(msg(0, i))
        q.append(msg(2, i))
    assert q.mixing
    served = Counter(q.popleft().headers.priority for _ in range(250))
    assert served[2] / served[0] == pytest.approx(priority_weight(2) / priority_weight(0), rel=0.05)
    while q:
        q.popleft()
    assert not q.mixing  # drained: back to the plain deque


def test_discard_and_clear_work_in_both_modes() -> None:
    q = FairQueue()
    for i in range(6):
        q.append(msg(i % 2, i))
    kept = [m for m in q if m.payload % 3]
    q.clear()
    q.extend(kept)
    assert sorted(m.payload for m in q) == [1, 2, 4, 5]
    assert priority_weight(100) == priority_weight(10)
    assert priority_weight(-100) == priority_weight(-10)


async def test_a_high_priority_run_overtakes_a_flood_of_low_ones(make_flow: MakeFlow) -> None:
    started: list[int] = []
    release = asyncio.Event()

    async def work(m: Message, ctx: Context) -> None:
        started.append(m.headers.priority)
        await release.wait()
        await ctx.emit_chunk(parent=m, text="", done=True)

    node = Node(work, name="work", policy=NodePolicy(max_concurrency=2, queue_maxsize=128))
    flow = make_flow(node.to())
    async with asyncio.timeout(10):
        low = [await flow.start(msg(0)) for _ in range(60)]
        await until(lambda: len(started) == 2)  # both workers busy, 58 low runs queued
        high = await flow.start(msg(5))
        release.set()
        await until(lambda: len(started) >= 5)
        # Served in the next round, not after the 58 queued before it.
        assert 5 in started[:5]
        await until(lambda: len(started) == 61)
    for sid in [*low, high]:
        flow.cancel(sid)


def tmsg(tenant: str, priority: int = 0, tag: object = None) -> Message:
    return Message(tag, Headers(tenant=tenant, priority=priority))


def test_the_tenants_of_one_class_take_turns() -> None:
    q = FairQueue()
    for i in range(50):
        q.append(tmsg("a", tag=i))
    assert not q.mixing  # one class, one tenant: the plain deque
    q.append(tmsg("b", tag="b"))
    assert q.mixing
    # b's one run is served within a round of a's burst, not after it.
    first = [q.popleft().payload for _ in range(3)]
    assert "b" in first
    assert [q.popleft().payload for _ in range(len(q))] == [i for i in range(50) if i not in first]
    assert not q.mixing


def test_a_class_keeps_its_weight_however_many_tenants_it_holds() -> None:
    q = FairQueue()
    # Class 0 split between ten tenants, class 2 held by one: still 1:4.
    for i in range(200):
        for t in range(10):
            q.append(tmsg(f"t{t}", 0, i))
        q.append(tmsg("solo", 2, i))
    served = Counter(q.popleft().headers.priority for _ in range(250))
    assert served[2] / served[0] == pytest.approx(priority_weight(2) / priority_weight(0), rel=0.05)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(-1, 1)), max_size=200))
@settings(max_examples=200, deadline=None)
def test_each_tenant_and_class_leaves_in_arrival_order(keys: list[tuple[str, int]]) -> None:
    q = FairQueue()
    for i, (tenant, priority) in enumerate(keys):
        q.append(tmsg(tenant, priority, i))
    assert sorted(m.payload for m in q) == list(range(len(keys)))  # iteration sees all
    out = [q.popleft() for _ in range(len(keys))]
    assert not q
    assert sorted(m.payload for m in out) == list(range(len(keys)))
    for key in set(keys):
        tags = [m.payload for m in out if (m.headers.tenant, m.headers.priority) == key]
        assert tags == sorted(tags)


async def test_a_quiet_tenant_s_run_overtakes_another_s_burst(make_flow: MakeFlow) -> None:
    started: list[str] = []
    release = asyncio.Event()

    async def work(m: Message, ctx: Context) -> None:
        started.append(m.headers.tenant)
        await release.wait()
        await ctx.emit_chunk(parent=m, text="", done=True)

    node = Node(work, name="work", policy=NodePolicy(max_concurrency=2, queue_maxsize=128))
    flow = make_flow(node.to())
    async with asyncio.timeout(10):
        burst = [await flow.start(tmsg("a")) for _ in range(60)]
        await until(lambda: len(started) == 2)  # both workers busy, 58 of a's runs queued
        quiet = await flow.start(tmsg("b"))
        release.set()
        await until(lambda: len(started) >= 5)
        assert "b" in started[:5]  # served in the next round, not after a's 58
        await until(lambda: len(started) == 61)
    for sid in [*burst, quiet]:
        flow.cancel(sid)
