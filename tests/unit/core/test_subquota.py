"""Tests for icefloe.core.subquota: per-tenant subscriber slots and filter-cost budget."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from icefloe.core.filters import Filter, compile_filter
from icefloe.core.subquota import SubscriberQuota, TenantQuota
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import InvalidState, StreamError

#: filters of several costs (5, 6, 12, 21, 45)
SOURCES = [
    "data.x == 1",
    "data.x.y == 1",
    "data.x == 1 or data.x == 2",
    'data.a.b.c == 1 and (data.d > 2 or not topic prefix "z")',
    " or ".join(f"data.a.b.c.d == {i}" for i in range(5)),
]
FILTERS = {source: compile_filter(source) for source in SOURCES}


def test_costs_of_the_sample_filters() -> None:
    assert [FILTERS[s].cost for s in SOURCES] == [5, 6, 12, 21, 45]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_limits_are_checked(bad: object) -> None:
    with pytest.raises(ValueError, match="max_subscribers must be an int >= 1 or None"):
        SubscriberQuota(bad, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_filter_cost must be an int >= 1 or None"):
        SubscriberQuota(None, bad)  # type: ignore[arg-type]


def test_the_subscriber_cap_names_the_tenants_own_limit() -> None:
    quota = SubscriberQuota(2, None)
    quota.admit("a", None)
    quota.admit("a", None)
    with pytest.raises(StreamError) as info:
        quota.admit("a", None)
    assert info.value.code is ErrorCode.LIMIT_EXCEEDED
    assert "tenant 'a' has its limit of 2 subscribers" in info.value.message
    quota.admit("b", None)  # another tenant is not counted against a
    quota.release("a", None)
    quota.admit("a", None)
    assert quota.usage("a") == TenantQuota(subscribers=2, cost=0, filters=0)


def test_identical_filters_are_shared_and_charged_once() -> None:
    quota = SubscriberQuota(None, 10)
    first = compile_filter("data.x == 1")
    again = compile_filter("data.x == 1")
    assert quota.admit("a", first) is first
    assert quota.admit("a", again) is first  # the shared copy
    assert quota.usage("a") == TenantQuota(subscribers=2, cost=5, filters=1)
    # A second distinct filter of cost 5 fits (10); a third does not.
    quota.admit("a", compile_filter("data.y == 1"))
    with pytest.raises(StreamError) as info:
        quota.admit("a", compile_filter("data.z == 1"))
    assert info.value.code is ErrorCode.LIMIT_EXCEEDED
    assert info.value.message.startswith(
        "this filter costs 5 units and tenant 'a''s filters already cost 10 of their budget of 10"
    )
    # Another tenant has its own budget, and its own copy of the same filter.
    other = compile_filter("data.x == 1")
    assert quota.admit("b", other) is other
    # The cost is given back when the filter's last user leaves.
    quota.release("a", "data.x == 1")
    assert quota.usage("a").cost == 10
    quota.release("a", "data.x == 1")
    assert quota.usage("a").cost == 5
    quota.admit("a", compile_filter("data.z == 1"))


def test_a_filter_over_the_whole_budget_is_refused_with_its_cost() -> None:
    quota = SubscriberQuota(None, 40)
    flt = FILTERS[SOURCES[-1]]
    with pytest.raises(StreamError, match=r"costs 45 units .* cost 0 of their budget of 40"):
        quota.admit("a", flt)
    assert len(quota) == 0  # nothing changed


def test_refusals_reveal_no_other_tenant() -> None:
    quota = SubscriberQuota(3, 20)
    for source in SOURCES[:2]:
        quota.admit("big", FILTERS[source])
    quota.admit("small", FILTERS[SOURCES[0]])
    with pytest.raises(StreamError) as info:
        quota.admit("small", FILTERS[SOURCES[3]])
    # Its own use (5) and limit (20) only; "big" holds 11 of its own.
    assert "big" not in info.value.message
    assert re.findall(r"\d+", info.value.message) == ["21", "5", "20"]


def test_release_of_what_was_never_admitted_is_a_bug() -> None:
    quota = SubscriberQuota(None, None)
    with pytest.raises(InvalidState):
        quota.release("a", None)
    quota.admit("a", None)
    with pytest.raises(InvalidState):
        quota.release("a", "data.x == 1")


class QuotaModel(RuleBasedStateMachine):
    """The quota against a plain model: a multiset of (tenant, source) subscribers."""

    MAX_SUBSCRIBERS = 4
    MAX_COST = 30

    def __init__(self) -> None:
        super().__init__()
        self.quota = SubscriberQuota(self.MAX_SUBSCRIBERS, self.MAX_COST)
        self.held: Counter[tuple[str, str | None]] = Counter()
        self.shared: dict[tuple[str, str], Filter] = {}

    def _tenant_cost(self, tenant: str) -> int:
        sources = {s for (t, s), n in self.held.items() if t == tenant and n and s is not None}
        return sum(FILTERS[s].cost for s in sources)

    def _tenant_count(self, tenant: str) -> int:
        return sum(n for (t, _), n in self.held.items() if t == tenant)

    @rule(tenant=st.sampled_from("ab"), source=st.none() | st.sampled_from(SOURCES))
    def admit(self, tenant: str, source: str | None) -> None:
        # A fresh compile each time, as the hub does: sharing is by source.
        flt = None if source is None else compile_filter(source)
        fits = self._tenant_count(tenant) < self.MAX_SUBSCRIBERS
        if source is not None and self.held[(tenant, source)] == 0:
            fits = fits and self._tenant_cost(tenant) + FILTERS[source].cost <= self.MAX_COST
        before = self.quota.usage(tenant)
        if not fits:
            with pytest.raises(StreamError) as info:
                self.quota.admit(tenant, flt)
            assert info.value.code is ErrorCode.LIMIT_EXCEEDED
            assert self.quota.usage(tenant) == before  # nothing changed
            return
        got = self.quota.admit(tenant, flt)
        if source is None:
            assert got is None
        else:
            key = (tenant, source)
            if self.held[key] == 0:
                assert got is flt
                self.shared[key] = flt  # type: ignore[assignment]
            else:
                assert got is self.shared[key]
        self.held[(tenant, source)] += 1

    @precondition(lambda self: any(self.held.values()))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        live = sorted((k for k, n in self.held.items() if n), key=repr)
        tenant, source = data.draw(st.sampled_from(live))
        self.quota.release(tenant, source)
        self.held[(tenant, source)] -= 1

    @invariant()
    def usage_matches_the_model(self) -> None:
        for tenant in "ab":
            usage = self.quota.usage(tenant)
            assert usage.subscribers == self._tenant_count(tenant) <= self.MAX_SUBSCRIBERS
            assert usage.cost == self._tenant_cost(tenant) <= self.MAX_COST
            distinct = {s for (t, s), n in self.held.items() if t == tenant and n and s}
            assert usage.filters == len(distinct)
        # A tenant with no subscriber is forgotten.
        assert len(self.quota) == len({t for (t, _), n in self.held.items() if n})


QuotaModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestQuotaModel = QuotaModel.TestCase
