"""CircuitBreaker: closed, open, half-open, checked against a model."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icefloe.core.breaker import BreakerPolicy, BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(
    threshold: int = 3, reset: float = 10.0, probes: int = 1
) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(BreakerPolicy(threshold, reset, probes), clock), clock


def test_it_opens_after_threshold_failures_in_a_row() -> None:
    breaker, _ = _breaker(threshold=3)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure("boom")
    assert breaker.allow()
    breaker.record_success()  # resets the count
    for _ in range(3):
        assert breaker.state is BreakerState.CLOSED
        assert breaker.allow()
        breaker.record_failure("boom")
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    stats = breaker.statistics()
    assert (stats.opened, stats.rejected, stats.last_failure) == (1, 1, "boom")


def test_open_fails_fast_until_reset_then_one_probe_decides() -> None:
    breaker, clock = _breaker(threshold=1, reset=10.0)
    breaker.record_failure("down")
    assert breaker.retry_after() == 10.0
    clock.now += 9.5
    assert not breaker.allow()
    assert breaker.retry_after() == pytest.approx(0.5)
    clock.now += 0.5
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()  # one probe at a time
    breaker.record_failure("still down")
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after() == 10.0
    clock.now += 10.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()


def test_a_cancelled_probe_frees_its_slot() -> None:
    breaker, clock = _breaker(threshold=1, reset=1.0)
    breaker.record_failure()
    clock.now += 1.0
    assert breaker.allow()
    assert not breaker.allow()
    breaker.release()
    assert breaker.allow()


def test_late_outcomes_while_open_change_nothing() -> None:
    breaker, _ = _breaker(threshold=1)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.statistics().opened == 1


@pytest.mark.parametrize(
    ("policy", "match"),
    [
        (BreakerPolicy(failure_threshold=0), "failure_threshold"),
        (BreakerPolicy(reset_after_s=0.0), "reset_after_s"),
        (BreakerPolicy(reset_after_s=float("inf")), "reset_after_s"),
        (BreakerPolicy(probes=0), "probes"),
    ],
)
def test_a_bad_policy_is_refused_by_field(policy: BreakerPolicy, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CircuitBreaker(policy, Clock())


_OPS = st.lists(
    st.one_of(
        st.just(("allow", 0.0)),
        st.just(("success", 0.0)),
        st.just(("failure", 0.0)),
        st.just(("release", 0.0)),
        st.tuples(st.just("advance"), st.floats(0.0, 20.0)),
    ),
    max_size=80,
)


@given(threshold=st.integers(1, 5), probes=st.integers(1, 3), ops=_OPS)
def test_the_breaker_matches_a_model(
    threshold: int, probes: int, ops: list[tuple[str, float]]
) -> None:
    reset = 10.0
    breaker, clock = _breaker(threshold, reset, probes)
    state, failures, opened_at, in_flight, wins = "closed", 0, 0.0, 0, 0
    for op, arg in ops:
        if op == "advance":
            clock.now += arg
        if state == "open" and clock.now >= opened_at + reset:
            state, in_flight, wins = "half", 0, 0
        if op == "allow":
            expect = state == "closed" or (state == "half" and in_flight < probes)
            if state == "half" and expect:
                in_flight += 1
            assert breaker.allow() is expect
        elif op == "success":
            breaker.record_success()
            if state == "closed":
                failures = 0
            elif state == "half":
                in_flight, wins = max(0, in_flight - 1), wins + 1
                if wins >= probes:
                    state, failures = "closed", 0
        elif op == "failure":
            breaker.record_failure()
            if state in ("closed", "half"):
                failures += 1
                if state == "half" or failures >= threshold:
                    state, opened_at, in_flight, wins = "open", clock.now, 0, 0
        elif op == "release":
            breaker.release()
            if state == "half":
                in_flight = max(0, in_flight - 1)
        names = {
            "closed": BreakerState.CLOSED,
            "open": BreakerState.OPEN,
            "half": BreakerState.HALF_OPEN,
        }
        assert breaker.state is names[state]
        # invariants: fail fast exactly while open; retry_after is within the reset
        assert 0.0 <= breaker.retry_after() <= reset
        assert (breaker.retry_after() > 0) == (state == "open")
