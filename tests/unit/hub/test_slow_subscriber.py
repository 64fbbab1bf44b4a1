"""Slow subscribers under 100,000 events: bounded buffers, exact drops, fast ones get everything.

Its memory (RSS) and rate figures are in tests/perf/hub/test_slow_subscriber_cost.py.
"""

from __future__ import annotations

import asyncio
import gc

from icefloe.hub import Hub, HubEvent, HubLimits

EVENTS = 100_000
SLOW_BUFFER = 128
SLOW_BYTES = 64 * 1024
HISTORY = 64
#: how many events the producer publishes between yields to the loop
BURST = 64


def live_events() -> int:
    return sum(1 for obj in gc.get_objects() if type(obj) is HubEvent)


async def test_slow_subscriber_drops_exactly_while_the_fast_one_gets_everything() -> None:
    limits = HubLimits(
        history_per_topic=HISTORY, max_event_bytes=1024, history_bytes_per_topic=1024 * HISTORY
    )
    async with Hub(limits) as hub:
        slow = hub.subscribe("chat.*.tokens", tenant="t", buffer=SLOW_BUFFER, max_bytes=SLOW_BYTES)
        fast = hub.subscribe("chat.>", tenant="t", buffer=256)
        topic = "chat.room1.tokens"
        event_bytes = len(topic) + len("token-00000")

        async def consume() -> int:
            expected = 0
            async for event in fast:
                # Every event, in order, nothing twice.
                assert event.offset == expected
                assert event.data == f"token-{expected:05d}"
                expected += 1
                if expected == EVENTS:
                    break
            return expected

        async with asyncio.timeout(60):
            reader = asyncio.ensure_future(consume())
            for i in range(EVENTS):
                await hub.publish(topic, f"token-{i:05d}", tenant="t")
                if i % BURST == BURST - 1:
                    # A token producer yields to the loop between bursts.
                    await asyncio.sleep(0)
                if i % 4096 == 0:
                    stats = slow.statistics()
                    assert stats.buffered <= SLOW_BUFFER
                    assert stats.buffered_bytes <= SLOW_BYTES
            assert await reader == EVENTS

        stats = slow.statistics()
        assert stats.delivered == 0
        assert stats.buffered == SLOW_BUFFER
        assert stats.buffered_bytes == SLOW_BUFFER * event_bytes
        assert stats.dropped_oldest == EVENTS - SLOW_BUFFER
        assert stats.dropped_newest == 0
        assert fast.statistics().dropped_oldest == 0
        assert fast.statistics().delivered == EVENTS

        hub_stats = hub.statistics()
        assert hub_stats.published == EVENTS
        assert hub_stats.dropped_oldest == EVENTS - SLOW_BUFFER
        assert hub_stats.history_bytes == HISTORY * event_bytes
        assert hub_stats.bytes_held == (SLOW_BUFFER + HISTORY) * event_bytes
        # Memory really held: the slow buffer and the history, and nothing else.
        del reader
        gc.collect()
        assert live_events() <= SLOW_BUFFER + HISTORY + 1
