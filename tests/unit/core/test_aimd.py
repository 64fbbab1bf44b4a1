"""Tests for icefloe.core.aimd: AimdWindow."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.core.aimd import AimdWindow

PROPERTY = settings(max_examples=200, deadline=None)


def test_starts_at_initial() -> None:
    window = AimdWindow(16)
    assert window.window == 16
    stats = window.statistics()
    assert (stats.floor, stats.ceiling) == (1, 1024)


def test_a_round_of_successes_adds_about_increase() -> None:
    window = AimdWindow(10)
    for _ in range(10):
        window.on_success()
    assert 10.9 < window.statistics().exact_window < 11.1
    assert window.window == 10 or window.window == 11


def test_batched_successes_grow_like_single_ones() -> None:
    batched = AimdWindow(10, increase=2.0)
    single = AimdWindow(10, increase=2.0)
    batched.on_success(40)
    for _ in range(40):
        single.on_success()
    assert batched.statistics().exact_window == pytest.approx(
        single.statistics().exact_window, rel=1e-3
    )


def test_congestion_halves() -> None:
    window = AimdWindow(64)
    assert window.on_congestion() == 32
    assert window.on_congestion() == 16


def test_congestion_stops_at_floor() -> None:
    window = AimdWindow(10, floor=4)
    for _ in range(5):
        window.on_congestion()
    assert window.window == 4


def test_success_stops_at_ceiling() -> None:
    window = AimdWindow(8, ceiling=10, increase=100.0)
    assert window.on_success(1000) == 10
    assert window.on_success() == 10


def test_zero_successes_change_nothing() -> None:
    window = AimdWindow(8)
    assert window.on_success(0) == 8
    assert window.statistics().exact_window == 8.0


def test_statistics_count_signals() -> None:
    window = AimdWindow(8)
    window.on_success(3)
    window.on_success()
    window.on_congestion()
    stats = window.statistics()
    assert stats.successes == 4
    assert stats.congestion_events == 1
    assert stats.window == window.window


def test_rejects_negative_successes() -> None:
    with pytest.raises(ValueError, match="n must be >= 0"):
        AimdWindow(8).on_success(-1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial": 1, "floor": 0}, "floor"),
        ({"initial": 1, "floor": True}, "floor"),
        ({"initial": 2, "floor": 3}, "initial"),
        ({"initial": 20, "ceiling": 10}, "must not exceed ceiling"),
        ({"initial": 2, "floor": 3, "ceiling": 2}, "ceiling"),
        ({"initial": 1, "ceiling": 2**53 + 1}, "2\\*\\*53"),
        ({"initial": 1.5}, "initial"),
        ({"initial": 4, "increase": 0.0}, "increase"),
        ({"initial": 4, "increase": math.inf}, "increase"),
        ({"initial": 4, "increase": math.nan}, "increase"),
        ({"initial": 4, "decrease": 0.0}, "decrease"),
        ({"initial": 4, "decrease": 1.0}, "decrease"),
        ({"initial": 4, "decrease": 1.5}, "decrease"),
        ({"initial": 4, "decrease": math.nan}, "decrease"),
    ],
)
def test_rejects_invalid_parameters(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AimdWindow(**kwargs)


@st.composite
def _params(draw: st.DrawFn) -> dict[str, Any]:
    floor = draw(st.integers(1, 50))
    ceiling = draw(st.integers(floor, 5000))
    return {
        "initial": draw(st.integers(floor, ceiling)),
        "floor": floor,
        "ceiling": ceiling,
        "increase": draw(st.floats(0.01, 100.0)),
        "decrease": draw(st.floats(0.01, 0.99)),
    }


_signal = st.one_of(st.none(), st.integers(0, 10_000))


@PROPERTY
@given(params=_params(), signals=st.lists(_signal, max_size=200))
def test_window_stays_within_floor_and_ceiling(
    params: dict[str, Any], signals: list[int | None]
) -> None:
    window = AimdWindow(**params)
    floor, ceiling = params["floor"], params["ceiling"]
    for signal in signals:
        before = window.statistics().exact_window
        if signal is None:
            assert window.on_congestion() == window.window
            assert window.statistics().exact_window <= before
        else:
            assert window.on_success(signal) == window.window
            assert window.statistics().exact_window >= before
        assert floor <= window.window <= ceiling
        assert floor <= window.statistics().exact_window <= ceiling


@PROPERTY
@given(params=_params(), first=st.integers(0, 1000), second=st.integers(0, 1000))
def test_growth_does_not_depend_on_batching(
    params: dict[str, Any], first: int, second: int
) -> None:
    window = AimdWindow(**params)
    twin = AimdWindow(**params)
    window.on_success(first)
    window.on_success(second)
    twin.on_success(first + second)
    assert window.statistics().exact_window == pytest.approx(
        twin.statistics().exact_window, rel=1e-9
    )


@PROPERTY
@given(params=_params())
def test_congestion_multiplies_by_decrease(params: dict[str, Any]) -> None:
    window = AimdWindow(**params)
    before = window.statistics().exact_window
    window.on_congestion()
    expected = max(before * params["decrease"], params["floor"])
    assert window.statistics().exact_window == pytest.approx(expected)
