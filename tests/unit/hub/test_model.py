"""The hub against a model: random subscribes, publishes, reads and closes."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.core.topics import Pattern
from icefloe.exceptions import ClosedResourceError, ErrorCode, StreamError, WouldBlock
from icefloe.hub import Hub, HubLimits, HubSubscription

HISTORY = 3
SCALAR = 8  # what an int payload counts (icefloe.hub.event.SCALAR_SIZE)

TOPICS = ["a.x", "a.y", "b.x"]
PATTERNS = ["a.*", "a.>", "b.x", ">", "a.x"]
TENANTS = ["t", "u"]
POLICIES = ["drop_oldest", "drop_newest", "disconnect", "block"]


@dataclass
class ModelSub:
    handle: HubSubscription
    pattern: Pattern
    tenant: str
    policy: str
    buffer: int
    held: deque[tuple[str, int]] = field(default_factory=deque)
    ended: str | None = None


Step = tuple[str, int, int, int]
ARGS = (st.integers(0, 4), st.integers(0, 3), st.integers(1, 3))
# Subscribers first, so that most publishes reach several of them.
STEPS = st.builds(
    lambda first, rest: first + rest,
    st.lists(st.tuples(st.just("subscribe"), *ARGS), min_size=1, max_size=6),
    st.lists(
        st.tuples(
            st.sampled_from(["subscribe", "publish", "publish", "publish", "read", "close"]),
            *ARGS,
        ),
        max_size=40,
    ),
)


async def run(steps: list[Step]) -> None:
    limits = HubLimits(history_per_topic=HISTORY)
    hub = Hub(limits)
    subs: list[ModelSub] = []
    next_offset: dict[tuple[str, str], int] = {}
    history: dict[tuple[str, str], deque[int]] = {}
    published = 0
    for action, a, b, c in steps:
        if action == "subscribe":
            policy = POLICIES[b]
            tenant = TENANTS[a % 2]
            handle = hub.subscribe(PATTERNS[a], tenant=tenant, buffer=c, overflow=policy)
            subs.append(ModelSub(handle, Pattern(PATTERNS[a]), tenant, policy, c))
        elif action == "publish":
            topic, tenant = TOPICS[a % 3], TENANTS[b % 2]
            size = len(topic) + SCALAR
            key = (tenant, topic)
            # The first publish attempt creates the topic, numbered from 0.
            offset = next_offset.setdefault(key, 0)
            targets = [
                s
                for s in subs
                if s.ended is None and s.tenant == tenant and s.pattern.matches(topic)
            ]
            blocked = any(s.policy == "block" and len(s.held) >= s.buffer for s in targets)
            if blocked:
                try:
                    hub.publish_nowait(topic, published, tenant=tenant)
                except WouldBlock:
                    continue
                raise AssertionError("a full block subscriber did not refuse")
            event = hub.publish_nowait(topic, published, tenant=tenant)
            assert event.offset == offset
            next_offset[key] = offset + 1
            history.setdefault(key, deque(maxlen=HISTORY)).append(size)
            published += 1
            for s in targets:
                if len(s.held) < s.buffer:
                    s.held.append((topic, event.data))
                elif s.policy == "drop_oldest":
                    s.held.popleft()
                    s.held.append((topic, event.data))
                elif s.policy == "disconnect":
                    s.ended = "overloaded"
                    s.held.clear()
        elif action == "read" and subs:
            s = subs[a % len(subs)]
            for _ in range(c):
                if s.held:
                    event = s.handle.receive_nowait()
                    assert (event.topic, event.data) == s.held.popleft()
                elif s.ended == "overloaded":
                    with pytest.raises(StreamError) as info:
                        s.handle.receive_nowait()
                    assert info.value.code is ErrorCode.OVERLOADED
                elif s.ended == "closed":
                    with pytest.raises(ClosedResourceError):
                        s.handle.receive_nowait()
                else:
                    with pytest.raises(WouldBlock):
                        s.handle.receive_nowait()
        elif action == "close" and subs:
            s = subs[a % len(subs)]
            s.handle.close()
            s.held.clear()
            s.ended = s.ended or "closed"
        stats = hub.statistics()
        assert stats.subscribers == sum(1 for s in subs if s.ended is None)
        assert stats.published == published
        assert stats.history_bytes == sum(sum(sizes) for sizes in history.values())
        buffered = sum(len(topic) + SCALAR for s in subs for topic, _ in s.held)
        assert stats.bytes_held == stats.history_bytes + buffered
        for s in subs:
            assert s.handle.held() == len(s.held)
    hub.close()


@settings(max_examples=150, deadline=None)
@given(STEPS)
def test_the_hub_agrees_with_a_model(steps: list[Step]) -> None:
    asyncio.run(run(steps))
