"""Tests for icefloe.core.badmeter: when a flood of bad messages closes a connection."""

from __future__ import annotations

from typing import Any

import pytest

from icefloe.core.badmeter import (
    CLOSE_CODE,
    CLOSE_REASON,
    BadMessageMeter,
    BadMessageMeterStatistics,
)
from icefloe.core.wire_errors import CloseReason, close_frame


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_tolerated_and_one_more_trips() -> None:
    meter = BadMessageMeter(FakeClock())
    assert [meter.record() for _ in range(10)] == [False] * 10
    assert not meter.tripped
    assert meter.record()
    assert meter.tripped


def test_once_tripped_it_stays_tripped() -> None:
    clock = FakeClock()
    meter = BadMessageMeter(clock, burst=1)
    meter.record()
    assert meter.record()
    clock.now += 3600
    assert meter.record()
    assert meter.statistics().allowance == 0.0


def test_the_allowance_refills_at_rate() -> None:
    clock = FakeClock()
    meter = BadMessageMeter(clock, burst=10, rate=2.0)
    for _ in range(10):
        meter.record()
    clock.now += 1.0  # two more
    assert not meter.record()
    assert not meter.record()
    assert meter.record()


def test_a_steady_trickle_at_rate_never_trips() -> None:
    clock = FakeClock()
    meter = BadMessageMeter(clock)
    for _ in range(10_000):
        assert not meter.record()
        clock.now += 1.0
    assert meter.statistics().bad_total == 10_000


def test_a_trickle_faster_than_rate_trips_eventually() -> None:
    clock = FakeClock()
    meter = BadMessageMeter(clock)
    count = 0
    while not meter.record():
        count += 1
        clock.now += 0.9
    # Each message costs 0.1 more than refills: before the m-th there are
    # 10 - 0.1 * (m - 1) tokens, under 1 from m = 92 on; 91 are tolerated.
    assert 90 <= count <= 92


def test_statistics_and_constants() -> None:
    clock = FakeClock()
    meter = BadMessageMeter(clock, burst=3, rate=0.5)
    meter.record()
    assert meter.statistics() == BadMessageMeterStatistics(
        bad_total=1, tripped=False, allowance=2.0, burst=3, rate=0.5
    )
    # The close the server sends for a flood, as docs/websocket.md says.
    assert (CLOSE_CODE, CLOSE_REASON) == (1008, "too many malformed messages")
    assert close_frame(CloseReason.BAD_MESSAGE_FLOOD) == (CLOSE_CODE, CLOSE_REASON)
    assert repr(meter) == "BadMessageMeter(bad_total=1, tripped=False)"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"burst": 0}, "burst"),
        ({"burst": 2.5}, "burst"),
        ({"burst": True}, "burst"),
        ({"rate": 0}, "rate"),
        ({"rate": -1.0}, "rate"),
        ({"rate": float("inf")}, "rate"),
        ({"rate": "1"}, "rate"),
    ],
)
def test_invalid_limits_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BadMessageMeter(FakeClock(), **kwargs)
