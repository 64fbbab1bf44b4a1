"""AckTracker and PartitionAcks: a commit never covers an unacked record, whatever the ack order."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icefloe.core.acktracker import AckTracker, PartitionAcks


def test_a_later_ack_waits_for_the_earlier_one() -> None:
    tracker: AckTracker[int] = AckTracker()
    for position in (5, 6, 8):
        tracker.deliver(position)
    assert tracker.ack(8)
    assert tracker.released is None
    assert tracker.ack(5)
    assert tracker.released == 5
    assert tracker.ack(6)
    assert tracker.released == 8
    assert tracker.pending == 0
    assert len(tracker) == 0


def test_unknown_or_repeated_acks_change_nothing() -> None:
    tracker: AckTracker[int] = AckTracker()
    tracker.deliver(1)
    assert not tracker.ack(0)
    assert tracker.ack(1)
    assert not tracker.ack(1)
    assert tracker.released == 1


def test_an_outstanding_position_cannot_be_delivered_twice() -> None:
    tracker: AckTracker[str] = AckTracker()
    tracker.deliver("3")
    with pytest.raises(ValueError, match="position '3' is already outstanding"):
        tracker.deliver("3")


def test_rewind_forgets_the_tail_and_allows_it_again() -> None:
    tracker: AckTracker[int] = AckTracker()
    for position in range(5):
        tracker.deliver(position)
    tracker.ack(0)
    tracker.ack(3)
    assert tracker.rewind(2) == 2  # 2 and 4 were pending; 3 was acked
    assert tracker.pending == 1  # 1
    assert 3 not in tracker
    tracker.deliver(2)
    tracker.ack(1)
    assert tracker.released == 1
    tracker.ack(2)
    assert tracker.released == 2


def test_rewind_never_forgets_the_released_prefix() -> None:
    tracker: AckTracker[int] = AckTracker()
    tracker.deliver(0)
    tracker.deliver(1)
    tracker.ack(0)
    assert tracker.rewind(0) == 0  # released already
    assert tracker.rewind(7) == 0  # never delivered
    assert tracker.released == 0
    assert tracker.pending == 1


@given(
    gaps=st.lists(st.integers(1, 3), min_size=1, max_size=40),
    data=st.data(),
)
def test_released_is_the_last_position_before_the_first_unacked(
    gaps: list[int], data: st.DataObject
) -> None:
    positions: list[int] = []
    position = -1
    for gap in gaps:
        position += gap
        positions.append(position)
    tracker: AckTracker[int] = AckTracker()
    for p in positions:
        tracker.deliver(p)
    order = data.draw(st.permutations(positions))
    acked: set[int] = set()
    for p in order:
        assert tracker.ack(p)
        acked.add(p)
        unacked = [q for q in positions if q not in acked]
        released = [q for q in positions if not unacked or q < unacked[0]]
        assert tracker.released == (released[-1] if released else None)
        assert tracker.pending == len(unacked)


def test_partition_acks_report_each_move_of_the_commit_point() -> None:
    acks: PartitionAcks[int] = PartitionAcks()
    for offset in range(4):
        acks.deliver("s", offset)
    assert acks.ack("s", 2) is None
    assert acks.ack("s", 0) == 0
    assert acks.ack("s", 1) == 2
    assert acks.waiting("s") == 1
    assert acks.ack("s", 3) == 3
    assert acks.outstanding() == 0
    assert acks.waiting("s") == 0


def test_partition_acks_misuse_is_a_clear_error() -> None:
    acks: PartitionAcks[str] = PartitionAcks()
    acks.deliver("shard-a", "10")
    with pytest.raises(ValueError, match="already outstanding"):
        acks.deliver("shard-a", "10")
    with pytest.raises(ValueError, match="not awaiting an ack"):
        acks.ack("shard-b", "10")
    acks.deliver("shard-a", "11")
    acks.ack("shard-a", "11")
    with pytest.raises(ValueError, match="not awaiting an ack"):
        acks.ack("shard-a", "11")
    assert acks.outstanding() == 1


def test_a_position_released_earlier_may_come_again() -> None:
    acks: PartitionAcks[int] = PartitionAcks()
    acks.deliver("s", 4)
    assert acks.ack("s", 4) == 4
    acks.deliver("s", 4)  # a broker redelivering after a reconnect
    assert acks.ack("s", 4) == 4


@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 40)), unique=True),
    st.randoms(use_true_random=False),
)
def test_commits_are_the_acked_prefix_of_each_partition(
    deliveries: list[tuple[str, int]], rng: random.Random
) -> None:
    acks: PartitionAcks[int] = PartitionAcks()
    order: dict[str, list[int]] = {}
    for partition, position in deliveries:
        acks.deliver(partition, position)
        order.setdefault(partition, []).append(position)
    shuffled = list(deliveries)
    rng.shuffle(shuffled)
    acked: set[tuple[str, int]] = set()
    committed: dict[str, int] = {}
    for partition, position in shuffled:
        acked.add((partition, position))
        point = acks.ack(partition, position)
        if point is not None:
            assert point != committed.get(partition)
            committed[partition] = point
        for name, positions in order.items():
            if name in committed:
                covered = positions[: positions.index(committed[name]) + 1]
                assert all((name, p) in acked for p in covered)
        assert acks.outstanding() == len(deliveries) - len(acked)
    assert committed == {name: positions[-1] for name, positions in order.items()}
