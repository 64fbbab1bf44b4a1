"""The hub's subscriber limits per tenant and its filter-cost budget (issue 15, item 2).

One tenant filled every subscriber slot of the hub, and its costly filters
made each of its publishes hold the event loop for 362-513 ms.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from hubkit import drain

from icefloe.core.filters import Filter, compile_filter, parse
from icefloe.exceptions import ErrorCode, StreamError
from icefloe.hub import Hub, HubLimits, HubSubscription

#: the attack's path, 8 names deep
PATH = "data." + ".".join(["a"] * 8)
#: an event none of the attack's filters selects, so none stops early
MISS: dict[str, Any] = {"a": {"a": {"a": {"a": {"a": {"a": {"a": {"a": "miss"}}}}}}}}
#: generous: the defaults bound one publish's matching work to about 2 ms
#: (bench/filter_cost.py); the unbounded hub took over 100 ms for this test's
#: subscribers on the same machine
PUBLISH_BOUND_S = 0.025


def attack_filter(k: int) -> str:
    """The issue's filter: 34 comparisons on PATH, 1,006 characters; distinct per ``k``."""
    return " or ".join([f"{PATH} == {i}" for i in range(33)] + [f"{PATH} == {-1 - k}"])


def test_the_attack_filter_is_the_issues() -> None:
    source = attack_filter(0)
    assert len(source) == 1006
    assert compile_filter(source).cost == 442


def test_default_limits_leave_room_for_other_tenants() -> None:
    limits = HubLimits()
    assert limits.max_subscribers is not None
    assert limits.max_subscribers_per_tenant is not None
    assert limits.max_subscribers_per_tenant < limits.max_subscribers
    assert limits.max_filter_cost_per_tenant is not None


@pytest.mark.parametrize(("per_tenant", "total"), [(10, 10), (11, 10)])
def test_a_tenant_cap_must_be_below_the_hubs(per_tenant: int, total: int) -> None:
    with pytest.raises(ValueError, match="must be below max_subscribers"):
        HubLimits(max_subscribers=total, max_subscribers_per_tenant=per_tenant)
    HubLimits(max_subscribers=total, max_subscribers_per_tenant=None)  # opted out


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_the_filter_budget_is_checked(bad: object) -> None:
    with pytest.raises(ValueError, match="max_filter_cost_per_tenant must be an int >= 1"):
        HubLimits(max_filter_cost_per_tenant=bad)  # type: ignore[arg-type]


async def test_one_tenant_at_its_cap_leaves_slots_to_the_others(hub: Hub) -> None:
    cap = hub.limits.max_subscribers_per_tenant
    assert cap is not None
    held = [hub.subscribe(">", tenant="a") for _ in range(cap)]
    with pytest.raises(StreamError) as info:
        hub.subscribe(">", tenant="a")
    assert info.value.code is ErrorCode.LIMIT_EXCEEDED
    assert info.value.message.startswith(f"tenant 'a' has its limit of {cap} subscribers")
    # The hub's total is nobody's business.
    assert str(hub.limits.max_subscribers) not in info.value.message
    other = hub.subscribe(">", tenant="b")
    await hub.publish("x", 1, tenant="b")
    assert [e.data for e in drain(other)] == [1]
    held.pop().close()
    held.append(hub.subscribe(">", tenant="a"))  # a closed one frees its slot
    assert hub.statistics().subscribers == cap + 1


async def test_a_full_hub_refuses_without_figures() -> None:
    async with Hub(HubLimits(max_subscribers=3, max_subscribers_per_tenant=2)) as hub:
        held = [hub.subscribe(">", tenant=t) for t in "aabb"[:3]]
        with pytest.raises(StreamError) as info:
            hub.subscribe(">", tenant="c")
        assert info.value.code is ErrorCode.OVERLOADED
        assert not re.search(r"\d", info.value.message)
        held[0].close()
        hub.subscribe(">", tenant="c").close()


async def test_distinct_costly_filters_stop_at_the_tenants_budget(hub: Hub) -> None:
    budget = hub.limits.max_filter_cost_per_tenant
    assert budget is not None
    held: list[HubSubscription] = []
    k = 0
    while True:
        try:
            held.append(hub.subscribe(">", tenant="a", filter=attack_filter(k)))
        except StreamError as exc:
            refusal = exc
            break
        k += 1
    assert len(held) == budget // 442
    assert refusal.code is ErrorCode.LIMIT_EXCEEDED
    assert f"costs 442 units and tenant 'a''s filters already cost {442 * len(held)}" in str(
        refusal
    )
    assert f"budget of {budget}" in str(refusal)
    # The same filter again is shared, so it costs the tenant nothing more.
    held.append(hub.subscribe(">", tenant="a", filter=attack_filter(0)))
    # Another tenant has its own budget.
    held.append(hub.subscribe(">", tenant="b", filter=attack_filter(k)))
    # Closing gives the cost back.
    held[1].close()
    held.append(hub.subscribe(">", tenant="a", filter=attack_filter(k)))


class CountingFilter(Filter):
    """A compiled filter that counts its evaluations."""

    __slots__ = ("_counted", "calls")

    def __init__(self, source: str) -> None:
        super().__init__(source, parse(source))
        self.calls = 0
        inner = super().predicate

        def counted(event: Any) -> bool:
            self.calls += 1
            return inner(event)

        self._counted = counted

    @property
    def predicate(self) -> Any:
        return self._counted


async def test_identical_filters_are_evaluated_once_per_event(hub: Hub) -> None:
    source = "data.n >= 2"
    # A hundred subscribers with the same filter, each compiled on its own.
    filters = [CountingFilter(source) for _ in range(100)]
    subs = [hub.subscribe("t.*", tenant="a", filter=flt) for flt in filters]
    other = CountingFilter(source)  # another tenant's is its own
    theirs = hub.subscribe("t.*", tenant="b", filter=other)
    for n in range(4):
        await hub.publish("t.x", {"n": n}, tenant="a")
    assert sum(flt.calls for flt in filters) == 4
    assert other.calls == 0
    for sub in subs:
        assert [e.data["n"] for e in drain(sub)] == [2, 3]
    assert drain(theirs) == []


async def test_shared_filters_keep_each_subscribers_target(hub: Hub) -> None:
    source = 'data.kind == "x"'
    subs = {sid: hub.subscribe("t", tenant="a", filter=source, subscriber_id=sid) for sid in "pqr"}
    plain = hub.subscribe("t", tenant="a", subscriber_id="s")
    await hub.publish("t", {"kind": "x"}, tenant="a", to={"p", "r", "s"})
    await hub.publish("t", {"kind": "y"}, tenant="a", to={"p", "q", "s"})
    got = {sid: [e.data["kind"] for e in drain(sub)] for sid, sub in subs.items()}
    assert got == {"p": ["x"], "q": [], "r": ["x"]}
    assert [e.data["kind"] for e in drain(plain)] == ["x", "y"]


@pytest.mark.perf
async def test_a_publish_to_many_costly_filters_takes_little_loop_time(hub: Hub) -> None:
    """The issue's attack, scaled: 4,000 distinct 34-comparison filters asked for."""
    held: list[HubSubscription] = []
    for k in range(4_000):
        try:
            held.append(hub.subscribe(">", tenant="a", filter=attack_filter(k)))
        except StreamError:
            continue
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        await hub.publish("t.x", MISS, tenant="a")
        best = min(best, time.perf_counter() - started)
    assert best < PUBLISH_BOUND_S, f"one publish took {best * 1000:.1f} ms of loop time"
