"""TenantShares: runs in flight per tenant, and who is over their fair share."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.core.fairshare import TenantShares, over_fair_share
from icefloe.exceptions import InvalidState

TENANTS = st.sampled_from(["a", "b", "c", "d"])
#: (tenant, True: a run starts / False: one ends)
STEPS = st.lists(st.tuples(TENANTS, st.booleans()), max_size=200)


def _play(steps: list[tuple[str, bool]]) -> TenantShares:
    shares = TenantShares()
    for tenant, start in steps:
        if start:
            shares.add(tenant)
        elif shares.count(tenant):
            shares.remove(tenant)
    return shares


def test_a_burst_of_one_tenant_puts_it_over_and_leaves_the_others_under() -> None:
    shares = TenantShares()
    for _ in range(100):
        shares.add("a")
    assert shares.over_share("a")
    assert not shares.over_share("b")  # 0 * 2 < 100
    shares.add("b")
    assert (shares.total, shares.tenants, shares.count("b")) == (101, 2, 1)
    assert not shares.over_share("b")
    assert shares.over_share("a")


def test_nothing_in_flight_puts_everyone_at_their_share() -> None:
    # Nobody else causes the load: the flow's usual response applies to all.
    shares = TenantShares()
    assert shares.over_share("a")
    assert over_fair_share(0, 0, 1)


def test_equal_tenants_are_all_at_their_share() -> None:
    shares = TenantShares()
    for tenant in "abc":
        shares.add(tenant)
        shares.add(tenant)
    assert all(shares.over_share(t) for t in "abc")
    assert not shares.over_share("d")  # a newcomer is below: 0 * 4 < 6


def test_removing_a_run_not_in_flight_is_an_error() -> None:
    shares = TenantShares()
    shares.add("a")
    shares.remove("a")
    with pytest.raises(InvalidState, match="'a'"):
        shares.remove("a")
    assert (shares.total, shares.tenants, list(shares)) == (0, 0, [])


@given(STEPS)
@settings(max_examples=300, deadline=None)
def test_the_counts_add_up(steps: list[tuple[str, bool]]) -> None:
    shares = _play(steps)
    counts = dict(shares)
    assert all(n > 0 for n in counts.values())
    assert sum(counts.values()) == shares.total
    assert len(counts) == shares.tenants


@given(STEPS, TENANTS)
@settings(max_examples=300, deadline=None)
def test_a_tenant_with_nothing_in_flight_is_below_its_share_iff_anything_is(
    steps: list[tuple[str, bool]], tenant: str
) -> None:
    shares = _play(steps)
    if shares.count(tenant) == 0:
        assert shares.over_share(tenant) == (shares.total == 0)


@given(STEPS)
@settings(max_examples=300, deadline=None)
def test_the_busiest_tenant_is_always_at_or_over_its_share(steps: list[tuple[str, bool]]) -> None:
    shares = _play(steps)
    counts = dict(shares)
    if counts:
        busiest = max(counts, key=lambda t: counts[t])
        assert shares.over_share(busiest)


@given(STEPS, st.lists(TENANTS, max_size=200))
@settings(max_examples=300, deadline=None)
def test_admitting_only_tenants_below_their_share_never_grows_the_busiest(
    steps: list[tuple[str, bool]], asks: list[str]
) -> None:
    shares = _play(steps)
    most = max((n for _, n in shares), default=0)
    for tenant in asks:
        if not shares.over_share(tenant):
            shares.add(tenant)
        # A tenant can only catch up with the busiest, never pass it.
        assert max((n for _, n in shares), default=0) == most


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(1, 100), st.integers(0, 100))
def test_over_share_is_monotone_in_the_tenant_s_own_count(
    own: int, total: int, tenants: int, more: int
) -> None:
    if over_fair_share(own, total, tenants):
        assert over_fair_share(own + more, total, tenants)
