"""A slow subscriber beside fast ones, 100,000 events: bounded RSS, exact drops, no rate lost.

Moved from tests/unit/hub/test_slow_subscriber.py: it measures process RSS and
publish rates in real time, so it runs in the perf suite (``-m perf``).
"""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass

import psutil
import pytest

from icefloe.hub import Hub, HubLimits, HubSubscription

pytestmark = pytest.mark.perf

EVENTS = 100_000
SLOW_BUFFER = 128
HISTORY = 64

# -- the acceptance test: a reader at 1 event/s beside fast ones -----------------------

TOPIC = "room.tokens"
#: fast subscribers (overflow ``block``: lossless, so their rate is the publisher's)
FAST = 4
FAST_BUFFER = 256
#: a payload big enough that keeping every event would show in RSS (~100 MB)
PAD = "x" * 1000
EVENT_BYTES = len(TOPIC) + 6 + len(PAD)
#: events the hub may hold at once: slow buffer, fast buffers, history
HELD = SLOW_BUFFER + FAST * FAST_BUFFER + HISTORY
#: what one held event may cost in RSS: its payload plus Python's objects around it
PER_EVENT_RSS = EVENT_BYTES + 1024
#: RSS growth allowed beyond that: allocator arenas, the loop, the test's own objects
#: (generous; keeping all 100,000 events would cost over 100 MB and still fail)
RSS_SLACK = 32 * 1024 * 1024
#: rounds at most (each a run without and a run with the slow reader)
ROUNDS = 5
#: the fast subscribers' rate with the slow one, against without, at least (generous
#: for a loaded machine; a slow reader that held the publisher back, at 1 event/s,
#: would give a ratio near 0)
RATE_FLOOR = 0.5


@dataclass
class SlowReader:
    """Reads one event, then waits for the next tick of a real-time 1 s clock."""

    sub: HubSubscription
    read: list[int]
    tick: asyncio.Event

    async def run(self) -> None:
        while True:
            event = await self.sub.receive()
            self.read.append(event.offset)
            await self.tick.wait()
            self.tick.clear()


class Ticker:
    """Sets ``tick`` once per second of real time: the slow reader's clock (not a sync)."""

    def __init__(self, tick: asyncio.Event) -> None:
        self._tick = tick
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(1.0, self._fire)

    def _fire(self) -> None:
        self._tick.set()
        self._handle = self._loop.call_later(1.0, self._fire)

    def cancel(self) -> None:
        self._handle.cancel()


async def fast_reader(sub: HubSubscription) -> int:
    """Every event, in order, up to the last; returns how many."""
    expected = 0
    async for event in sub:
        if event.offset != expected:
            raise AssertionError(f"fast subscriber got offset {event.offset}, not {expected}")
        expected += 1
        if expected == EVENTS:
            return expected
    return expected


@dataclass
class Run:
    rate: float
    peak_rss: int


async def run_once(with_slow: bool, baseline_rss: int) -> Run:
    """Publish EVENTS to FAST fast subscribers (and a slow one); their rate and the RSS peak."""
    limits = HubLimits(
        history_per_topic=HISTORY, max_event_bytes=2048, history_bytes_per_topic=2048 * HISTORY
    )
    process = psutil.Process()
    peak = 0
    async with Hub(limits) as hub:
        fast = [
            hub.subscribe(TOPIC, tenant="t", buffer=FAST_BUFFER, overflow="block")
            for _ in range(FAST)
        ]
        slow = None
        if with_slow:
            slow = SlowReader(
                hub.subscribe(TOPIC, tenant="t", buffer=SLOW_BUFFER, max_bytes=256 * 1024),
                [],
                asyncio.Event(),
            )
        readers = [asyncio.ensure_future(fast_reader(sub)) for sub in fast]
        slow_task = asyncio.ensure_future(slow.run()) if slow is not None else None
        clock = Ticker(slow.tick) if slow is not None else None
        try:
            async with asyncio.timeout(30):
                start = time.perf_counter()
                for i in range(EVENTS):
                    await hub.publish(TOPIC, f"{i:06d}{PAD}", tenant="t")
                    if i % 4096 == 0:
                        peak = max(peak, process.memory_info().rss - baseline_rss)
                assert await asyncio.gather(*readers) == [EVENTS] * FAST
                elapsed = time.perf_counter() - start
        finally:
            if clock is not None:
                clock.cancel()
            if slow_task is not None:
                slow_task.cancel()
                await asyncio.gather(slow_task, return_exceptions=True)
        peak = max(peak, process.memory_info().rss - baseline_rss)
        stats = hub.statistics()
        assert stats.published == EVENTS
        if slow is not None:
            check_slow_drops(slow)
            # The fast subscribers lost nothing: every drop is the slow one's.
            assert stats.dropped_oldest == EVENTS - SLOW_BUFFER - len(slow.read)
        else:
            assert stats.dropped_oldest == 0
    return Run(EVENTS / elapsed, peak)


def check_slow_drops(slow: SlowReader) -> None:
    """Every event the slow subscriber did not read or hold was counted as dropped."""
    stats = slow.sub.statistics()
    read = len(slow.read)
    assert read >= 1  # it read the first event at once
    assert stats.delivered == read
    assert stats.buffered == SLOW_BUFFER
    assert stats.dropped_oldest == EVENTS - SLOW_BUFFER - read
    assert stats.dropped_newest == 0
    # drop_oldest: what it holds is the newest events, the last SLOW_BUFFER offsets.
    held = [slow.sub.receive_nowait().offset for _ in range(SLOW_BUFFER)]
    assert held == list(range(EVENTS - SLOW_BUFFER, EVENTS))


async def test_a_slow_subscriber_costs_bounded_memory_exact_drops_and_no_fast_rate() -> None:
    """A reader at 1 event/s beside fast readers, while the topic gets 100,000 events.

    The slow reader takes one event, then waits for a real-time clock that
    ticks once a second; runs are shorter than that, so it reads about one
    event a run and everything else overflows its ``drop_oldest`` buffer.
    Runs alternate without and with it, and the best of each are compared,
    until the rate holds or ROUNDS rounds have run (a noisy machine may need
    more than one; a real slowdown fails them all).
    """
    gc.collect()
    baseline_rss = psutil.Process().memory_info().rss
    solo: list[Run] = []
    shared: list[Run] = []
    for _ in range(ROUNDS):
        solo.append(await run_once(False, baseline_rss))
        shared.append(await run_once(True, baseline_rss))
        if max(r.rate for r in shared) >= RATE_FLOOR * max(r.rate for r in solo):
            break
    # (a) memory: the configured buffers and history, plus a constant, not 100,000 events.
    bound = HELD * PER_EVENT_RSS + RSS_SLACK
    assert max(r.peak_rss for r in shared) <= bound, (
        f"RSS grew by {max(r.peak_rss for r in shared)} bytes, bound {bound}"
    )
    # (c) the fast subscribers' rate does not suffer for the slow one.
    best_solo = max(r.rate for r in solo)
    best_shared = max(r.rate for r in shared)
    assert best_shared >= RATE_FLOOR * best_solo, (
        f"fast rate {best_shared:,.0f}/s with a slow subscriber, {best_solo:,.0f}/s without"
    )
