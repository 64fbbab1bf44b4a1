"""Each tenant's share of loop time for hub publishes (transport/publish_budget.py)."""

from __future__ import annotations

import pytest

from icefloe.core.wire_errors import ErrorCode
from icefloe.transport.errors import HttpError
from icefloe.transport.publish_budget import PublishBudget


class Clocks:
    """A monotonic clock for the buckets and a timer the publishes advance."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_tenant_over_its_share_is_refused_and_others_are_not() -> None:
    clock = Clocks()
    budget = PublishBudget(0.25, 0.05, clock=clock, timer=clock)
    errors: list[HttpError] = []
    for _ in range(20):  # each publish takes 10 ms of loop time
        try:
            with budget.metered("a"):
                clock.now += 0.010
        except HttpError as exc:
            errors.append(exc)
    refused = len(errors)
    assert {e.code for e in errors} == {ErrorCode.RATE_LIMITED}
    assert all("tenant 'a'" in e.message and e.headers["Retry-After"] == "1" for e in errors)
    # 20 publishes in 0.2 s: 50 ms of burst plus 0.25 * 0.2 s of refill, then debt.
    assert 5 <= refused <= 15
    with budget.metered("b"):  # another tenant's bucket is its own
        clock.now += 0.010
    clock.now += 1.0  # a second repays a quarter second of debt
    with budget.metered("a"):
        pass
    assert budget.statistics().refused == refused


def test_waiting_is_not_loop_time_and_no_tenant_is_not_metered() -> None:
    clock = Clocks()
    budget = PublishBudget(0.25, 0.05, clock=clock, timer=clock)
    with budget.metered("a"):
        clock.now += 30.0  # a publish that waited for a block subscriber
    assert budget.statistics().charged_s == pytest.approx(0.05)
    with budget.metered(None):  # authentication off: no tenants
        clock.now += 1.0
    assert budget.statistics().tenants == 1
    off = PublishBudget(None, clock=clock, timer=clock)
    for _ in range(5):
        with off.metered("a"):
            clock.now += 1.0
    assert off.statistics().refused == 0


def test_memory_is_bounded_by_max_tenants() -> None:
    clock = Clocks()
    budget = PublishBudget(0.25, 0.05, max_tenants=3, clock=clock, timer=clock)
    for i in range(10):
        budget.charge(f"t{i}", 0.01)
    assert budget.statistics().tenants == 3


@pytest.mark.parametrize("share", [0, -1.0, float("nan")])
def test_a_bad_share_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="share"):
        PublishBudget(share)
