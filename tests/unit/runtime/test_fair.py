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
