"""Tests for icefloe.core.congestion: CongestionMonitor, CongestionPolicy, shed."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from icefloe.core.congestion import (
    CongestionMonitor,
    CongestionPolicy,
    CongestionState,
    CongestionStatistics,
    Thresholds,
    shed,
    shed_order,
)

PROPERTY = settings(max_examples=100, deadline=None)

NORMAL = CongestionState.NORMAL
CONGESTED = CongestionState.CONGESTED
OVERLOADED = CongestionState.OVERLOADED

# No smoothing, no dwell: the state follows each sample.
RAW = CongestionPolicy(alpha=1.0, dwell_s=0.0)


# -- policy --------------------------------------------------------------------------


def test_default_policy() -> None:
    policy = CongestionPolicy()
    assert policy.queue_congested == Thresholds(0.75, 0.5)
    assert policy.queue_overloaded == Thresholds(0.95, 0.8)
    assert policy.lag_congested_s == Thresholds(0.05, 0.02)
    assert policy.lag_overloaded_s == Thresholds(0.5, 0.25)
    assert policy.credit_overloaded is None
    assert (policy.alpha, policy.dwell_s) == (0.5, 2.0)


def test_plain_tuples_become_thresholds() -> None:
    policy = CongestionPolicy(queue_congested=(0.6, 0.3))  # type: ignore[arg-type]
    assert policy.queue_congested == Thresholds(0.6, 0.3)
    assert isinstance(policy.queue_congested, Thresholds)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"queue_congested": (0.5, 0.5)}, "enter > exit"),
        ({"queue_congested": (0.4, 0.6)}, "enter > exit"),
        ({"queue_congested": (0.5, -0.1)}, "enter > exit >= 0"),
        ({"queue_overloaded": (1.5, 0.9)}, "enter must be <= 1"),
        ({"credit_congested": (1.01, 0.2)}, "enter must be <= 1"),
        ({"lag_congested_s": (math.inf, 0.1)}, "finite"),
        ({"lag_congested_s": (0.1, math.nan)}, "finite"),
        ({"queue_congested": (0.5,)}, "pair"),
        ({"queue_congested": 0.5}, "pair"),
        ({"queue_congested": (True, 0)}, "finite numbers"),
        ({"queue_overloaded": (0.7, 0.6)}, "must not be below queue_congested"),
        ({"lag_overloaded_s": (0.3, 0.01)}, "must not be below lag_congested_s"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": math.nan}, "alpha"),
        ({"dwell_s": -1.0}, "dwell_s"),
        ({"dwell_s": math.inf}, "dwell_s"),
    ],
)
def test_policy_rejects_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CongestionPolicy(**kwargs)


def test_a_disabled_level_accepts_any_pair_of_the_other() -> None:
    policy = CongestionPolicy(queue_congested=None, queue_overloaded=Thresholds(0.3, 0.1))
    monitor = CongestionMonitor(policy)
    assert monitor.observe(0.0, queue_fill=0.5) is NORMAL  # smoothed 0.25
    assert monitor.observe(0.1, queue_fill=0.5) is OVERLOADED  # 0.375: no congested step


def test_state_levels_order_the_states() -> None:
    assert [s.level for s in CongestionState] == [0, 1, 2]
    assert str(OVERLOADED) == "overloaded"


# -- monitor, by example ---------------------------------------------------------------


def test_starts_normal() -> None:
    monitor = CongestionMonitor()
    assert monitor.state is NORMAL
    assert monitor.last_transition_at is None
    assert monitor.statistics() == CongestionStatistics(
        state=NORMAL,
        transitions=0,
        last_transition_at=None,
        samples=0,
        queue_fill=0.0,
        credit_starved=0.0,
        loop_lag_s=0.0,
        seconds_congested=0.0,
        seconds_overloaded=0.0,
    )
    assert "normal" in repr(monitor)


@pytest.mark.parametrize(
    ("sample", "state"),
    [
        ({"queue_fill": 0.74}, NORMAL),
        ({"queue_fill": 0.75}, CONGESTED),
        ({"queue_fill": 0.95}, OVERLOADED),
        ({"credit_starved": 0.5}, CONGESTED),
        ({"credit_starved": 1.0}, CONGESTED),
        ({"loop_lag_s": 0.049}, NORMAL),
        ({"loop_lag_s": 0.05}, CONGESTED),
        ({"loop_lag_s": 0.49}, CONGESTED),
        ({"loop_lag_s": 0.5}, OVERLOADED),
        ({"queue_fill": 0.1, "loop_lag_s": 0.6}, OVERLOADED),
    ],
)
def test_enter_thresholds(sample: dict[str, float], state: CongestionState) -> None:
    assert CongestionMonitor(RAW).observe(0.0, **sample) is state


def test_hysteresis_holds_between_exit_and_enter() -> None:
    monitor = CongestionMonitor(RAW)
    assert monitor.observe(0.0, queue_fill=0.8) is CONGESTED
    assert monitor.observe(1.0, queue_fill=0.6) is CONGESTED  # below enter, above exit
    assert monitor.observe(2.0, queue_fill=0.5) is CONGESTED  # exit is inclusive
    assert monitor.observe(3.0, queue_fill=0.49) is NORMAL
    assert monitor.observe(4.0, queue_fill=0.6) is NORMAL  # band does not re-enter
    stats = monitor.statistics()
    assert stats.transitions == 2
    assert stats.last_transition_at == 3.0
    assert stats.seconds_congested == 3.0


def test_dwell_delays_stepping_down() -> None:
    monitor = CongestionMonitor(CongestionPolicy(alpha=1.0, dwell_s=2.0))
    assert monitor.observe(10.0, loop_lag_s=0.6) is OVERLOADED
    assert monitor.observe(10.5, loop_lag_s=0.0) is OVERLOADED
    assert monitor.observe(11.9, loop_lag_s=0.0) is OVERLOADED
    # Two seconds after overloaded was last held, straight back to normal.
    assert monitor.observe(12.0, loop_lag_s=0.0) is NORMAL
    assert monitor.last_transition_at == 12.0


def test_pressure_inside_the_band_restarts_the_dwell() -> None:
    monitor = CongestionMonitor(CongestionPolicy(alpha=1.0, dwell_s=2.0))
    monitor.observe(0.0, queue_fill=0.8)
    monitor.observe(1.0, queue_fill=0.1)
    monitor.observe(1.5, queue_fill=0.6)  # held again: the calm period restarts
    assert monitor.observe(3.0, queue_fill=0.1) is CONGESTED
    assert monitor.observe(3.5, queue_fill=0.1) is NORMAL


def test_steps_down_one_level_when_the_lower_one_is_still_held() -> None:
    monitor = CongestionMonitor(CongestionPolicy(alpha=1.0, dwell_s=1.0))
    monitor.observe(0.0, queue_fill=0.99)
    assert monitor.observe(0.5, queue_fill=0.7) is OVERLOADED  # below overloaded exit
    assert monitor.observe(1.0, queue_fill=0.7) is CONGESTED
    assert monitor.observe(1.5, queue_fill=0.2) is CONGESTED
    assert monitor.observe(2.0, queue_fill=0.2) is NORMAL
    assert monitor.statistics().transitions == 3


def test_stepping_up_is_immediate_even_within_dwell() -> None:
    monitor = CongestionMonitor(CongestionPolicy(alpha=1.0, dwell_s=100.0))
    assert monitor.observe(0.0, queue_fill=0.8) is CONGESTED
    assert monitor.observe(0.01, queue_fill=0.99) is OVERLOADED


def test_smoothing_needs_sustained_pressure() -> None:
    monitor = CongestionMonitor(CongestionPolicy(alpha=0.5))
    assert monitor.observe(0.0, queue_fill=1.0) is NORMAL  # smoothed 0.5
    assert monitor.observe(0.1, queue_fill=1.0) is CONGESTED  # 0.75
    assert monitor.observe(0.2, queue_fill=1.0) is CONGESTED  # 0.875
    assert monitor.observe(0.3, queue_fill=1.0) is CONGESTED  # 0.9375
    assert monitor.observe(0.4, queue_fill=1.0) is OVERLOADED  # 0.96875
    assert monitor.statistics().queue_fill == pytest.approx(0.96875)


def test_clock_going_back_counts_as_standing_still() -> None:
    monitor = CongestionMonitor(CongestionPolicy(alpha=1.0, dwell_s=1.0))
    monitor.observe(5.0, queue_fill=0.99)
    monitor.observe(1.0, queue_fill=0.0)
    assert monitor.state is OVERLOADED
    assert monitor.statistics().seconds_overloaded == 0.0
    assert monitor.observe(6.0, queue_fill=0.0) is NORMAL


@pytest.mark.parametrize(
    "sample",
    [
        {"queue_fill": 1.1},
        {"queue_fill": -0.1},
        {"queue_fill": math.nan},
        {"credit_starved": 2.0},
        {"loop_lag_s": -0.001},
        {"loop_lag_s": math.inf},
        {"loop_lag_s": math.nan},
    ],
)
def test_rejects_bad_samples_without_changing_anything(sample: dict[str, float]) -> None:
    monitor = CongestionMonitor()
    with pytest.raises(ValueError, match="must be"):
        monitor.observe(0.0, **sample)
    assert monitor.statistics().samples == 0


def test_rejects_non_finite_now() -> None:
    with pytest.raises(ValueError, match="now"):
        CongestionMonitor().observe(math.nan)


# -- monitor, properties -------------------------------------------------------------


@st.composite
def _pair_chain(draw: st.DrawFn, top: float) -> tuple[Thresholds, Thresholds]:
    """A congested and an overloaded pair for one signal, with room between them."""
    c_exit, c_enter, o_exit, o_enter = sorted(
        draw(st.lists(st.floats(0.01, top), min_size=4, max_size=4, unique=True))
    )
    # The overloaded exit may also sit below the congested enter.
    if draw(st.booleans()):
        c_enter, o_exit = o_exit, c_enter
        c_exit, o_exit = min(c_exit, o_exit), max(c_exit, o_exit)
    return Thresholds(c_enter, c_exit), Thresholds(o_enter, o_exit)


@st.composite
def policies(draw: st.DrawFn) -> CongestionPolicy:
    queue = draw(_pair_chain(1.0))
    lag = draw(_pair_chain(1.0))
    credit = draw(st.one_of(st.none(), _pair_chain(1.0)))
    return CongestionPolicy(
        queue_congested=queue[0],
        queue_overloaded=queue[1],
        credit_congested=None if credit is None else credit[0],
        credit_overloaded=None if credit is None else credit[1],
        lag_congested_s=lag[0],
        lag_overloaded_s=lag[1],
        alpha=draw(st.floats(0.05, 1.0)),
        dwell_s=draw(st.floats(0.0, 5.0)),
    )


def _drive(
    monitor: CongestionMonitor, now: float, queue_fill: float, want: CongestionState
) -> float:
    """Feed ``queue_fill`` every 0.1 s until the state is ``want``; return the time."""
    for _ in range(5000):
        if monitor.observe(now, queue_fill=queue_fill) is want:
            return now
        now += 0.1
    raise AssertionError(f"never reached {want}")


_unit = st.floats(0.0, 1.0)


@PROPERTY
@given(
    policy=policies(),
    where=st.floats(0.0, 1.0),
    samples=st.lists(st.tuples(_unit, _unit, _unit, st.floats(0.0, 10.0)), max_size=60),
)
def test_no_flapping_inside_the_congested_band(
    policy: CongestionPolicy,
    where: float,
    samples: list[tuple[float, float, float, float]],
) -> None:
    assert policy.queue_congested is not None
    assert policy.queue_overloaded is not None
    assert policy.lag_overloaded_s is not None
    c_enter, c_exit = policy.queue_congested
    o_enter = policy.queue_overloaded.enter
    monitor = CongestionMonitor(policy)
    inside = c_enter + (o_enter - c_enter) * (0.5 + where / 4)
    # Thresholds a few ulps apart leave no float strictly between them (the
    # sum rounds up to o_enter): there is no band to stay inside then.
    assume(c_enter < inside < o_enter)
    now = _drive(monitor, 0.0, inside, CONGESTED)
    # Every raw signal stays inside the band: queue between the congested
    # exit and the overloaded enter, the others below their overloaded enter.
    # The smoothed values then stay inside it too, whatever the timing.
    below = 1 - 1e-9

    def under(pair: Thresholds | None, x: float) -> float:
        return x if pair is None else x * pair.enter * below

    for q, c, lag, dt in samples:
        now += dt
        state = monitor.observe(
            now,
            queue_fill=c_exit + (o_enter - c_exit) * q * below,
            credit_starved=under(policy.credit_overloaded, c),
            loop_lag_s=under(policy.lag_overloaded_s, lag),
        )
        assert state is CONGESTED
    assert monitor.statistics().transitions == 1


@PROPERTY
@given(
    policy=policies(),
    samples=st.lists(st.tuples(_unit, _unit, _unit, st.floats(0.0, 10.0)), max_size=60),
)
def test_no_flapping_below_the_congested_enter(
    policy: CongestionPolicy, samples: list[tuple[float, float, float, float]]
) -> None:
    monitor = CongestionMonitor(policy)
    below = 1 - 1e-9

    def under(pair: Thresholds | None, x: float) -> float:
        return x if pair is None else x * pair.enter * below

    now = 0.0
    for q, c, lag, dt in samples:
        now += dt
        state = monitor.observe(
            now,
            queue_fill=under(policy.queue_congested, q),
            credit_starved=under(policy.credit_congested, c),
            loop_lag_s=under(policy.lag_congested_s, lag),
        )
        assert state is NORMAL


@PROPERTY
@given(
    policy=policies(),
    samples=st.lists(st.tuples(_unit, _unit, _unit, st.floats(0.0, 3.0)), max_size=100),
)
def test_a_state_entered_by_stepping_up_lasts_at_least_the_dwell(
    policy: CongestionPolicy, samples: list[tuple[float, float, float, float]]
) -> None:
    monitor = CongestionMonitor(policy)
    # When each state was entered by stepping up (None: entered stepping down,
    # where the dwell counts from when its level was last held, not from entry).
    entered: dict[CongestionState, float | None] = {NORMAL: 0.0}
    now = 0.0
    for q, c, lag, dt in samples:
        now += dt
        before = monitor.state
        after = monitor.observe(now, queue_fill=q, credit_starved=c, loop_lag_s=lag)
        if after.level > before.level:
            entered[after] = now
        elif after.level < before.level:
            since = entered[before]
            if since is not None:
                # It leaves ``before`` (and anything between) only after the dwell.
                assert now - since >= policy.dwell_s
            entered[after] = None


_sample = st.tuples(_unit, _unit, st.floats(0.0, 2.0), st.floats(0.0, 1.0))
_raise = st.tuples(_unit, _unit, st.floats(0.0, 1.0))


@PROPERTY
@given(
    policy=policies(),
    samples=st.lists(st.tuples(_sample, _raise), max_size=80),
)
def test_higher_samples_never_give_a_lower_state(
    policy: CongestionPolicy,
    samples: list[tuple[tuple[float, float, float, float], tuple[float, float, float]]],
) -> None:
    low = CongestionMonitor(policy)
    high = CongestionMonitor(policy)
    now = 0.0
    for (q, c, lag, dt), (dq, dc, dlag) in samples:
        now += dt
        low_state = low.observe(now, queue_fill=q, credit_starved=c, loop_lag_s=lag)
        high_state = high.observe(
            now,
            queue_fill=min(1.0, q + dq),
            credit_starved=min(1.0, c + dc),
            loop_lag_s=lag + dlag,
        )
        assert high_state.level >= low_state.level


@PROPERTY
@given(
    policy=policies(),
    history=st.lists(_sample, max_size=40),
    interval=st.floats(0.01, 1.0),
)
def test_recovers_to_normal_once_pressure_stops(
    policy: CongestionPolicy,
    history: list[tuple[float, float, float, float]],
    interval: float,
) -> None:
    monitor = CongestionMonitor(policy)
    now = 0.0
    for q, c, lag, dt in history:
        now += dt
        monitor.observe(now, queue_fill=q, credit_starved=c, loop_lag_s=lag)
    stats = monitor.statistics()
    # Samples of zero shrink each smoothed signal by (1 - alpha); bound the
    # samples until every one is under its lowest exit threshold.
    decay = 1.0 if policy.alpha == 1.0 else math.log(1 - policy.alpha)
    needed = 1
    for value, pairs in (
        (stats.queue_fill, (policy.queue_congested, policy.queue_overloaded)),
        (stats.credit_starved, (policy.credit_congested, policy.credit_overloaded)),
        (stats.loop_lag_s, (policy.lag_congested_s, policy.lag_overloaded_s)),
    ):
        exits = [pair.exit for pair in pairs if pair is not None]
        if exits and value >= min(exits) and policy.alpha < 1.0:
            needed = max(needed, math.ceil(math.log(min(exits) / value) / decay) + 1)
    budget = needed + math.ceil(policy.dwell_s / interval) + 1
    for _ in range(budget):
        now += interval
        if monitor.observe(now) is NORMAL:
            break
    assert monitor.state is NORMAL
    # ... and stays there.
    assert monitor.observe(now + interval) is NORMAL


# -- shedding ------------------------------------------------------------------------

RELIABILITIES = ["at_most_once", "at_least_once", "exactly_once"]


@pytest.mark.parametrize(
    ("state", "priority", "reliability", "accepted", "expected"),
    [
        ("normal", -5, "at_most_once", False, False),
        ("normal", -5, "at_most_once", True, False),
        ("congested", 0, "at_most_once", False, True),
        ("congested", 1, "at_most_once", False, False),
        ("congested", 0, "at_least_once", False, False),
        ("congested", 0, "at_most_once", True, False),
        ("overloaded", 10, "exactly_once", False, True),
        ("overloaded", 0, "exactly_once", True, False),
        ("overloaded", -10, "exactly_once", True, False),
        ("overloaded", 0, "at_least_once", True, False),
        ("overloaded", 0, "at_most_once", True, True),
        ("overloaded", 1, "at_most_once", True, False),
    ],
)
def test_shed_table(
    state: str, priority: int, reliability: str, accepted: bool, expected: bool
) -> None:
    got = shed(state, priority=priority, reliability=reliability, accepted=accepted)
    assert got is expected


def test_shed_threshold_is_configurable() -> None:
    assert not shed(CONGESTED, priority=0, reliability="at_most_once", low_priority_below=0)
    assert shed(CONGESTED, priority=4, reliability="at_most_once", low_priority_below=5)


def test_shed_accepts_str_enums_of_reliability() -> None:
    import enum

    class Reliability(enum.StrEnum):
        AT_MOST_ONCE = "at_most_once"

    assert shed(OVERLOADED, priority=0, reliability=Reliability.AT_MOST_ONCE, accepted=True)


@pytest.mark.parametrize(
    ("state", "reliability", "message"),
    [("busy", "at_most_once", "busy"), ("normal", "best_effort", "reliability must be")],
)
def test_shed_rejects_unknown_values(state: str, reliability: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        shed(state, priority=0, reliability=reliability)


def test_shed_invariants_over_every_combination() -> None:
    priorities = range(-3, 4)
    for state, reliability, accepted, priority in itertools.product(
        CongestionState, RELIABILITIES, [False, True], priorities
    ):
        out = shed(state, priority=priority, reliability=reliability, accepted=accepted)
        if state is NORMAL or (accepted and reliability != "at_most_once"):
            assert not out
        if state is OVERLOADED and not accepted:
            assert out
        # More pressure never sheds less; more priority never sheds more.
        if state is CONGESTED:
            assert not out or shed(
                OVERLOADED, priority=priority, reliability=reliability, accepted=accepted
            )
        if out and state is not OVERLOADED:
            assert all(
                shed(state, priority=p, reliability=reliability, accepted=accepted)
                for p in priorities
                if p < priority
            )


def test_shed_order_puts_weakest_guarantee_and_lowest_priority_first() -> None:
    streams = [(p, r) for p in (2, -1, 0) for r in reversed(RELIABILITIES)]
    ordered = sorted(streams, key=lambda s: shed_order(priority=s[0], reliability=s[1]))
    assert ordered[:3] == [(-1, "at_most_once"), (0, "at_most_once"), (2, "at_most_once")]
    assert ordered[-1] == (2, "exactly_once")
    with pytest.raises(ValueError, match="reliability"):
        shed_order(priority=0, reliability="maybe")
