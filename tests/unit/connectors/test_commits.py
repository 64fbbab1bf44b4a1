"""InOrderCommits: a commit never covers an unacked record, whatever the ack order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icefloe.connectors.commits import InOrderCommits


def test_an_early_ack_waits_for_the_earlier_records() -> None:
    commits: InOrderCommits[int] = InOrderCommits()
    for offset in range(4):
        commits.deliver("s", offset)
    assert commits.ack("s", 2) is None
    assert commits.ack("s", 0) == 0
    assert commits.ack("s", 1) == 2
    assert commits.waiting("s") == 1
    assert commits.ack("s", 3) == 3
    assert commits.outstanding() == 0


def test_misuse_is_a_clear_error() -> None:
    commits: InOrderCommits[str] = InOrderCommits()
    commits.deliver("shard-a", "10")
    with pytest.raises(ValueError, match="already outstanding"):
        commits.deliver("shard-a", "10")
    with pytest.raises(ValueError, match="not awaiting an ack"):
        commits.ack("shard-b", "10")
    commits.deliver("shard-a", "11")
    commits.ack("shard-a", "11")
    with pytest.raises(ValueError, match="not awaiting an ack"):
        commits.ack("shard-a", "11")


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 40)), unique=True), st.randoms())
def test_commits_are_the_acked_prefix_of_each_partition(
    deliveries: list[tuple[str, int]], rng: object
) -> None:
    commits: InOrderCommits[int] = InOrderCommits()
    order: dict[str, list[int]] = {}
    for partition, position in deliveries:
        commits.deliver(partition, position)
        order.setdefault(partition, []).append(position)
    acks = list(deliveries)
    rng.shuffle(acks)  # type: ignore[attr-defined]
    acked: set[tuple[str, int]] = set()
    committed: dict[str, int] = {}
    for partition, position in acks:
        acked.add((partition, position))
        point = commits.ack(partition, position)
        if point is not None:
            committed[partition] = point
        for name, positions in order.items():
            if name not in committed:
                continue
            covered = positions[: positions.index(committed[name]) + 1]
            assert all((name, p) in acked for p in covered)
    assert commits.outstanding() == 0
    assert committed == {name: positions[-1] for name, positions in order.items()}
