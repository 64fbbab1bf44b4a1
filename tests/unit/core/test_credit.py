"""Tests for icefloe.core.credit: CreditWindow."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.core.credit import CreditWindow
from icefloe.exceptions import CreditOverrun

PROPERTY = settings(max_examples=200, deadline=None)


def test_starts_with_initial_credit() -> None:
    window = CreditWindow(initial=3)
    assert window.available == 3
    assert window.granted_total == 3
    assert window.consumed_total == 0


def test_defaults_to_no_credit() -> None:
    window = CreditWindow()
    assert window.available == 0
    assert not window.try_consume()


def test_grant_then_consume() -> None:
    window = CreditWindow()
    assert window.grant(2) == 2
    window.consume()
    window.consume()
    assert window.available == 0
    assert window.consumed_total == 2


def test_consume_more_than_available_raises_and_changes_nothing() -> None:
    window = CreditWindow(initial=2)
    with pytest.raises(CreditOverrun, match="cannot consume 3 credits: 2 available"):
        window.consume(3)
    assert window.statistics() == CreditWindow(initial=2).statistics()


def test_overrun_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="cannot consume"):
        CreditWindow().consume()


def test_try_consume() -> None:
    window = CreditWindow(initial=1)
    assert window.try_consume()
    assert not window.try_consume()
    assert window.available == 0


def test_consume_zero_is_allowed() -> None:
    window = CreditWindow()
    window.consume(0)
    assert window.try_consume(0)


def test_ceiling_caps_grants() -> None:
    window = CreditWindow(initial=8, ceiling=10)
    assert window.grant(5) == 2
    assert window.available == 10
    stats = window.statistics()
    assert stats.granted_total == 10
    assert stats.clipped_total == 3
    assert stats.ceiling == 10


@pytest.mark.parametrize("n", [-1, 1.5, True, "1", None])
def test_grant_rejects_non_counts(n: Any) -> None:
    window = CreditWindow()
    with pytest.raises(ValueError, match="must be an int >= 0"):
        window.grant(n)
    assert window.available == 0


def test_consume_rejects_negative() -> None:
    window = CreditWindow(initial=1)
    with pytest.raises(ValueError, match="n must be >= 0"):
        window.consume(-1)
    with pytest.raises(ValueError, match="n must be >= 0"):
        window.try_consume(-1)
    assert window.available == 1


@pytest.mark.parametrize(
    ("initial", "ceiling", "message"),
    [
        (-1, None, "initial"),
        (0, 0, "ceiling must be >= 1"),
        (5, 4, "must not exceed ceiling"),
        (0, -3, "ceiling"),
    ],
)
def test_rejects_invalid_limits(initial: int, ceiling: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CreditWindow(initial=initial, ceiling=ceiling)


_op = st.one_of(
    st.tuples(st.just("grant"), st.integers(0, 50)),
    st.tuples(st.just("consume"), st.integers(0, 30)),
    st.tuples(st.just("try_consume"), st.integers(0, 30)),
)


@PROPERTY
@given(
    initial=st.integers(0, 40),
    ceiling=st.one_of(st.none(), st.integers(40, 100)),
    ops=st.lists(_op, max_size=100),
)
def test_credit_accounting_invariants(
    initial: int, ceiling: int | None, ops: list[tuple[str, int]]
) -> None:
    window = CreditWindow(initial=initial, ceiling=ceiling)
    requested = initial
    model = initial
    for op, n in ops:
        before = window.statistics()
        if op == "grant":
            requested += n
            added = window.grant(n)
            model = model + n if ceiling is None else min(model + n, ceiling)
            assert added == model - before.available
        elif op == "consume":
            if n > model:
                with pytest.raises(CreditOverrun):
                    window.consume(n)
                assert window.statistics() == before
            else:
                window.consume(n)
                model -= n
        else:
            assert window.try_consume(n) == (n <= model)
            if n <= model:
                model -= n
            else:
                assert window.statistics() == before
        stats = window.statistics()
        assert stats.available == model >= 0
        assert stats.available == stats.granted_total - stats.consumed_total
        assert stats.granted_total + stats.clipped_total == requested
        if ceiling is not None:
            assert stats.available <= ceiling
