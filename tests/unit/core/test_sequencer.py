"""Tests for icefloe.core.sequencer: ReorderBuffer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.core.sequencer import ReorderBuffer
from icefloe.exceptions import DuplicateSeq, ReorderOverflow

PROPERTY = settings(max_examples=200, deadline=None)


# -- ReorderBuffer: examples -------------------------------------------------


def test_reorder_in_order_fast_path() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer()
    assert buf.push(0, "a") == ["a"]
    assert buf.push(1, "b") == ["b"]
    assert buf.next_seq == 2
    assert buf.pending == 0
    assert not buf.has_gap


def test_reorder_holds_until_gap_fills() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer()
    assert buf.push(2, "c") == []
    assert buf.push(1, "b") == []
    assert buf.has_gap
    assert buf.missing() == [0]
    assert buf.push(0, "a") == ["a", "b", "c"]
    assert buf.next_seq == 3
    assert not buf.has_gap


def test_reorder_releases_none_items() -> None:
    buf: ReorderBuffer[None] = ReorderBuffer()
    assert buf.push(1, None) == []
    assert buf.push(0, None) == [None, None]


def test_reorder_starts_at_start() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(start=100)
    with pytest.raises(DuplicateSeq):
        buf.push(99, 99)
    assert buf.push(100, 100) == [100]


def test_reorder_duplicate_of_released_seq() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer()
    buf.push(0, "a")
    with pytest.raises(DuplicateSeq, match="duplicate seq 0") as info:
        buf.push(0, "again")
    assert info.value.seq == 0
    assert buf.statistics().duplicates_rejected == 1


def test_reorder_duplicate_of_held_seq_keeps_first_item() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer()
    buf.push(1, "first")
    with pytest.raises(DuplicateSeq):
        buf.push(1, "second")
    assert buf.push(0, "zero") == ["zero", "first"]


def test_reorder_overflow_names_the_gap() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(limit=2)
    buf.push(1, 1)
    buf.push(2, 2)
    with pytest.raises(ReorderOverflow, match="waiting for seq 0") as info:
        buf.push(3, 3)
    assert (info.value.next_seq, info.value.seq, info.value.limit) == (0, 3, 2)
    assert buf.pending == 2
    # the seq everyone waits for is always accepted, even at the limit
    assert buf.push(0, 0) == [0, 1, 2]
    assert buf.push(3, 3) == [3]


def test_reorder_limit_zero_demands_strict_order() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(limit=0)
    assert buf.push(0, 0) == [0]
    with pytest.raises(ReorderOverflow):
        buf.push(2, 2)


def test_reorder_unbounded() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(limit=None)
    for seq in range(5000, 0, -1):
        assert buf.push(seq, seq) == []
    assert buf.push(0, 0) == list(range(5001))
    assert buf.statistics().limit is None


def test_reorder_missing_lists_gaps_below_highest() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(start=10)
    for seq in (12, 13, 16):
        buf.push(seq, seq)
    assert buf.missing() == [10, 11, 14, 15]
    assert buf.missing(at_most=3) == [10, 11, 14]
    assert buf.missing(at_most=0) == []


def test_reorder_missing_of_a_far_ahead_item_can_be_capped() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer()
    buf.push(10**12, 0)
    assert buf.missing(at_most=2) == [0, 1]


def test_reorder_statistics() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer(limit=1)
    buf.push(0, "a")
    buf.push(2, "c")
    with pytest.raises(ReorderOverflow):
        buf.push(3, "d")
    with pytest.raises(DuplicateSeq):
        buf.push(0, "a")
    stats = buf.statistics()
    assert stats.held == 1
    assert stats.limit == 1
    assert stats.next_seq == 1
    assert stats.released == 1
    assert stats.duplicates_rejected == 1
    assert stats.overflows_rejected == 1


@pytest.mark.parametrize(("start", "limit"), [(-1, 10), (0, -1)])
def test_reorder_rejects_invalid_arguments(start: int, limit: int) -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        ReorderBuffer(start=start, limit=limit)


# -- ReorderBuffer: properties -----------------------------------------------


@PROPERTY
@given(
    start=st.integers(0, 10**6),
    order=st.integers(0, 200).flatmap(lambda n: st.permutations(range(n))),
)
def test_reorder_any_permutation_is_released_in_order(start: int, order: list[int]) -> None:
    n = len(order)
    buf: ReorderBuffer[int] = ReorderBuffer(start=start, limit=n)
    released: list[int] = []
    for offset in order:
        released.extend(buf.push(start + offset, offset))
        assert buf.pending <= n
    assert released == list(range(n))
    assert buf.next_seq == start + n
    assert buf.pending == 0
    assert buf.missing() == []
    assert buf.statistics().released == n


@PROPERTY
@given(
    order=st.integers(1, 60).flatmap(lambda n: st.permutations(range(n))),
    cut=st.integers(0, 60),
    data=st.data(),
)
def test_reorder_duplicates_leave_state_unchanged(
    order: list[int], cut: int, data: st.DataObject
) -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(limit=None)
    pushed = order[: min(cut, len(order) - 1) + 1]
    for seq in pushed:
        buf.push(seq, seq)
    dup = data.draw(st.sampled_from(pushed))
    before = buf.statistics()
    missing = buf.missing()
    with pytest.raises(DuplicateSeq):
        buf.push(dup, -1)
    after = buf.statistics()
    assert after._replace(duplicates_rejected=before.duplicates_rejected) == before
    assert after.duplicates_rejected == before.duplicates_rejected + 1
    assert buf.missing() == missing


@PROPERTY
@given(
    start=st.integers(0, 5),
    limit=st.one_of(st.none(), st.integers(0, 8)),
    seqs=st.lists(st.integers(0, 40), max_size=120),
)
def test_reorder_matches_a_simple_model(start: int, limit: int | None, seqs: list[int]) -> None:
    """Every push is released, held, or refused exactly as a naive model says."""
    buf: ReorderBuffer[int] = ReorderBuffer(start=start, limit=limit)
    next_seq = start
    held: set[int] = set()
    for seq in seqs:
        before = buf.statistics()
        if seq < next_seq or seq in held:
            with pytest.raises(DuplicateSeq):
                buf.push(seq, seq)
            assert buf.statistics().next_seq == before.next_seq
        elif seq == next_seq:
            expected = [seq]
            while expected[-1] + 1 in held:
                held.remove(expected[-1] + 1)
                expected.append(expected[-1] + 1)
            assert buf.push(seq, seq) == expected
            next_seq = expected[-1] + 1
        elif limit is not None and len(held) >= limit:
            with pytest.raises(ReorderOverflow):
                buf.push(seq, seq)
            after = buf.statistics()
            assert after._replace(overflows_rejected=before.overflows_rejected) == before
        else:
            assert buf.push(seq, seq) == []
            held.add(seq)
        assert buf.next_seq == next_seq
        assert buf.pending == len(held)
        assert buf.has_gap == bool(held)
        if limit is not None:
            assert buf.pending <= limit
        top = max(held, default=next_seq)
        assert buf.missing() == [s for s in range(next_seq, top) if s not in held]
