"""Tests for icefloe.core.checks: the shared argument checks."""

from __future__ import annotations

import math
import re

import pytest

from icefloe.core.checks import (
    check_finite_non_negative,
    check_fraction,
    check_int,
    check_number,
    check_positive,
)


@pytest.mark.parametrize(("value", "minimum"), [(0, 0), (1, 1), (5, 1), (-3, -3)])
def test_check_int_returns_accepted_ints(value: int, minimum: int) -> None:
    assert check_int("n", value, minimum) == value


@pytest.mark.parametrize("value", [0, -1, True, False, 1.0, "1", None])
def test_check_int_refuses_small_bool_and_non_int(value: object) -> None:
    expected = f"n must be an int >= 1, got {value!r}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        check_int("n", value, 1)


@pytest.mark.parametrize("value", [1e-300, 0.5, 1, 2**70])
def test_check_positive_returns_a_float(value: float) -> None:
    result = check_positive("rate", value)
    assert type(result) is float
    assert result == float(value)


@pytest.mark.parametrize("value", [0, 0.0, -1, math.inf, -math.inf, math.nan, True, "1", None])
def test_check_positive_refuses(value: object) -> None:
    expected = f"rate must be a finite number > 0, got {value!r}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        check_positive("rate", value)


@pytest.mark.parametrize("value", [0, 0.0, 2.5])
def test_check_finite_non_negative_accepts_zero(value: float) -> None:
    assert check_finite_non_negative("linger_s", value) == value


@pytest.mark.parametrize("value", [-0.1, math.inf, math.nan, False, "0"])
def test_check_finite_non_negative_refuses(value: object) -> None:
    expected = f"linger_s must be a finite number >= 0, got {value!r}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        check_finite_non_negative("linger_s", value)


def test_check_number_bound_and_strictness_show_in_the_message() -> None:
    assert check_number("factor", 1, 1) == 1.0
    with pytest.raises(ValueError, match=re.escape("factor must be a finite number >= 1, got 0.5")):
        check_number("factor", 0.5, 1)
    with pytest.raises(ValueError, match=re.escape("timeout_s must be a finite number > 0, got 0")):
        check_number("timeout_s", 0, 0, strict=True)


@pytest.mark.parametrize("value", [0.0, 0.25, 1.0])
def test_check_fraction_accepts_the_closed_unit_interval(value: float) -> None:
    assert check_fraction("q", value) == value


@pytest.mark.parametrize("value", [-0.01, 1.01, math.nan, math.inf])
def test_check_fraction_refuses_outside_it(value: float) -> None:
    with pytest.raises(ValueError, match=re.escape(f"q must be between 0 and 1, got {value!r}")):
        check_fraction("q", value)
