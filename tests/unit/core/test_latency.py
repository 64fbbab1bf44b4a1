"""Tests for icefloe.core.latency: LatencyBudget."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.core.latency import RESOLUTION_S, LatencyBudget, LatencyBudgetStatistics

PROPERTY = settings(max_examples=200, deadline=None)


def exact_quantile(values: list[float], q: float) -> float:
    """Nearest-rank sample quantile."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def test_empty() -> None:
    budget = LatencyBudget(100)
    assert budget.quantile(0.5) is None
    assert budget.statistics() == LatencyBudgetStatistics(
        budget_ms=100.0,
        observations=0,
        violations=0,
        violation_ratio=0.0,
        p50_s=None,
        p99_s=None,
        min_s=None,
        max_s=None,
        mean_s=None,
        last_s=None,
    )


def test_counts_violations_strictly_over_budget() -> None:
    budget = LatencyBudget(50)
    assert budget.record(0.010) is False
    assert budget.record(0.050) is False  # exactly on budget is within it
    assert budget.record(0.051) is True
    assert budget.record(2.0) is True
    assert (budget.observations, budget.violations) == (4, 2)
    stats = budget.statistics()
    assert stats.violation_ratio == 0.5
    assert stats.min_s == 0.010
    assert stats.max_s == 2.0
    assert stats.last_s == 2.0
    assert stats.mean_s == pytest.approx((0.010 + 0.050 + 0.051 + 2.0) / 4)
    assert "violations=2" in repr(budget)


def test_quantiles_of_a_known_distribution() -> None:
    budget = LatencyBudget(20)
    for ms in range(1, 101):  # 1 ms .. 100 ms
        budget.record(ms / 1000)
    stats = budget.statistics()
    assert stats.p50_s == pytest.approx(0.050, rel=0.045)
    assert stats.p99_s == pytest.approx(0.099, rel=0.045)
    assert stats.violations == 80
    assert budget.quantile(0.0) == 0.001
    assert budget.quantile(1.0) == 0.100


def test_single_value_is_reported_exactly() -> None:
    # Clamping to the observed min and max makes a constant stream exact.
    budget = LatencyBudget(1)
    for _ in range(10):
        budget.record(0.0123)
    assert budget.quantile(0.5) == 0.0123
    assert budget.quantile(0.99) == 0.0123


def test_sub_resolution_latencies() -> None:
    budget = LatencyBudget(1)
    budget.record(0.0)
    budget.record(RESOLUTION_S / 4)
    budget.record(0.5)
    p50 = budget.quantile(0.5)
    assert p50 is not None
    assert abs(p50 - RESOLUTION_S / 4) < RESOLUTION_S


def test_memory_holds_only_the_buckets_hit() -> None:
    budget = LatencyBudget(10)
    rng = random.Random(1)
    for _ in range(10_000):
        budget.record(rng.uniform(0.001, 0.1))  # about 6.6 octaves
    assert 8 < budget.buckets <= 7 * 8 + 1


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan, True, "5"])
def test_rejects_bad_budgets(bad: object) -> None:
    with pytest.raises(ValueError, match="budget_ms"):
        LatencyBudget(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, 65, 2.0, True])
def test_rejects_bad_resolution(bad: object) -> None:
    with pytest.raises(ValueError, match="buckets_per_octave"):
        LatencyBudget(10, buckets_per_octave=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-0.001, math.inf, math.nan])
def test_rejects_bad_latencies_and_records_nothing(bad: float) -> None:
    budget = LatencyBudget(10)
    with pytest.raises(ValueError, match="latency_s"):
        budget.record(bad)
    assert budget.observations == 0


@pytest.mark.parametrize("bad", [-0.1, 1.1, math.nan])
def test_rejects_bad_quantiles(bad: float) -> None:
    budget = LatencyBudget(10)
    budget.record(0.001)
    with pytest.raises(ValueError, match="q must be"):
        budget.quantile(bad)


_latencies = st.lists(
    st.one_of(st.floats(0.0, 1e-5), st.floats(1e-6, 10.0), st.floats(1e-3, 1e4)),
    min_size=1,
    max_size=300,
)


@PROPERTY
@given(
    values=_latencies,
    q=st.floats(0.0, 1.0),
    per_octave=st.sampled_from([1, 4, 8, 32]),
)
def test_quantile_error_is_within_the_documented_bound(
    values: list[float], q: float, per_octave: int
) -> None:
    budget = LatencyBudget(10, buckets_per_octave=per_octave)
    for value in values:
        budget.record(value)
    got = budget.quantile(q)
    want = exact_quantile(values, q) if q > 0 else min(values)
    assert got is not None
    assert min(values) <= got <= max(values)
    if want >= RESOLUTION_S:
        factor = 2.0 ** (1 / (2 * per_octave)) * (1 + 1e-9)
        assert want / factor <= got <= want * factor
    else:
        assert abs(got - want) < RESOLUTION_S


@PROPERTY
@given(values=_latencies, budget_ms=st.floats(0.001, 1e6))
def test_counts_are_exact(values: list[float], budget_ms: float) -> None:
    budget = LatencyBudget(budget_ms)
    flagged = sum(budget.record(value) for value in values)
    stats = budget.statistics()
    assert stats.observations == len(values)
    assert stats.violations == flagged == sum(v > budget_ms / 1000 for v in values)
    assert stats.min_s == min(values)
    assert stats.max_s == max(values)
    assert stats.last_s == values[-1]
    assert stats.p50_s is not None
    assert stats.p99_s is not None
    assert stats.p50_s <= stats.p99_s
