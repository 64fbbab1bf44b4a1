"""Tests for icefloe.core.conntable: connections before authentication, sans-I/O."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.core.conntable import (
    ConnectionLimits,
    ConnectionTable,
    ConnectionTableStatistics,
    HeadRefusal,
    Phase,
    Refusal,
)
from icefloe.exceptions import InvalidState

LIMITS = ConnectionLimits(
    max_header_bytes=100,
    max_headers=3,
    header_timeout_s=10.0,
    keep_alive_timeout_s=5.0,
    max_per_address=2,
    max_open=4,
)


def table(limits: ConnectionLimits = LIMITS) -> ConnectionTable[str]:
    return ConnectionTable(limits)


# -- limits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_header_bytes", 0),
        ("max_headers", -1),
        ("max_headers", True),
        ("max_per_address", 0),
        ("max_open", 1.5),
        ("header_timeout_s", 0),
        ("keep_alive_timeout_s", float("inf")),
        ("keep_alive_timeout_s", "5"),
    ],
)
def test_a_bad_limit_is_refused_naming_its_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        ConnectionLimits(**{field: value})  # type: ignore[arg-type]


def test_the_defaults_keep_both_timeouts_within_30_s() -> None:
    limits = ConnectionLimits()
    assert limits.header_timeout_s <= 30
    assert limits.keep_alive_timeout_s <= 30
    assert (limits.max_header_bytes, limits.max_headers) == (16 * 1024, 100)


def test_max_open_overrides_the_capacity_the_server_works_out() -> None:
    assert ConnectionTable(ConnectionLimits(), capacity=7).capacity == 7
    assert ConnectionTable(ConnectionLimits(max_open=3), capacity=7).capacity == 3


# -- phases and timers ----------------------------------------------------------------


def test_a_new_connection_waits_and_times_out_as_idle() -> None:
    t = table()
    assert t.admit("a", "10.0.0.1", now=100.0).admitted
    assert t.phase("a") is Phase.WAITING
    assert t.deadline("a") == 105.0
    assert t.expired("a", 104.9) is None
    assert t.expired("a", 105.0) is Phase.WAITING


def test_the_first_head_byte_starts_the_header_timer_and_bytes_never_extend_it() -> None:
    t = table()
    t.admit("a", "10.0.0.1", now=100.0)
    assert t.head_bytes("a", 5, now=103.0) is None
    assert (t.phase("a"), t.deadline("a")) == (Phase.HEAD, 113.0)
    assert t.head_bytes("a", 5, now=110.0) is None
    assert t.deadline("a") == 113.0
    assert t.expired("a", 113.0) is Phase.HEAD


def test_a_served_request_has_no_timer_until_read_and_answered() -> None:
    t = table()
    t.admit("a", "10.0.0.1", now=0.0)
    t.head_bytes("a", 10, now=1.0)
    t.head_complete("a")
    assert (t.phase("a"), t.deadline("a"), t.head_room("a")) == (Phase.ACTIVE, None, None)
    t.response_complete("a", now=50.0)  # answered before the body was read
    assert t.phase("a") is Phase.ACTIVE
    t.request_complete("a", now=60.0, answered=True)
    assert (t.phase("a"), t.deadline("a")) == (Phase.WAITING, 65.0)


def test_a_request_read_first_waits_for_its_response() -> None:
    t = table()
    t.admit("a", "10.0.0.1", now=0.0)
    t.head_complete("a")
    t.request_complete("a", now=1.0, answered=False)
    assert t.deadline("a") is None  # a stream of any length
    t.response_complete("a", now=500.0)
    assert t.deadline("a") == 505.0


def test_an_upgraded_connection_has_no_timer_and_stays_counted() -> None:
    t = table()
    t.admit("a", "10.0.0.1", now=0.0)
    t.head_complete("a")
    t.upgraded("a")
    t.response_complete("a", now=1.0)
    assert (t.phase("a"), t.deadline("a"), t.count("10.0.0.1")) == (Phase.UPGRADED, None, 1)


# -- head limits ----------------------------------------------------------------------


def test_the_head_room_shrinks_and_a_head_that_fills_it_is_refused() -> None:
    t = table()
    t.admit("a", "10.0.0.1", now=0.0)
    assert t.head_room("a") == 100
    assert t.head_bytes("a", 60, now=0.0) is None
    assert t.head_room("a") == 40
    assert t.head_bytes("a", 40, now=0.0) is HeadRefusal.TOO_MANY_BYTES


def test_each_head_gets_the_whole_room_and_field_count() -> None:
    t = table()
    t.admit("a", "10.0.0.1", now=0.0)
    t.head_bytes("a", 90, now=0.0)
    for _ in range(3):
        assert t.header_field("a") is None
    t.head_complete("a")
    t.request_complete("a", now=1.0, answered=True)
    assert t.head_room("a") == 100
    for _ in range(3):
        assert t.header_field("a") is None
    assert t.header_field("a") is HeadRefusal.TOO_MANY_FIELDS


# -- caps -----------------------------------------------------------------------------


def test_the_per_address_cap_refuses_at_connect_and_frees_on_release() -> None:
    t = table()
    assert t.admit("a", "10.0.0.1", now=0.0).admitted
    assert t.admit("b", "10.0.0.1", now=0.0).admitted
    assert t.admit("c", "10.0.0.1", now=0.0).refusal is Refusal.PER_ADDRESS
    assert t.admit("c", "10.0.0.2", now=0.0).admitted
    t.release("a")
    t.release("a")  # twice is once
    assert t.admit("d", "10.0.0.1", now=0.0).admitted
    assert t.count("10.0.0.1") == 2


def test_an_exempt_peer_skips_the_per_address_cap_but_not_the_total() -> None:
    t = table()
    for name in "abcd":
        assert t.admit(name, "10.0.0.9", now=0.0, exempt=True).admitted
    assert t.count("10.0.0.9") == 4
    for name in "abcd":
        t.head_complete(name)
    assert t.admit("e", "10.0.0.9", now=0.0, exempt=True).refusal is Refusal.FULL


def test_when_full_the_longest_waiting_connection_is_evicted() -> None:
    t = table()
    t.admit("old", "10.0.0.1", now=0.0)
    t.admit("busy", "10.0.0.2", now=1.0)
    t.admit("slow", "10.0.0.3", now=2.0)
    t.admit("new", "10.0.0.4", now=3.0)
    t.head_complete("busy")
    t.head_bytes("slow", 3, now=4.0)
    # "old" re-enters the order after a request: it is now the newest waiter
    t.head_complete("old")
    t.request_complete("old", now=5.0, answered=True)
    first = t.admit("e", "10.0.0.5", now=6.0)
    assert (first.admitted, first.evicted) == (True, "slow")
    assert "slow" not in t
    assert len(t) == 4
    assert t.admit("f", "10.0.0.6", now=7.0).evicted == "new"


def test_a_table_with_no_cap_admits_everyone() -> None:
    t = ConnectionTable[int](ConnectionLimits(max_per_address=None))
    for i in range(1000):
        assert t.admit(i, "10.0.0.1", now=0.0).admitted
    assert len(t) == t.count("10.0.0.1") == 1000


def test_statistics_count_what_the_table_refused_and_evicted() -> None:
    t = table(ConnectionLimits(max_per_address=1, max_open=2, max_headers=1))
    t.admit("a", "10.0.0.1", now=0.0)
    t.admit("b", "10.0.0.1", now=0.0)  # per address
    t.admit("c", "10.0.0.2", now=0.0)
    t.admit("d", "10.0.0.3", now=0.0)  # evicts "a"
    t.header_field("c")
    t.header_field("c")  # one too many
    t.head_complete("d")
    assert t.statistics() == ConnectionTableStatistics(
        open=2,
        waiting=1,
        addresses=2,
        capacity=2,
        refused_per_address=1,
        refused_full=0,
        evicted=1,
        heads_refused=1,
    )


def test_a_transition_in_the_wrong_phase_names_the_phase() -> None:
    t = table()
    t.admit("a", "10.0.0.1", now=0.0)
    with pytest.raises(InvalidState, match="WAITING"):
        t.upgraded("a")
    with pytest.raises(InvalidState, match="WAITING"):
        t.request_complete("a", now=0.0, answered=True)
    t.head_complete("a")
    t.upgraded("a")
    with pytest.raises(InvalidState, match="UPGRADED"):
        t.head_complete("a")
    t.release("a")
    with pytest.raises(InvalidState, match="not in the table"):
        t.deadline("a")


def test_admitting_one_owner_twice_is_a_bug() -> None:
    t = table()
    t.admit("a", "10.0.0.1", now=0.0)
    with pytest.raises(InvalidState, match="admitted already"):
        t.admit("a", "10.0.0.1", now=0.0)


# -- the invariants, against a model ----------------------------------------------------

_OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["admit", "release", "bytes", "field", "head", "request", "response", "upgrade"]
        ),
        st.integers(0, 7),  # which connection
        st.integers(0, 3),  # which address / how many bytes (x 20)
        st.booleans(),  # exempt / answered
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(_OPS)
def test_counts_capacity_and_eviction_order_hold_under_any_sequence(
    ops: list[tuple[str, int, int, bool]],
) -> None:
    t = ConnectionTable[int](LIMITS)
    addresses: dict[int, str] = {}
    now = 0.0
    for op, who, arg, flag in ops:
        now += 1.0
        if op == "admit":
            if who in t:
                continue
            address = f"10.0.0.{arg}"
            before = len(t)
            phases = {owner: t.phase(owner) for owner in addresses}
            admission = t.admit(who, address, now, exempt=flag)
            if admission.evicted is not None:
                assert admission.evicted not in t
                assert phases[admission.evicted] <= Phase.HEAD  # never one being served
                del addresses[admission.evicted]
            if admission.admitted:
                addresses[who] = address
            else:
                assert len(t) == before
            continue
        if who not in t:
            continue
        if op == "release":
            t.release(who)
            del addresses[who]
        elif op == "bytes":
            room = t.head_room(who)
            if room is not None and room > 0:
                t.head_bytes(who, min(room, arg * 20), now)
        elif op == "field":
            t.header_field(who)
        elif op == "head" and t.phase(who) <= Phase.HEAD:
            t.head_complete(who)
        elif op == "request" and t.phase(who) is Phase.ACTIVE:
            t.request_complete(who, now, answered=flag)
        elif op == "response":
            t.response_complete(who, now)
        elif op == "upgrade" and t.phase(who) is Phase.ACTIVE:
            t.upgraded(who)
        # invariants after every step
        assert len(t) == len(addresses) <= 4
        stats = t.statistics()
        assert stats.open == len(addresses)
        assert stats.addresses == len(set(addresses.values()))
        assert stats.waiting == sum(1 for o in addresses if t.phase(o) <= Phase.HEAD)
        for address in set(addresses.values()):
            assert t.count(address) == sum(1 for a in addresses.values() if a == address)
        for owner in addresses:
            room = t.head_room(owner)
            assert (t.deadline(owner) is None) == (t.phase(owner) > Phase.HEAD)
            assert room is None or 0 <= room <= 100
