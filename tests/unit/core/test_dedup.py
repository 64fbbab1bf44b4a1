"""Tests for icefloe.core.dedup: DedupWindow, driven by a fake clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.core.dedup import DedupWindow

PROPERTY = settings(max_examples=200, deadline=None)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_first_sighting_is_new_then_duplicate() -> None:
    window: DedupWindow[str] = DedupWindow(ttl_s=10.0, max_size=10, clock=FakeClock())
    assert not window.seen("a")
    assert window.seen("a")
    assert "a" in window
    assert "b" not in window
    assert len(window) == 1


def test_key_expires_after_ttl() -> None:
    clock = FakeClock()
    window: DedupWindow[str] = DedupWindow(ttl_s=10.0, max_size=10, clock=clock)
    window.seen("a")
    clock.now = 9.999
    assert window.seen("a")
    clock.now = 10.0  # exactly ttl_s later: expired
    assert "a" not in window
    assert not window.seen("a")
    assert window.statistics().evicted_expired == 1


def test_repeat_sighting_does_not_extend_the_window() -> None:
    clock = FakeClock()
    window: DedupWindow[str] = DedupWindow(ttl_s=10.0, max_size=10, clock=clock)
    window.seen("a")
    clock.now = 8.0
    assert window.seen("a")
    clock.now = 12.0
    assert not window.seen("a")


def test_len_drops_expired_keys() -> None:
    clock = FakeClock()
    window: DedupWindow[int] = DedupWindow(ttl_s=1.0, max_size=10, clock=clock)
    for key in range(5):
        window.seen(key)
    clock.now = 5.0
    assert len(window) == 0
    assert window.statistics().size == 0


def test_oldest_key_is_forgotten_when_full() -> None:
    window: DedupWindow[int] = DedupWindow(ttl_s=60.0, max_size=3, clock=FakeClock())
    for key in range(4):
        assert not window.seen(key)
    assert 0 not in window
    assert all(key in window for key in (1, 2, 3))
    stats = window.statistics()
    assert (stats.size, stats.max_size, stats.evicted_overflow) == (3, 3, 1)


def test_clock_going_back_rerecords_an_expired_key() -> None:
    clock = FakeClock(100.0)
    window: DedupWindow[str] = DedupWindow(ttl_s=10.0, max_size=10, clock=clock)
    window.seen("late")  # expires at 110
    clock.now = 0.0
    window.seen("early")  # expires at 10, behind "late" in the window
    clock.now = 20.0
    assert "early" not in window
    assert not window.seen("early")
    assert window.seen("early")


def test_statistics_count_hits() -> None:
    window: DedupWindow[str] = DedupWindow(ttl_s=5.0, max_size=4, clock=FakeClock())
    window.seen("a")
    window.seen("a")
    window.seen("a")
    stats = window.statistics()
    assert stats.hits == 2
    assert stats.ttl_s == 5.0


@pytest.mark.parametrize(
    ("ttl_s", "max_size", "message"),
    [
        (0.0, 1, "ttl_s"),
        (-1.0, 1, "ttl_s"),
        (math.inf, 1, "ttl_s"),
        (math.nan, 1, "ttl_s"),
        (1.0, 0, "max_size"),
        (1.0, 2.5, "max_size"),
    ],
)
def test_rejects_invalid_limits(ttl_s: float, max_size: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DedupWindow(ttl_s=ttl_s, max_size=max_size, clock=FakeClock())


class _Model:
    """The window's contract, written the slow and obvious way."""

    def __init__(self, ttl_s: float, max_size: int) -> None:
        self.ttl_s = ttl_s
        self.max_size = max_size
        self.entries: list[tuple[int, float]] = []  # (key, first seen), oldest first

    def seen(self, key: int, now: float) -> bool:
        self.entries = [(k, t) for k, t in self.entries if now < t + self.ttl_s]
        if any(k == key for k, _ in self.entries):
            return True
        self.entries.append((key, now))
        if len(self.entries) > self.max_size:
            del self.entries[0]
        return False

    def keys(self, now: float) -> set[int]:
        return {k for k, t in self.entries if now < t + self.ttl_s}


_steps = st.lists(st.tuples(st.integers(0, 15), st.floats(0.0, 3.0)), max_size=150)


@PROPERTY
@given(ttl_s=st.floats(0.5, 10.0), max_size=st.integers(1, 12), steps=_steps)
def test_matches_a_simple_model(
    ttl_s: float, max_size: int, steps: list[tuple[int, float]]
) -> None:
    clock = FakeClock()
    window: DedupWindow[int] = DedupWindow(ttl_s=ttl_s, max_size=max_size, clock=clock)
    model = _Model(ttl_s, max_size)
    for key, dt in steps:
        clock.now += dt
        assert window.seen(key) == model.seen(key, clock.now)
        assert window.statistics().size <= max_size
        live = model.keys(clock.now)
        assert {k for k in range(16) if k in window} == live
        assert len(window) == len(live)


@PROPERTY
@given(ttl_s=st.floats(0.5, 10.0), steps=_steps)
def test_never_forgets_an_unexpired_key_when_not_full(
    ttl_s: float, steps: list[tuple[int, float]]
) -> None:
    clock = FakeClock()
    window: DedupWindow[int] = DedupWindow(ttl_s=ttl_s, max_size=len(steps) + 1, clock=clock)
    first_seen: dict[int, float] = {}
    for key, dt in steps:
        clock.now += dt
        recorded = first_seen.get(key)
        fresh = recorded is not None and clock.now < recorded + ttl_s
        assert window.seen(key) == fresh
        if not fresh:
            first_seen[key] = clock.now
    assert window.statistics().evicted_overflow == 0


def test_sliding_window_stays_cheap() -> None:
    # A plain dict expired from the front goes quadratic here; this would
    # take minutes instead of well under a second.
    clock = FakeClock()
    window: DedupWindow[int] = DedupWindow(ttl_s=1000.0, max_size=50_000, clock=clock)
    for key in range(200_000):
        clock.now = key / 100
        window.seen(key)
    assert window.statistics().size == 50_000
