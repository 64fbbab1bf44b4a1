"""AckTracker: commit positions move only past acked prefixes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icefloe.core.acktracker import AckTracker


def test_a_later_ack_waits_for_the_earlier_one() -> None:
    tracker = AckTracker()
    for position in (5, 6, 8):
        tracker.deliver(position)
    assert tracker.ack(8)
    assert tracker.commit_at is None
    assert tracker.ack(5)
    assert tracker.commit_at == 6
    assert tracker.ack(6)
    assert tracker.commit_at == 9
    assert tracker.pending == 0


def test_unknown_or_repeated_acks_change_nothing() -> None:
    tracker = AckTracker()
    tracker.deliver(1)
    assert not tracker.ack(0)
    assert tracker.ack(1)
    assert not tracker.ack(1)
    assert tracker.commit_at == 2


def test_positions_must_increase() -> None:
    tracker = AckTracker()
    tracker.deliver(3)
    with pytest.raises(ValueError, match="position 3 delivered after 3"):
        tracker.deliver(3)


def test_rewind_forgets_the_tail_and_allows_it_again() -> None:
    tracker = AckTracker()
    for position in range(5):
        tracker.deliver(position)
    tracker.ack(0)
    tracker.ack(3)
    assert tracker.rewind(2) == 2  # 2 and 4 were pending; 3 was acked
    assert tracker.pending == 1  # 1
    tracker.deliver(2)
    tracker.ack(1)
    assert tracker.commit_at == 2
    tracker.ack(2)
    assert tracker.commit_at == 3


@given(
    gaps=st.lists(st.integers(1, 3), min_size=1, max_size=40),
    data=st.data(),
)
def test_commit_at_is_the_first_unacked_position(gaps: list[int], data: st.DataObject) -> None:
    positions: list[int] = []
    position = -1
    for gap in gaps:
        position += gap
        positions.append(position)
    tracker = AckTracker()
    for p in positions:
        tracker.deliver(p)
    order = data.draw(st.permutations(positions))
    acked: set[int] = set()
    for p in order:
        assert tracker.ack(p)
        acked.add(p)
        unacked = [q for q in positions if q not in acked]
        released = [q for q in positions if not unacked or q < unacked[0]]
        expected = released[-1] + 1 if released else None
        assert tracker.commit_at == expected
        assert tracker.pending == len(unacked)
