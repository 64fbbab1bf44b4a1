"""Tests for icefloe.core.ring: the bounded per-subscriber buffer and its overflow policies."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.core.ring import ByteLedger, OfferResult, Outcome, Overflow, Ring, RingStatistics

PROPERTY = settings(max_examples=200, deadline=None)


# -- construction --------------------------------------------------------------------


@pytest.mark.parametrize("max_items", [0, -1, 1.5, True, "2", None])
def test_invalid_max_items(max_items: object) -> None:
    with pytest.raises(ValueError, match="max_items must be an int >= 1"):
        Ring(max_items)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_bytes", [0, -5, 2.0, False])
def test_invalid_max_bytes(max_bytes: object) -> None:
    with pytest.raises(ValueError, match="max_bytes must be an int >= 1"):
        Ring(4, max_bytes)  # type: ignore[arg-type]


def test_invalid_policy_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"overflow must be one of 'drop_oldest'.*got 'lossy'"):
        Ring(4, overflow="lossy")


def test_policy_accepts_its_string_value() -> None:
    assert Ring(4, overflow="block").overflow is Overflow.BLOCK
    assert Overflow("drop_newest") is Overflow.DROP_NEWEST
    assert Overflow.DISCONNECT.value == "disconnect"


def test_new_ring_statistics() -> None:
    ring: Ring[str] = Ring(3, 100)
    assert ring.statistics() == RingStatistics(
        used=0,
        max_items=3,
        used_bytes=0,
        max_bytes=100,
        overflow=Overflow.DROP_OLDEST,
        offered=0,
        accepted=0,
        taken=0,
        dropped_oldest=0,
        dropped_newest=0,
        would_block=0,
        disconnects=0,
    )
    assert not ring
    assert len(ring) == 0
    assert repr(ring) == "Ring(used=0/3, bytes=0/100, overflow='drop_oldest')"


# -- each policy ---------------------------------------------------------------------


def test_drop_oldest_evicts_by_count() -> None:
    ring: Ring[int] = Ring(2)
    assert ring.offer(1) == OfferResult(Outcome.ACCEPTED)
    assert ring.offer(2).accepted
    result = ring.offer(3)
    assert result == OfferResult(Outcome.DROPPED_OLDEST, 1)
    assert result.accepted
    assert ring.drain() == [2, 3]
    assert ring.statistics().dropped_oldest == 1


def test_drop_oldest_evicts_as_many_as_the_bytes_need() -> None:
    ring: Ring[str] = Ring(10, max_bytes=10)
    for item in "abcd":
        ring.offer(item, 2)
    result = ring.offer("big", 7)
    assert result == OfferResult(Outcome.DROPPED_OLDEST, 3)
    assert ring.drain() == ["d", "big"]


def test_drop_newest_keeps_the_oldest() -> None:
    ring: Ring[int] = Ring(2, overflow="drop_newest")
    ring.offer(1)
    ring.offer(2)
    result = ring.offer(3)
    assert result == OfferResult(Outcome.DROPPED_NEWEST)
    assert not result.accepted
    assert ring.drain() == [1, 2]


@pytest.mark.parametrize(
    ("policy", "outcome", "counter"),
    [
        ("block", Outcome.WOULD_BLOCK, "would_block"),
        ("disconnect", Outcome.DISCONNECT, "disconnects"),
    ],
)
def test_refusing_policies_change_nothing(policy: str, outcome: Outcome, counter: str) -> None:
    ring: Ring[int] = Ring(1, overflow=policy)
    ring.offer(1)
    before = ring.statistics()
    assert ring.offer(2) == OfferResult(outcome)
    after = ring.statistics()
    assert getattr(after, counter) == 1
    assert after.offered == before.offered + 1
    assert after.used == 1
    assert ring.peek() == 1


def test_byte_limit_alone_refuses() -> None:
    ring: Ring[str] = Ring(100, max_bytes=5, overflow="block")
    assert ring.offer("abc", 3).accepted
    assert ring.has_room(2)
    assert not ring.has_room(3)
    assert ring.offer("de", 3).outcome is Outcome.WOULD_BLOCK
    assert ring.used_bytes == 3


@pytest.mark.parametrize("size", [-1, 11])
def test_an_impossible_size_is_refused_and_not_counted(size: int) -> None:
    ring: Ring[str] = Ring(4, max_bytes=10)
    with pytest.raises(ValueError, match="item size must be between 0 and max_bytes"):
        ring.offer("x", size)
    assert ring.statistics().offered == 0


def test_without_a_byte_limit_any_size_fits() -> None:
    ring: Ring[str] = Ring(2)
    assert ring.offer("x", 10**12).accepted
    assert ring.used_bytes == 10**12


def test_take_peek_and_empty_errors() -> None:
    ring: Ring[str] = Ring(3)
    with pytest.raises(IndexError, match="empty ring"):
        ring.take()
    with pytest.raises(IndexError, match="empty ring"):
        ring.peek()
    ring.offer("a", 1)
    ring.offer("b", 2)
    assert ring.peek() == "a"
    assert ring.take() == "a"
    assert ring.used_bytes == 2
    assert ring.statistics().taken == 1


def test_snapshot_leaves_items_in_place() -> None:
    ring: Ring[int] = Ring(5)
    for i in range(4):
        ring.offer(i)
    assert ring.snapshot() == [0, 1, 2, 3]
    assert ring.snapshot(2) == [2, 3]
    assert ring.snapshot(9) == []
    assert ring.snapshot(-3) == [0, 1, 2, 3]
    assert len(ring) == 4


def test_many_evictions_at_once() -> None:
    ring: Ring[int] = Ring(100, max_bytes=100)
    for i in range(50):
        ring.offer(i, 2)
    assert ring.offer(50, 100) == OfferResult(Outcome.DROPPED_OLDEST, 50)


def test_a_shared_ledger_tracks_every_ring() -> None:
    ledger = ByteLedger()
    a: Ring[str] = Ring(2, ledger=ledger)
    b: Ring[str] = Ring(2, overflow="drop_newest", ledger=ledger)
    a.offer("x", 3)
    a.offer("y", 4)
    a.offer("z", 5)  # evicts x
    b.offer("p", 10)
    b.offer("q", 1)
    b.offer("r", 7)  # dropped
    assert ledger.held == 4 + 5 + 10 + 1
    a.take()
    b.drain()
    assert ledger.held == 5
    assert repr(ledger) == "ByteLedger(held=5)"


def test_drain_counts_as_taken() -> None:
    ring: Ring[int] = Ring(5)
    for i in range(3):
        ring.offer(i, 4)
    assert ring.drain() == [0, 1, 2]
    stats = ring.statistics()
    assert (stats.used, stats.used_bytes, stats.taken) == (0, 0, 3)


# -- properties ----------------------------------------------------------------------

ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("offer"), st.integers(0, 6)),
        st.tuples(st.just("take"), st.just(0)),
        st.tuples(st.just("drain"), st.just(0)),
    ),
    max_size=60,
)


@PROPERTY
@given(
    policy=st.sampled_from(list(Overflow)),
    max_items=st.integers(1, 5),
    max_bytes=st.none() | st.integers(6, 15),
    actions=ACTIONS,
)
def test_ring_matches_a_model_and_keeps_its_invariants(
    policy: Overflow, max_items: int, max_bytes: int | None, actions: list[tuple[str, int]]
) -> None:
    ledger = ByteLedger()
    ring: Ring[int] = Ring(max_items, max_bytes, policy, ledger=ledger)
    model: deque[tuple[int, int]] = deque()
    out: list[int] = []
    offered: list[int] = []
    counts = dict.fromkeys(("newest", "oldest", "block", "disconnect"), 0)
    limit = max_bytes if max_bytes is not None else float("inf")

    def fits(extra: int) -> bool:
        held = sum(s for _, s in model)
        return len(model) < max_items and held + extra <= limit

    for n, (action, size) in enumerate(actions):
        if action == "offer":
            offered.append(n)
            result = ring.offer(n, size)
            if fits(size):
                model.append((n, size))
                assert result == (Outcome.ACCEPTED, 0)
            elif policy is Overflow.DROP_OLDEST:
                evicted = 0
                while not fits(size):
                    model.popleft()
                    evicted += 1
                model.append((n, size))
                assert result == (Outcome.DROPPED_OLDEST, evicted)
                counts["oldest"] += evicted
            else:
                expected = {
                    Overflow.DROP_NEWEST: (Outcome.DROPPED_NEWEST, "newest"),
                    Overflow.BLOCK: (Outcome.WOULD_BLOCK, "block"),
                    Overflow.DISCONNECT: (Outcome.DISCONNECT, "disconnect"),
                }[policy]
                assert result.outcome is expected[0]
                counts[expected[1]] += 1
        elif action == "take":
            if model:
                assert ring.take() == model.popleft()[0]
                out.append(len(out))
            else:
                with pytest.raises(IndexError):
                    ring.take()
        else:
            drained = ring.drain()
            assert drained == [item for item, _ in model]
            out.extend(drained)
            model.clear()
        stats = ring.statistics()
        # Never over a limit.
        assert stats.used <= max_items
        if max_bytes is not None:
            assert stats.used_bytes <= max_bytes
        assert stats.used == len(model)
        assert stats.used_bytes == sum(s for _, s in model) == ledger.held
        # Exact counters.
        assert stats.offered == len(offered)
        assert stats.offered == (
            stats.accepted + stats.dropped_newest + stats.would_block + stats.disconnects
        )
        assert stats.accepted == stats.taken + stats.dropped_oldest + stats.used
        assert stats.dropped_oldest == counts["oldest"]
        assert stats.dropped_newest == counts["newest"]
        assert stats.would_block == counts["block"]
        assert stats.disconnects == counts["disconnect"]
    final = ring.drain()
    stats = ring.statistics()
    assert stats.taken == stats.accepted - stats.dropped_oldest
    assert final == [item for item, _ in model]


@PROPERTY
@given(
    policy=st.sampled_from(list(Overflow)),
    max_items=st.integers(1, 8),
    sizes=st.lists(st.integers(0, 4), max_size=80),
    take_every=st.integers(1, 5),
)
def test_items_come_out_in_fifo_order(
    policy: Overflow, max_items: int, sizes: list[int], take_every: int
) -> None:
    ring: Ring[int] = Ring(max_items, 16, policy)
    taken: list[int] = []
    for n, size in enumerate(sizes):
        ring.offer(n, size)
        if n % take_every == 0 and ring:
            taken.append(ring.take())
    taken.extend(ring.drain())
    assert taken == sorted(taken)
    assert len(set(taken)) == len(taken)
