"""The tenant layer of icefloe.transport.limits: many subjects, one tenant's limits."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.transport.limits import (
    TENANT_FACTOR,
    EdgeLimits,
    PrincipalLimiter,
    PrincipalLimits,
)


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: FakeClock | None = None, **limits: Any) -> PrincipalLimiter:
    return PrincipalLimiter(EdgeLimits(**limits), clock=clock or FakeClock())


def key(tenant: str, subject: str) -> str:
    return f"{tenant}\x00{subject}"


def test_the_tenant_defaults_are_a_multiple_of_the_principal_ones() -> None:
    limits = EdgeLimits()
    assert limits.tenant_requests_per_s == TENANT_FACTOR * 1000.0
    assert limits.tenant_request_burst == TENANT_FACTOR * 2000
    assert limits.tenant_max_connections == TENANT_FACTOR * 4096
    assert limits.has_tenant_layer
    off = EdgeLimits(tenant_requests_per_s=None, tenant_max_connections=None)
    assert not off.has_tenant_layer


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tenant_requests_per_s": 0},
        {"tenant_requests_per_s": float("nan")},
        {"tenant_request_burst": 0},
        {"tenant_max_connections": 0},
        {"tenant_max_connections": 1.5},
    ],
)
def test_bad_tenant_limits_name_their_field(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        EdgeLimits(**kwargs)


def test_many_subjects_of_one_tenant_share_the_tenant_rate() -> None:
    lim = limiter(
        requests_per_s=1.0, request_burst=2, tenant_requests_per_s=1.0, tenant_request_burst=5
    )
    allowed = [lim.check_request(key("acme", f"user{i}"), tenant="acme") is None for i in range(20)]
    # Each subject has a burst of 2, but the tenant has 5 in all.
    assert allowed.count(True) == 5
    # Another tenant is not affected.
    assert lim.check_request(key("globex", "user0"), tenant="globex") is None
    stats = lim.statistics()
    assert (stats.tenants, stats.tenant_requests_limited) == (2, 15)
    assert (stats.requests_allowed, stats.requests_limited) == (6, 15)


def test_a_tenant_refusal_gives_the_principal_its_token_back() -> None:
    lim = limiter(
        requests_per_s=1.0, request_burst=3, tenant_requests_per_s=1.0, tenant_request_burst=1
    )
    assert lim.check_request(key("acme", "a"), tenant="acme") is None
    # The tenant is empty: b's requests are refused but do not spend b's burst.
    for _ in range(5):
        assert lim.check_request(key("acme", "b"), tenant="acme") is not None
    other = limiter(requests_per_s=1.0, request_burst=3, tenant_requests_per_s=None)
    assert other.check_request(key("acme", "b"), tenant="acme") is None


def test_no_tenant_means_no_tenant_layer() -> None:
    # Client-address keys (auth off, failed credentials) have no tenant.
    lim = limiter(requests_per_s=None, tenant_requests_per_s=1.0, tenant_request_burst=1)
    assert all(lim.check_request(f"addr\x00{i}") is None for i in range(10))
    assert lim.statistics().tenants == 0


def test_many_subjects_of_one_tenant_share_the_tenant_connection_cap() -> None:
    lim = limiter(max_connections=2, tenant_max_connections=3)
    opened = []
    for i in range(5):
        k = key("acme", f"user{i}")
        assert lim.check_request(k, tenant="acme") is None
        opened.append(lim.open_connection(k) is None)
    assert opened == [True, True, True, False, False]
    stats = lim.statistics()
    assert (stats.open_connections, stats.tenant_connections_refused) == (3, 2)
    # A refused connection held nothing: a principal of another tenant opens.
    g = key("globex", "user0")
    lim.check_request(g, tenant="globex")
    assert lim.open_connection(g) is None
    # Closing one of acme's frees a tenant slot for any of its subjects.
    lim.close_connection(key("acme", "user0"))
    assert lim.open_connection(key("acme", "user4")) is None


def test_a_principal_s_own_limits_do_not_lift_its_tenant_s() -> None:
    lim = limiter(max_connections=1, tenant_max_connections=2)
    k = key("acme", "big")
    own = PrincipalLimits(max_connections=0)  # no principal cap
    assert lim.check_request(k, own, tenant="acme") is None
    assert [lim.open_connection(k) is None for _ in range(3)] == [True, True, False]


@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), max_size=120))
@settings(max_examples=200, deadline=None)
def test_tenant_connection_counts_stay_exact(ops: list[tuple[int, bool]]) -> None:
    lim = limiter(max_connections=3, tenant_max_connections=4, max_principals=4)
    held: dict[str, int] = {}
    for subject, opening in ops:
        k = key("acme", f"s{subject}")
        if opening:
            lim.check_request(k, tenant="acme")
            if lim.open_connection(k) is None:
                held[k] = held.get(k, 0) + 1
        elif held.get(k):
            lim.close_connection(k)
            held[k] -= 1
        total = sum(held.values())
        assert total <= 4
        assert lim.statistics().open_connections == total
    for k, n in held.items():
        for _ in range(n):
            lim.close_connection(k)
    # Every tenant slot came back: four new connections open again.
    lim2 = [key("acme", f"n{i}") for i in range(4)]
    for k in lim2:
        lim.check_request(k, tenant="acme")
    assert [lim.open_connection(k) is None for k in lim2] == [True] * 4


def test_the_tenant_connection_cap_holds_with_no_principal_rate() -> None:
    # No per-principal rate or cap: the tenant is still remembered and capped.
    lim = limiter(requests_per_s=None, max_connections=None, tenant_max_connections=2)
    results = []
    for i in range(3):
        k = key("acme", f"user{i}")
        assert lim.check_request(k, tenant="acme") is None
        results.append(lim.open_connection(k) is None)
    assert results == [True, True, False]
