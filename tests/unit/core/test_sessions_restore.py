"""SessionTable.restore: a session kept outside the table comes back detached (issue 11)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icefloe.core.sessions import SessionExpired, SessionState, SessionTable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_restored_session_resumes_with_its_acks() -> None:
    table = SessionTable(30.0, 10, Clock())
    assert table.restore("s1", "acme", {"a": 4, "b": -1})
    assert table.info("s1").state is SessionState.DETACHED
    info = table.resume("s1", "acme")
    assert info.subscriptions == {"a": 4, "b": -1}
    assert not info.taken_over


def test_a_restore_changes_nothing_held_and_keeps_owners_apart() -> None:
    table = SessionTable(30.0, 10, Clock())
    sid = table.open("acme")
    table.subscribe(sid, "a", 3)
    assert not table.restore(sid, "acme", {"z": 9})
    assert table.info(sid).subscriptions == {"a": 2}
    assert table.restore("s2", "other", {})
    with pytest.raises(SessionExpired):
        table.resume("s2", "acme")


def test_a_restored_session_expires_after_the_ttl() -> None:
    clock = Clock()
    table = SessionTable(30.0, 10, clock)
    table.restore("s1", "acme", {"a": 0})
    clock.now += 31
    with pytest.raises(SessionExpired):
        table.resume("s1", "acme")
    assert "s1" not in table


def test_a_full_table_makes_room_only_from_detached_sessions() -> None:
    table = SessionTable(30.0, 2, Clock())
    table.open("acme")
    table.restore("old", "acme", {})
    assert table.restore("new", "acme", {})  # "old" (detached) made room
    assert "old" not in table
    table.resume("new", "acme")
    assert not table.restore("third", "acme", {})  # every session attached


@given(
    acks=st.dictionaries(st.text(min_size=1, max_size=8), st.integers(-1, 2**40), max_size=40),
    limit=st.integers(1, 20),
)
def test_restore_keeps_at_most_the_stream_limit_and_the_counts_agree(
    acks: dict[str, int], limit: int
) -> None:
    table = SessionTable(30.0, 10, Clock(), max_streams_per_session=limit)
    assert table.restore("s", "t", acks)
    kept = table.info("s").subscriptions
    assert len(kept) == min(len(acks), limit)
    assert all(acks[k] == v for k, v in kept.items())
    assert table.statistics().subscriptions == len(kept)
    table.discard("s")
    assert table.statistics().subscriptions == 0


def test_restore_refuses_a_seq_below_minus_one() -> None:
    table = SessionTable(30.0, 10, Clock())
    with pytest.raises(ValueError, match="int >= -1"):
        table.restore("s", "t", {"a": -2})
