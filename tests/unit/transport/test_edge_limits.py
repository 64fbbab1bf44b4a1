"""Tests for icefloe.transport.limits: per-principal request rate and connection limits."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakeclock import FakeClock
from icefloe.exceptions import IcefloeError, InvalidState
from icefloe.transport.limits import (
    CONNECTION_RETRY_AFTER_S,
    EdgeLimits,
    PrincipalLimiter,
    PrincipalLimits,
    RateLimited,
    parse_principal_limits,
)

PROPERTY = settings(max_examples=200, deadline=None)


def limiter(clock: FakeClock | None = None, **limits: Any) -> PrincipalLimiter:
    return PrincipalLimiter(EdgeLimits(**limits), clock=clock or FakeClock())


# -- EdgeLimits ---------------------------------------------------------------------


def test_defaults() -> None:
    limits = EdgeLimits()
    # Sized for many clients behind one proxy address (docs/security.md).
    assert (limits.requests_per_s, limits.request_burst) == (1000.0, 2000)
    assert (limits.max_connections, limits.max_principals) == (4096, 100_000)
    assert PrincipalLimiter().limits == limits


@pytest.mark.parametrize(
    "kwargs",
    [
        {"requests_per_s": 0},
        {"requests_per_s": -1.0},
        {"requests_per_s": float("inf")},
        {"requests_per_s": float("nan")},
        {"requests_per_s": True},
        {"requests_per_s": "5"},
        {"request_burst": 0},
        {"request_burst": 1.5},
        {"request_burst": True},
        {"max_connections": 0},
        {"max_connections": 2.0},
        {"max_principals": 0},
        {"max_principals": None},
    ],
)
def test_invalid_limits_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        EdgeLimits(**kwargs)


def test_none_turns_limits_off() -> None:
    limits = EdgeLimits(requests_per_s=None, max_connections=None)
    assert limits.requests_per_s is None
    assert limits.max_connections is None


# -- request rate -------------------------------------------------------------------


def test_burst_then_429_with_retry_after() -> None:
    limits = limiter(requests_per_s=2.0, request_burst=3)
    assert [limits.check_request("alice") for _ in range(3)] == [None, None, None]
    # Half a second until the next token; Retry-After rounds up to one.
    assert limits.check_request("alice") == 1.0


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    limits = limiter(requests_per_s=0.4, request_burst=1)
    assert limits.check_request("alice") is None
    retry = limits.check_request("alice")
    assert retry == 3.0  # 2.5 s until one token
    assert retry is not None
    assert retry.is_integer()


def test_bucket_refills_over_the_clock() -> None:
    clock = FakeClock()
    limits = limiter(clock, requests_per_s=2.0, request_burst=2)
    assert limits.check_request("alice") is None
    assert limits.check_request("alice") is None
    assert limits.check_request("alice") is not None
    clock.advance(0.5)
    assert limits.check_request("alice") is None
    assert limits.check_request("alice") is not None
    clock.advance(10)
    assert [limits.check_request("alice") for _ in range(3)] == [None, None, 1.0]


def test_principals_have_separate_buckets() -> None:
    limits = limiter(requests_per_s=1.0, request_burst=1)
    assert limits.check_request("alice") is None
    assert limits.check_request("alice") is not None
    assert limits.check_request("bob") is None


def test_no_rate_limit_tracks_nothing() -> None:
    limits = limiter(requests_per_s=None)
    assert all(limits.check_request(f"p{i}") is None for i in range(1000))
    stats = limits.statistics()
    assert (stats.principals, stats.requests_allowed, stats.requests_limited) == (0, 1000, 0)


# -- connections ----------------------------------------------------------------------


def test_connection_cap() -> None:
    limits = limiter(max_connections=2)
    assert limits.open_connection("alice") is None
    assert limits.open_connection("alice") is None
    assert limits.open_connection("alice") == float(CONNECTION_RETRY_AFTER_S)
    assert limits.open_connection("bob") is None
    limits.close_connection("alice")
    assert limits.open_connection("alice") is None
    stats = limits.statistics()
    assert (stats.open_connections, stats.connected_principals) == (3, 2)
    assert stats.connections_refused == 1


def test_close_without_open_is_invalid_state() -> None:
    limits = limiter(max_connections=2)
    with pytest.raises(InvalidState, match="alice"):
        limits.close_connection("alice")
    assert limits.open_connection("alice") is None
    limits.close_connection("alice")
    with pytest.raises(InvalidState):
        limits.close_connection("alice")


def test_connection_context_manager() -> None:
    limits = limiter(max_connections=1)
    with limits.connection("alice"):
        assert limits.statistics().open_connections == 1
        with pytest.raises(RateLimited) as info, limits.connection("alice"):
            pass
        assert info.value.retry_after == CONNECTION_RETRY_AFTER_S
    assert limits.statistics().open_connections == 0


def test_connection_context_manager_releases_on_error() -> None:
    limits = limiter(max_connections=1)
    with pytest.raises(KeyError), limits.connection("alice"):
        raise KeyError("boom")
    assert limits.statistics().open_connections == 0
    assert limits.open_connection("alice") is None


def test_no_connection_limit_admits_all_and_counts_exactly() -> None:
    # Counted even without a cap, so a principal's own cap (or a close
    # without an open) is always judged against exact counts.
    limits = limiter(max_connections=None)
    assert all(limits.open_connection("alice") is None for _ in range(1000))
    limits.close_connection("alice")
    assert limits.statistics().open_connections == 999
    for _ in range(999):
        limits.close_connection("alice")
    with pytest.raises(InvalidState):
        limits.close_connection("alice")


def test_connections_share_the_principal_entry_with_requests() -> None:
    limits = limiter(requests_per_s=1.0, request_burst=1, max_connections=1)
    assert limits.check_request("alice") is None
    assert limits.open_connection("alice") is None
    # The bucket survives the move to and from the connected set.
    assert limits.check_request("alice") is not None
    limits.close_connection("alice")
    assert limits.check_request("alice") is not None
    assert limits.statistics().principals == 1


# -- memory bound -------------------------------------------------------------------


def test_least_recently_seen_principal_is_evicted() -> None:
    limits = limiter(requests_per_s=1.0, request_burst=1, max_principals=2)
    assert limits.check_request("alice") is None
    assert limits.check_request("bob") is None
    assert limits.check_request("alice") is not None  # alice is now the most recent
    assert limits.check_request("carol") is None  # evicts bob
    stats = limits.statistics()
    assert (stats.principals, stats.evicted) == (2, 1)
    assert limits.check_request("alice") is not None  # still remembered: still empty
    assert limits.check_request("bob") is None  # forgotten: a fresh burst


def test_connected_principals_are_never_evicted() -> None:
    limits = limiter(max_connections=1, max_principals=2)
    assert limits.open_connection("alice") is None
    assert limits.open_connection("bob") is None
    # Every tracked principal holds a connection: newcomers wait.
    assert limits.check_request("carol") == float(CONNECTION_RETRY_AFTER_S)
    assert limits.open_connection("carol") == float(CONNECTION_RETRY_AFTER_S)
    assert limits.open_connection("alice") == float(CONNECTION_RETRY_AFTER_S)
    limits.close_connection("alice")
    assert limits.open_connection("carol") is None  # alice, idle again, is evicted
    limits.close_connection("bob")
    limits.close_connection("carol")
    assert limits.statistics().principals == 2


OPS = st.lists(
    st.tuples(
        st.sampled_from(["request", "open", "close", "tick"]), st.integers(min_value=0, max_value=7)
    ),
    max_size=200,
)


@PROPERTY
@given(OPS, st.integers(min_value=1, max_value=4), st.integers(min_value=1, max_value=3))
def test_bounded_memory_and_exact_connection_counts(
    ops: list[tuple[str, int]], max_principals: int, max_connections: int
) -> None:
    clock = FakeClock()
    limits = limiter(
        clock,
        requests_per_s=1.0,
        request_burst=2,
        max_connections=max_connections,
        max_principals=max_principals,
    )
    held: dict[str, int] = {}
    for op, n in ops:
        key = f"p{n}"
        if op == "request":
            retry = limits.check_request(key)
            assert retry is None or (retry >= 1 and retry.is_integer())
        elif op == "open":
            if limits.open_connection(key) is None:
                held[key] = held.get(key, 0) + 1
            assert held.get(key, 0) <= max_connections
        elif op == "close" and held.get(key):
            limits.close_connection(key)
            held[key] -= 1
        elif op == "tick":
            clock.advance(n / 4)
        stats = limits.statistics()
        assert stats.principals <= max_principals
        assert stats.open_connections == sum(held.values())
        assert stats.connected_principals == sum(1 for count in held.values() if count)


# -- RateLimited ----------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "expected"), [(0, 1), (0.2, 1), (1, 1), (2.5, 3), (7, 7)])
def test_rate_limited_rounds_retry_after_up(seconds: float, expected: int) -> None:
    error = RateLimited(seconds)
    assert error.retry_after == expected
    assert isinstance(error.retry_after, int)
    assert isinstance(error, IcefloeError)
    assert str(expected) in str(error)


# -- a principal's own limits ----------------------------------------------------------


def test_principal_connection_cap_overrides_the_edge_one() -> None:
    limits = limiter(max_connections=2)
    own = PrincipalLimits(max_connections=3)
    assert [limits.open_connection("proxy", own) for _ in range(4)] == [None, None, None, 1.0]
    # Without limits of its own, another principal keeps the edge's cap.
    assert [limits.open_connection("bob") for _ in range(3)] == [None, None, 1.0]


def test_principal_limits_are_remembered_from_the_last_request() -> None:
    limits = limiter(max_connections=1)
    assert limits.check_request("proxy", PrincipalLimits(max_connections=2)) is None
    assert [limits.open_connection("proxy") for _ in range(3)] == [None, None, 1.0]
    # A request without limits of its own goes back to the edge's cap.
    assert limits.check_request("proxy") is None
    limits.close_connection("proxy")
    assert limits.open_connection("proxy") == 1.0


def test_zero_turns_a_limit_off_for_one_principal() -> None:
    limits = limiter(requests_per_s=1.0, request_burst=1, max_connections=1)
    off = PrincipalLimits(requests_per_s=0, max_connections=0)
    assert all(limits.check_request("proxy", off) is None for _ in range(100))
    assert all(limits.open_connection("proxy", off) is None for _ in range(100))
    assert limits.check_request("alice") is None
    assert limits.check_request("alice") is not None


def test_principal_rate_adds_a_limit_the_edge_lacks() -> None:
    clock = FakeClock()
    limits = limiter(clock, requests_per_s=None)
    own = PrincipalLimits(requests_per_s=1.0, request_burst=2)
    assert [limits.check_request("k", own) for _ in range(3)] == [None, None, 1.0]
    clock.advance(1.0)
    assert limits.check_request("k", own) is None
    assert limits.check_request("other") is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, PrincipalLimits()),
        ({"connections": 5}, PrincipalLimits(max_connections=5)),
        ({"connections": "off", "requests_per_s": 0}, PrincipalLimits(0, None, 0)),
        ({"requests_per_s": 2.5, "request_burst": 10.0}, PrincipalLimits(2.5, 10)),
        ({"connections": None}, PrincipalLimits()),
    ],
)
def test_parse_principal_limits(raw: dict[str, Any], expected: PrincipalLimits) -> None:
    assert parse_principal_limits(raw, "keys") == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "must be an object"),
        ({"conns": 1}, "unknown limit 'conns'"),
        ({"connections": -1}, "max_connections"),
        ({"connections": 1.5}, "max_connections"),
        ({"requests_per_s": "fast"}, "requests_per_s"),
        ({"requests_per_s": True}, "requests_per_s"),
        ({"request_burst": 0}, "request_burst"),
    ],
)
def test_parse_principal_limits_refuses(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_principal_limits(raw, "keys.json: entry #2")
    assert str(info.value).startswith("keys.json: entry #2")
