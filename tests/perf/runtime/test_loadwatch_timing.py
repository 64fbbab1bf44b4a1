"""LoadWatch on a real event loop, timed: a blocked loop is overloaded, then recovers in time.

Moved from tests/unit/runtime/test_loadwatch.py: it blocks the loop with CPU
work and asserts how long recovery takes on the loop's clock, so it runs in
the perf suite (``-m perf``).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from test_loadwatch import FAST, INTERVAL, Transitions

from icefloe.core.congestion import CongestionState
from icefloe.runtime.loadwatch import LoadWatch

pytestmark = pytest.mark.perf

NORMAL = CongestionState.NORMAL
OVERLOADED = CongestionState.OVERLOADED

#: recovery once the loop is free: at least the dwell, and generous above it for a
#: loaded machine (was 3 s); a watch that waited far past its dwell fails
RECOVERY_S = 5.0
#: the bound on each wait for a transition (5 s in the unit tests)
WAIT_S = 10.0


def spin(seconds: float) -> None:
    """Hold the event loop with CPU work, like a blocking call in a callback."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def test_blocked_loop_is_overloaded_then_recovers() -> None:
    loop = asyncio.get_running_loop()
    transitions = Transitions()
    watch = LoadWatch(policy=FAST, interval_s=INTERVAL)
    watch.add_listener(transitions)
    tasks_before = asyncio.all_tasks()
    async with watch:
        loop.call_soon(spin, 0.3)
        await transitions.wait_for(OVERLOADED, WAIT_S)
        assert watch.state is OVERLOADED
        overloaded_at = loop.time()
        await transitions.wait_for(NORMAL, WAIT_S)
        recovered_in = loop.time() - overloaded_at
        assert watch.state is NORMAL
    # Recovery takes at least the dwell, and not much more once the loop is free.
    assert FAST.dwell_s * 0.9 <= recovered_in < RECOVERY_S
    assert transitions.seen[0] == (NORMAL, OVERLOADED)
    assert transitions.seen[-1][1] is NORMAL
    stats = watch.statistics()
    assert stats.max_lag_s >= 0.25
    assert stats.congestion.transitions == len(transitions.seen)
    assert stats.congestion.seconds_overloaded > 0.0
    assert not stats.running
    assert asyncio.all_tasks() == tasks_before
