"""Tests for icefloe.core.reliability: one ranking of the delivery guarantees."""

from __future__ import annotations

import enum

import pytest

from icefloe.core.congestion import shed_order
from icefloe.core.reliability import Reliability

AT_MOST, AT_LEAST, EXACTLY = (
    Reliability.AT_MOST_ONCE,
    Reliability.AT_LEAST_ONCE,
    Reliability.EXACTLY_ONCE,
)


def test_rank_orders_by_strength_not_by_string() -> None:
    assert [r.rank for r in (AT_MOST, AT_LEAST, EXACTLY)] == [0, 1, 2]
    # The string order differs, which is why rank exists.
    assert AT_LEAST < AT_MOST
    assert max([AT_LEAST, EXACTLY, AT_MOST], key=lambda r: r.rank) is EXACTLY


def test_values_are_the_wire_strings() -> None:
    assert [r.value for r in Reliability] == ["at_most_once", "at_least_once", "exactly_once"]
    assert AT_LEAST == "at_least_once"


@pytest.mark.parametrize("level", list(Reliability))
def test_parse_takes_members_and_their_strings(level: Reliability) -> None:
    assert Reliability.parse(level) is level
    assert Reliability.parse(level.value) is level


def test_parse_takes_another_str_enum_of_the_same_value() -> None:
    class Other(enum.StrEnum):
        X = "exactly_once"

    assert Reliability.parse(Other.X) is EXACTLY


@pytest.mark.parametrize("value", ["sometimes", "", "AT_MOST_ONCE", 1, None, b"at_most_once"])
def test_parse_refuses_anything_else_naming_the_values(value: object) -> None:
    with pytest.raises(ValueError, match="reliability must be one of 'at_most_once', "):
        Reliability.parse(value)


def test_the_runtime_the_root_and_the_core_share_one_class() -> None:
    import icefloe
    from icefloe.runtime.node import Reliability as FromNode

    assert FromNode is Reliability
    assert icefloe.Reliability is Reliability


def test_load_shedding_ranks_with_the_same_order() -> None:
    keys = [shed_order(priority=0, reliability=r) for r in Reliability]
    assert [k[0] for k in keys] == [r.rank for r in Reliability]
