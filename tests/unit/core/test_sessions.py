"""Tests for icefloe.core.sessions: WebSocket sessions kept for resume."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakeclock import FakeClock
from icefloe.core.codec import Format
from icefloe.core.ops import Hello, decode_client
from icefloe.core.sessions import (
    SessionExpired,
    SessionInfo,
    SessionState,
    SessionTable,
    SessionTableStatistics,
    TooManySessions,
    TooManyStreams,
)
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import IcefloeError


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def table(clock: FakeClock) -> SessionTable:
    return SessionTable(ttl_s=30.0, max_sessions=4, clock=clock, max_streams_per_session=3)


# -- construction -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl_s": 0}, "ttl_s"),
        ({"ttl_s": -1.0}, "ttl_s"),
        ({"ttl_s": float("inf")}, "ttl_s"),
        ({"ttl_s": float("nan")}, "ttl_s"),
        ({"max_sessions": 0}, "max_sessions"),
        ({"max_sessions": True}, "max_sessions"),
        ({"max_sessions": 2.0}, "max_sessions"),
        ({"max_streams_per_session": 0}, "max_streams_per_session"),
    ],
)
def test_invalid_limits_are_refused(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"ttl_s": 1.0, "max_sessions": 1, "clock": FakeClock(1000.0)}
    with pytest.raises(ValueError, match=message):
        SessionTable(**(args | kwargs))


# -- open, detach, resume ------------------------------------------------------------


def test_open_makes_unguessable_ids_that_hello_accepts(table: SessionTable) -> None:
    ids = {table.open("acme") for _ in range(4)}
    assert len(ids) == 4
    for session_id in ids:
        # 18 random bytes: 144 bits, URL-safe base64 without padding
        assert re.fullmatch(r"[A-Za-z0-9_-]{24}", session_id)
        frame = f'{{"op":"hello","session_id":"{session_id}","resume":true}}'
        assert decode_client(frame, Format.JSON) == Hello(session_id=session_id, resume=True)
    info = table.info(next(iter(ids)))
    assert info == SessionInfo(next(iter(ids)), "acme", SessionState.ATTACHED, {}, 1, False)


def test_resume_within_ttl_restores_subscriptions(table: SessionTable, clock: FakeClock) -> None:
    sid = table.open("acme")
    table.subscribe(sid, "s1")
    table.subscribe(sid, "s2", from_seq=10)
    table.ack(sid, "s1", 41)
    assert table.detach(sid, clock())
    assert table.info(sid).state is SessionState.DETACHED
    clock.advance(29.9)
    info = table.resume(sid, "acme")
    assert info.subscriptions == {"s1": 41, "s2": 9}
    assert info.state is SessionState.ATTACHED
    assert (info.attachment, info.taken_over) == (2, False)
    # The snapshot is a copy.
    info.subscriptions["s1"] = 0
    assert table.info(sid).subscriptions["s1"] == 41


def test_ttl_runs_from_the_detach(table: SessionTable, clock: FakeClock) -> None:
    sid = table.open("acme")
    clock.advance(1000)  # time attached does not count
    table.detach(sid)
    clock.advance(30.0)
    with pytest.raises(SessionExpired) as info:
        table.resume(sid, "acme")
    assert info.value.reason == "expired"
    assert sid not in table
    with pytest.raises(SessionExpired) as again:
        table.resume(sid, "acme")
    assert again.value.reason == "unknown"


def test_detach_takes_an_explicit_now(table: SessionTable, clock: FakeClock) -> None:
    sid = table.open("acme")
    table.detach(sid, clock() - 29.0)
    clock.advance(0.5)
    assert table.resume(sid, "acme").attachment == 2
    table.detach(sid, clock() - 30.0)
    with pytest.raises(SessionExpired):
        table.resume(sid, "acme")


def test_another_tenant_cannot_resume_and_changes_nothing(
    table: SessionTable, clock: FakeClock
) -> None:
    sid = table.open("acme")
    table.subscribe(sid, "s1")
    table.detach(sid)
    before = table.info(sid)
    with pytest.raises(SessionExpired) as info:
        table.resume(sid, "evil")
    assert info.value.reason == "tenant"
    assert table.info(sid) == before
    clock.advance(10)
    assert table.resume(sid, "acme").subscriptions == {"s1": -1}


def test_refusals_read_the_same_whatever_the_reason(table: SessionTable, clock: FakeClock) -> None:
    foreign = table.open("other")
    expired = table.open("acme")
    table.detach(expired)
    clock.advance(60)
    errors = []
    for sid in ("nope", foreign, expired):
        with pytest.raises(SessionExpired) as info:
            table.resume(sid, "acme")
        errors.append(info.value)
    assert [e.reason for e in errors] == ["unknown", "tenant", "expired"]
    assert len({str(e) for e in errors}) == 1
    assert "expired" in str(errors[0])
    assert all(e.code is ErrorCode.SESSION_EXPIRED for e in errors)
    assert all(isinstance(e, IcefloeError) for e in errors)
    assert table.statistics().refused == 3


def test_resume_of_an_attached_session_takes_it_over(table: SessionTable) -> None:
    sid = table.open("acme")
    first = table.info(sid).attachment
    info = table.resume(sid, "acme")  # the old socket is not noticed dead yet
    assert info.taken_over
    assert info.attachment == first + 1
    # The old connection closing late must not detach the new one.
    assert not table.detach(sid, attachment=first)
    assert table.info(sid).state is SessionState.ATTACHED
    assert table.detach(sid, attachment=info.attachment)
    assert table.info(sid).state is SessionState.DETACHED
    assert table.statistics().taken_over == 1


def test_detach_is_safe_from_any_close_path(table: SessionTable) -> None:
    sid = table.open("acme")
    assert table.detach(sid)
    assert not table.detach(sid)  # already detached: the ttl does not restart
    assert not table.detach("unknown")
    assert table.discard(sid)
    assert not table.detach(sid)
    assert not table.discard(sid)


# -- subscriptions and acks -------------------------------------------------------------


def test_acks_only_move_forward(table: SessionTable) -> None:
    sid = table.open("acme")
    table.subscribe(sid, "s")
    assert table.ack(sid, "s", 5)
    assert not table.ack(sid, "s", 3)
    assert not table.ack(sid, "s", 5)
    assert table.ack(sid, "s", 6)
    assert table.info(sid).subscriptions == {"s": 6}


def test_ack_for_an_unfollowed_stream_is_ignored(table: SessionTable) -> None:
    sid = table.open("acme")
    assert not table.ack(sid, "never", 1)
    assert table.info(sid).subscriptions == {}


@pytest.mark.parametrize("seq", [-1, True, 1.0, "1"])
def test_ack_and_subscribe_check_seqs(table: SessionTable, seq: Any) -> None:
    sid = table.open("acme")
    table.subscribe(sid, "s")
    with pytest.raises(ValueError, match="seq"):
        table.ack(sid, "s", seq)
    with pytest.raises(ValueError, match="from_seq"):
        table.subscribe(sid, "s", seq)


def test_unknown_session_is_reported_as_expired(table: SessionTable) -> None:
    for call in (
        lambda: table.ack("nope", "s", 1),
        lambda: table.subscribe("nope", "s"),
        lambda: table.info("nope"),
    ):
        with pytest.raises(SessionExpired) as info:
            call()
        assert info.value.reason == "unknown"
    assert not table.unsubscribe("nope", "s")


def test_subscribe_sets_the_resume_point(table: SessionTable) -> None:
    sid = table.open("acme")
    table.subscribe(sid, "s", from_seq=100)
    table.ack(sid, "s", 150)
    table.subscribe(sid, "s", from_seq=0)  # the client asked to replay
    assert table.info(sid).subscriptions == {"s": -1}
    assert table.statistics().subscriptions == 1


def test_subscribe_says_whether_it_changed_the_session(table: SessionTable) -> None:
    sid = table.open("acme")
    assert table.subscribe(sid, "s", from_seq=5) is True  # a new stream
    assert table.subscribe(sid, "s", from_seq=5) is False  # the same point again
    assert table.subscribe(sid, "s", from_seq=0) is True  # a replay moves it
    table.ack(sid, "s", 3)
    assert table.subscribe(sid, "s", from_seq=4) is False  # where the ack left it


def test_streams_per_session_are_bounded(table: SessionTable) -> None:
    sid = table.open("acme")
    for stream in ("a", "b", "c"):
        table.subscribe(sid, stream)
    with pytest.raises(TooManyStreams) as info:
        table.subscribe(sid, "d")
    assert (info.value.limit, info.value.code) == (3, "limit_exceeded")
    assert info.value.code is ErrorCode.LIMIT_EXCEEDED
    table.subscribe(sid, "a", from_seq=5)  # an existing stream is fine
    assert table.unsubscribe(sid, "a")
    assert not table.unsubscribe(sid, "a")
    table.subscribe(sid, "d")
    assert set(table.info(sid).subscriptions) == {"b", "c", "d"}


def test_forget_drops_a_stream_from_every_session(table: SessionTable) -> None:
    one, two, three = (table.open("acme") for _ in range(3))
    for sid in (one, two):
        table.subscribe(sid, "s")
        table.subscribe(sid, "keep")
    table.subscribe(three, "keep")
    assert table.forget("s") == 2
    assert table.forget("s") == 0
    assert table.info(one).subscriptions == {"keep": -1}
    assert table.statistics().subscriptions == 3
    assert not table.ack(one, "s", 1)  # a late ack is harmless


# -- bounds and expiry -------------------------------------------------------------------


def test_full_table_of_attached_sessions_refuses(table: SessionTable) -> None:
    for _ in range(4):
        table.open("acme")
    with pytest.raises(TooManySessions) as info:
        table.open("acme")
    assert (info.value.limit, info.value.code) == (4, "overloaded")
    assert info.value.code is ErrorCode.OVERLOADED
    # how many sessions the server holds is every tenant's load: no figure
    assert not any(c.isdigit() for c in str(info.value)), str(info.value)


def test_full_table_evicts_the_detached_session_closest_to_expiry(
    table: SessionTable, clock: FakeClock
) -> None:
    ids = [table.open("acme") for _ in range(4)]
    table.detach(ids[2])
    clock.advance(1)
    table.detach(ids[0])
    fresh = table.open("acme")
    assert ids[2] not in table
    assert {ids[0], ids[1], ids[3], fresh} == {s for s in [*ids, fresh] if s in table}
    assert table.statistics().evicted == 1


def test_expire_sweeps_in_detach_order(table: SessionTable, clock: FakeClock) -> None:
    a, b, c = (table.open("acme") for _ in range(3))
    table.subscribe(a, "s")
    table.detach(a)
    clock.advance(10)
    table.detach(b)
    assert table.expire() == []
    clock.advance(20)
    assert table.expire() == [a]
    assert table.expire(clock() + 10) == [b]
    assert c in table
    assert len(table) == 1
    stats = table.statistics()
    assert (stats.expired, stats.subscriptions) == (2, 0)


def test_open_sweeps_expired_sessions_first(table: SessionTable, clock: FakeClock) -> None:
    ids = [table.open("acme") for _ in range(4)]
    table.detach(ids[0])
    clock.advance(31)
    table.open("acme")
    stats = table.statistics()
    assert (stats.expired, stats.evicted, stats.sessions) == (1, 0, 4)


def test_statistics(table: SessionTable, clock: FakeClock) -> None:
    a = table.open("acme")
    b = table.open("acme")
    table.subscribe(a, "s")
    table.detach(b)
    table.resume(b, "acme")
    table.detach(a)
    assert table.statistics() == SessionTableStatistics(
        sessions=2,
        attached=1,
        detached=1,
        subscriptions=1,
        max_sessions=4,
        max_streams_per_session=3,
        ttl_s=30.0,
        opened=2,
        resumed=1,
        taken_over=0,
        refused=0,
        expired=0,
        evicted=0,
    )
    assert "SessionTable(sessions=2, detached=1" in repr(table)


# -- properties ----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(acks=st.lists(st.integers(0, 1000), max_size=40), from_seq=st.integers(0, 500))
def test_the_resume_point_is_the_highest_ack(acks: list[int], from_seq: int) -> None:
    table = SessionTable(10.0, 1, FakeClock(1000.0))
    sid = table.open("t")
    table.subscribe(sid, "s", from_seq)
    best = from_seq - 1
    for seq in acks:
        assert table.ack(sid, "s", seq) == (seq > best)
        best = max(best, seq)
        assert table.info(sid).subscriptions["s"] == best


_actions = st.lists(
    st.tuples(
        st.sampled_from(["open", "detach", "resume", "sub", "ack", "forget", "tick", "expire"]),
        st.integers(0, 7),
        st.integers(0, 3),
        st.sampled_from(["acme", "evil"]),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(actions=_actions)
def test_random_use_keeps_the_table_consistent(
    actions: list[tuple[str, int, int, str]],
) -> None:
    clock = FakeClock(1000.0)
    table = SessionTable(5.0, 4, clock, max_streams_per_session=2)
    ids: list[str] = []
    detached_at: dict[str, float] = {}
    for action, pick, stream, tenant in actions:
        sid = ids[pick % len(ids)] if ids else "none"
        try:
            if action == "open":
                ids.append(table.open(tenant))
            elif action == "detach" and table.detach(sid):
                detached_at[sid] = clock()
            elif action == "resume":
                since = detached_at.get(sid)
                info = table.resume(sid, tenant)
                detached_at.pop(sid, None)
                # A session is resumable only within its ttl, and only by its tenant.
                assert info.tenant == tenant
                assert since is None or clock() < since + 5.0
            elif action == "sub":
                table.subscribe(sid, f"s{stream}")
            elif action == "ack":
                table.ack(sid, f"s{stream}", pick)
            elif action == "forget":
                table.forget(f"s{stream}")
            elif action == "tick":
                clock.advance(pick)
            elif action == "expire":
                for gone in table.expire():
                    assert clock() >= detached_at.pop(gone) + 5.0
        except (SessionExpired, TooManySessions, TooManyStreams):
            pass
        stats = table.statistics()
        assert stats.sessions == len(table) <= 4
        assert stats.attached + stats.detached == stats.sessions
        live = [table.info(s) for s in set(ids) if s in table]
        assert stats.subscriptions == sum(len(i.subscriptions) for i in live)
        assert all(len(i.subscriptions) <= 2 for i in live)
        assert stats.detached == sum(i.state is SessionState.DETACHED for i in live)


def test_follows_and_has_room_answer_without_a_snapshot() -> None:
    table = SessionTable(30.0, 10, lambda: 0.0, max_streams_per_session=2)
    sid = table.open("acme")
    assert not table.follows(sid, "s1")
    assert table.has_room(sid)
    table.subscribe(sid, "s1")
    table.subscribe(sid, "s2")
    assert table.follows(sid, "s1")
    assert not table.has_room(sid)
    table.unsubscribe(sid, "s1")
    assert table.has_room(sid)
    with pytest.raises(SessionExpired):
        table.follows("no-such-session", "s1")
