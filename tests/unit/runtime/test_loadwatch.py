"""Tests for icefloe.runtime.loadwatch: LoadWatch on a real event loop.

Waits are on events set by transition listeners or by the sample callable,
each bounded by ``asyncio.timeout``; no sleep stands in for synchronisation.
The recovery timed on the wall clock is in tests/perf/runtime/test_loadwatch_timing.py.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from icefloe.core.congestion import CongestionPolicy, CongestionState, Thresholds
from icefloe.exceptions import InvalidState
from icefloe.runtime.loadwatch import LoadWatch

NORMAL = CongestionState.NORMAL
CONGESTED = CongestionState.CONGESTED
OVERLOADED = CongestionState.OVERLOADED

# Unsmoothed, a short dwell, and lag thresholds loose enough for a busy CI box.
FAST = CongestionPolicy(
    alpha=1.0,
    dwell_s=0.3,
    lag_congested_s=Thresholds(0.1, 0.05),
    lag_overloaded_s=Thresholds(0.2, 0.1),
)
INTERVAL = 0.02


class Transitions:
    """A listener recording state changes, with an event per state reached."""

    def __init__(self) -> None:
        self.seen: list[tuple[CongestionState, CongestionState]] = []
        self.reached = {state: asyncio.Event() for state in CongestionState}

    def __call__(self, old: CongestionState, new: CongestionState) -> None:
        self.seen.append((old, new))
        self.reached[new].set()

    async def wait_for(self, state: CongestionState, timeout_s: float = 5.0) -> None:
        """Wait (at most ``timeout_s``) until a transition into ``state`` has happened."""
        async with asyncio.timeout(timeout_s):
            await self.reached[state].wait()


async def test_queue_pressure_from_the_sampler() -> None:
    pressure = {"fill": 0.0, "starved": 0.0}
    transitions = Transitions()
    watch = LoadWatch(
        lambda: (pressure["fill"], pressure["starved"]), policy=FAST, interval_s=INTERVAL
    )
    watch.add_listener(transitions)
    async with watch:
        pressure["starved"] = 0.6
        await transitions.wait_for(CONGESTED)
        pressure["fill"] = 0.99
        await transitions.wait_for(OVERLOADED)
        pressure["fill"] = pressure["starved"] = 0.0
        await transitions.wait_for(NORMAL)
    assert [new for _, new in transitions.seen] == [CONGESTED, OVERLOADED, NORMAL]
    assert watch.statistics().congestion.queue_fill == 0.0


async def test_out_of_range_samples_are_clamped() -> None:
    transitions = Transitions()
    watch = LoadWatch(lambda: (7.0, -3.0), policy=FAST, interval_s=INTERVAL)
    watch.add_listener(transitions)
    async with watch:
        await transitions.wait_for(OVERLOADED)
    congestion = watch.statistics().congestion
    assert (congestion.queue_fill, congestion.credit_starved) == (1.0, 0.0)


async def test_a_failing_sampler_keeps_the_previous_values() -> None:
    calls = 0
    third = asyncio.Event()

    def sample() -> tuple[float, float]:
        nonlocal calls
        calls += 1
        if calls >= 3:
            third.set()
        if calls == 1:
            return (0.99, 0.0)
        if calls == 2:
            return (math.nan, 0.0)
        raise RuntimeError("queue gone")

    async with LoadWatch(sample, policy=FAST, interval_s=INTERVAL) as watch:
        async with asyncio.timeout(5):
            await third.wait()
        stats = watch.statistics()
    assert stats.sample_errors == calls - 1
    assert stats.congestion.queue_fill == 0.99
    assert stats.state is OVERLOADED


async def test_a_raising_listener_does_not_stop_the_others() -> None:
    def broken(old: CongestionState, new: CongestionState) -> None:
        raise ValueError("listener bug")

    transitions = Transitions()
    watch = LoadWatch(lambda: (0.99, 0.0), policy=FAST, interval_s=INTERVAL)
    watch.add_listener(broken)
    watch.add_listener(transitions)
    async with watch:
        await transitions.wait_for(OVERLOADED)
    assert watch.statistics().listener_errors == 1


async def test_removed_listeners_are_not_called() -> None:
    called: list[CongestionState] = []
    transitions = Transitions()
    watch = LoadWatch(lambda: (0.99, 0.0), policy=FAST, interval_s=INTERVAL)
    watch.add_listener(lambda old, new: called.append(new))
    watch.add_listener(transitions)
    watch.remove_listener(transitions)
    watch.remove_listener(transitions)  # no error the second time
    first = asyncio.Event()
    watch.add_listener(lambda old, new: first.set())
    async with watch:
        async with asyncio.timeout(5):
            await first.wait()
    assert called == [OVERLOADED]
    assert transitions.seen == []


async def test_a_listener_may_close_the_watch() -> None:
    watch = LoadWatch(lambda: (0.99, 0.0), policy=FAST, interval_s=INTERVAL)
    closed = asyncio.Event()

    def close(old: CongestionState, new: CongestionState) -> None:
        watch.close()
        closed.set()

    watch.add_listener(close)
    watch.start()
    async with asyncio.timeout(5):
        await closed.wait()
    assert not watch.statistics().running
    await watch.aclose()


async def test_closing_stops_the_probe() -> None:
    loop = asyncio.get_running_loop()
    calls = 0
    probed = asyncio.Event()

    def sample() -> tuple[float, float]:
        nonlocal calls
        calls += 1
        probed.set()
        return (0.0, 0.0)

    watch = LoadWatch(sample, interval_s=INTERVAL)
    watch.start()
    assert watch.statistics().running
    async with asyncio.timeout(5):
        await probed.wait()
    await watch.aclose()
    await watch.aclose()  # idempotent
    stopped_at = calls
    # Checking that something does NOT happen needs time to pass: let several
    # probe intervals go by on a loop timer, then look.
    quiet: asyncio.Future[None] = loop.create_future()
    loop.call_later(5 * INTERVAL, quiet.set_result, None)
    await quiet
    assert calls == stopped_at
    stats = watch.statistics()
    assert not stats.running
    assert stats.probes == calls
    assert stats.state is NORMAL


async def test_lifecycle_misuse_names_the_state() -> None:
    watch = LoadWatch()
    watch.start()
    with pytest.raises(InvalidState, match="running"):
        watch.start()
    await watch.aclose()
    with pytest.raises(InvalidState, match="closed"):
        watch.start()
    assert "closed" in repr(watch)


def test_start_needs_a_running_loop() -> None:
    watch = LoadWatch()
    with pytest.raises(InvalidState, match="running event loop"):
        watch.start()
    watch.close()


def test_statistics_before_start() -> None:
    stats = LoadWatch(interval_s=0.5).statistics()
    assert stats.state is NORMAL
    assert (stats.running, stats.interval_s, stats.probes) == (False, 0.5, 0)


@pytest.mark.parametrize("bad", [0, -0.1, math.inf, math.nan, True])
def test_rejects_bad_intervals(bad: float) -> None:
    with pytest.raises(ValueError, match="interval_s"):
        LoadWatch(interval_s=bad)
