"""Tests for icefloe.core.drr: DeficitRoundRobin."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.core.drr import DeficitRoundRobin, DrrKeyStatistics
from icefloe.exceptions import WouldBlock

PROPERTY = settings(max_examples=100, deadline=None)


def drain(drr: DeficitRoundRobin[str, int]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    while len(drr):
        out.append(drr.pop())
    return out


# -- basics ------------------------------------------------------------------------


def test_empty_pop_would_block() -> None:
    drr: DeficitRoundRobin[str, int] = DeficitRoundRobin()
    assert len(drr) == 0
    with pytest.raises(WouldBlock, match="nothing is queued"):
        drr.pop()


def test_single_key_is_fifo() -> None:
    drr: DeficitRoundRobin[str, int] = DeficitRoundRobin()
    for i in range(5):
        drr.push("a", i)
    assert drain(drr) == [("a", i) for i in range(5)]


def test_equal_weights_alternate() -> None:
    drr: DeficitRoundRobin[str, int] = DeficitRoundRobin()
    for i in range(3):
        drr.push("a", i)
        drr.push("b", i)
    assert drain(drr) == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]


def test_weights_give_proportional_turns() -> None:
    drr: DeficitRoundRobin[str, int] = DeficitRoundRobin()
    drr.set_weight("a", 3)
    for i in range(6):
        drr.push("a", i)
        drr.push("b", i)
    keys = [key for key, _ in drain(drr)]
    assert keys[:8] == ["a", "a", "a", "b", "a", "a", "a", "b"]


def test_costs_are_charged() -> None:
    # b's items cost 2: with equal weights and quantum 2, a is served twice
    # per turn and b once.
    drr: DeficitRoundRobin[str, int] = DeficitRoundRobin(quantum=2)
    for i in range(4):
        drr.push("a", i, cost=1)
    for i in range(2):
        drr.push("b", i, cost=2)
    assert [key for key, _ in drain(drr)] == ["a", "a", "b", "a", "a", "b"]


def test_item_dearer_than_quantum_waits_turns_without_spinning() -> None:
    drr: DeficitRoundRobin[str, int] = DeficitRoundRobin(quantum=1)
    drr.set_weight("slow", 1e-6)
    drr.push("slow", 0, cost=1e6)
    # 1e12 rounds of saving up are skipped in one step.
    assert drr.pop() == ("slow", 0)
    assert drr.statistics().per_key["slow"].deficit == 0.0


def test_dear_item_waits_its_turns_while_others_are_served() -> None:
    drr: DeficitRoundRobin[str, int] = DeficitRoundRobin(quantum=1)
    drr.push("big", 0, cost=3)
    for i in range(10):
        drr.push("small", i)
    keys = [key for key, _ in drain(drr)]
    # big needs three turns of deficit; small is served once per turn meanwhile.
    assert keys.index("big") == 2
    assert keys.count("small") == 10


def test_push_refused_when_key_is_full() -> None:
    drr: DeficitRoundRobin[str, int] = DeficitRoundRobin(max_items=2)
    drr.push("a", 0)
    drr.push("a", 1)
    with pytest.raises(WouldBlock, match="full"):
        drr.push("a", 2)
    assert not drr.try_push("a", 3)
    assert drr.try_push("b", 0)
    stats = drr.statistics()
    assert stats.refused == 2
    assert stats.per_key["a"].refused == 2
    assert stats.queued == 3
    assert drain(drr) == [("a", 0), ("b", 0), ("a", 1)]


def test_unbounded_queue() -> None:
    drr: DeficitRoundRobin[str, int] = DeficitRoundRobin(max_items=None)
    for i in range(1000):
        drr.push("a", i)
    assert len(drr) == 1000
    assert drr.max_items is None


def test_remove_returns_queued_items_and_forgets_the_key() -> None:
    drr: DeficitRoundRobin[str, int] = DeficitRoundRobin()
    drr.set_weight("a", 2)
    for i in range(3):
        drr.push("a", i)
        drr.push("b", i)
    assert drr.pop() == ("a", 0)
    assert drr.remove("a") == [1, 2]
    assert "a" not in drr
    assert len(drr) == 3
    assert drain(drr) == [("b", 0), ("b", 1), ("b", 2)]
    with pytest.raises(KeyError, match="unknown key"):
        drr.remove("a")
    # An idle key is removed too.
    assert drr.remove("b") == []
    assert drr.statistics().keys == 0


def test_weight_and_queued_lookups() -> None:
    drr: DeficitRoundRobin[str, int] = DeficitRoundRobin(default_weight=2.5)
    drr.push("a", 0)
    assert drr.weight("a") == 2.5
    assert drr.queued("a") == 1
    assert drr.queued("nobody") == 0
    with pytest.raises(KeyError, match="unknown key"):
        drr.weight("nobody")
    drr.set_weight("a", 4)
    assert drr.weight("a") == 4.0


def test_statistics_snapshot() -> None:
    drr: DeficitRoundRobin[str, int] = DeficitRoundRobin(quantum=10, max_items=8)
    drr.set_weight("a", 2)
    drr.push("a", 0, cost=3)
    drr.push("a", 1, cost=4)
    drr.push("b", 0, cost=5)
    assert drr.pop() == ("a", 0)
    stats = drr.statistics()
    assert (stats.queued, stats.max_items, stats.quantum) == (2, 8, 10.0)
    assert (stats.keys, stats.backlogged, stats.pushed, stats.popped) == (2, 2, 3, 1)
    assert stats.per_key["a"] == DrrKeyStatistics(
        queued=1, weight=2.0, deficit=17.0, served_cost=3.0, served_items=1, refused=0
    )
    assert stats.per_key["b"].deficit == 0.0
    assert "DeficitRoundRobin(quantum=10.0" in repr(drr)


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan, True, "1"])
def test_rejects_bad_numbers(bad: object) -> None:
    with pytest.raises(ValueError, match="quantum"):
        DeficitRoundRobin(quantum=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="default_weight"):
        DeficitRoundRobin(default_weight=bad)  # type: ignore[arg-type]
    drr: DeficitRoundRobin[str, int] = DeficitRoundRobin()
    with pytest.raises(ValueError, match="weight"):
        drr.set_weight("a", bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cost"):
        drr.push("a", 0, cost=bad)  # type: ignore[arg-type]
    assert len(drr) == 0


def test_rejects_weights_whose_turn_is_not_a_usable_number() -> None:
    drr: DeficitRoundRobin[str, int] = DeficitRoundRobin(quantum=1e-300)
    with pytest.raises(ValueError, match="quantum \\* weight"):
        drr.set_weight("a", 1e-300)
    with pytest.raises(ValueError, match="quantum \\* weight"):
        DeficitRoundRobin(quantum=1e300, default_weight=1e300)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_rejects_bad_max_items(bad: object) -> None:
    with pytest.raises(ValueError, match="max_items"):
        DeficitRoundRobin(max_items=bad)  # type: ignore[arg-type]


# -- properties ----------------------------------------------------------------------


def _run_backlogged(
    weights: dict[int, float], quantum: float, pops: int, seed: int
) -> dict[int, float]:
    """Pop ``pops`` times keeping every key backlogged; return served cost per key."""
    rng = random.Random(seed)
    drr: DeficitRoundRobin[int, None] = DeficitRoundRobin(quantum=quantum, max_items=4)
    for key, weight in weights.items():
        drr.set_weight(key, weight)
        for _ in range(4):
            drr.push(key, None, cost=rng.uniform(quantum / 100, quantum))
    for _ in range(pops):
        key, _item = drr.pop()
        drr.push(key, None, cost=rng.uniform(quantum / 100, quantum))
    return {key: s.served_cost for key, s in drr.statistics().per_key.items()}


def _assert_shares_within(served: dict[int, float], weights: dict[int, float], rel: float) -> None:
    total_served = sum(served.values())
    total_weight = sum(weights.values())
    for key, weight in weights.items():
        want = weight / total_weight
        got = served[key] / total_served
        assert abs(got - want) <= rel * want, (key, got, want)


def test_acceptance_shares_within_five_percent_of_weights() -> None:
    """Ten keys, random weights and random costs up to the quantum, long run."""
    rng = random.Random(20240601)
    weights = {key: rng.uniform(1.0, 10.0) for key in range(10)}
    served = _run_backlogged(weights, quantum=1500.0, pops=60_000, seed=7)
    _assert_shares_within(served, weights, 0.05)


@PROPERTY
@given(
    weights=st.lists(st.integers(1, 10), min_size=2, max_size=6),
    quantum=st.floats(1.0, 10_000.0),
    seed=st.integers(0, 2**32),
)
def test_backlogged_shares_converge_to_weights(
    weights: list[int], quantum: float, seed: int
) -> None:
    by_key = {key: float(weight) for key, weight in enumerate(weights)}
    # About 100 rounds: each round pops ~2 items per unit of weight
    # (mean cost is about half the quantum).
    pops = 200 * sum(weights)
    served = _run_backlogged(by_key, quantum, pops, seed)
    _assert_shares_within(served, by_key, 0.05)


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(0, 4), st.floats(0.1, 3.0)),
        st.tuples(st.just("pop"), st.just(0), st.just(0.0)),
    ),
    max_size=300,
)


@PROPERTY
@given(ops=_ops, weights=st.lists(st.floats(0.2, 5.0), min_size=5, max_size=5))
def test_fifo_within_each_key(ops: list[tuple[str, int, float]], weights: list[float]) -> None:
    drr: DeficitRoundRobin[int, int] = DeficitRoundRobin(max_items=None)
    for key, weight in enumerate(weights):
        drr.set_weight(key, weight)
    counter = 0
    popped: dict[int, list[int]] = defaultdict(list)
    for op, key, cost in ops:
        if op == "push":
            drr.push(key, counter, cost=cost)
            counter += 1
        elif len(drr):
            got_key, item = drr.pop()
            popped[got_key].append(item)
    while len(drr):
        got_key, item = drr.pop()
        popped[got_key].append(item)
    assert sum(len(items) for items in popped.values()) == counter
    for items in popped.values():
        assert items == sorted(items)


@PROPERTY
@given(
    ops=_ops,
    weights=st.lists(st.floats(0.2, 5.0), min_size=5, max_size=5),
    quantum=st.floats(0.5, 4.0),
)
def test_idle_keys_hold_no_deficit(
    ops: list[tuple[str, int, float]], weights: list[float], quantum: float
) -> None:
    drr: DeficitRoundRobin[int, None] = DeficitRoundRobin(quantum=quantum, max_items=None)
    for key, weight in enumerate(weights):
        drr.set_weight(key, weight)
    for op, key, cost in ops:
        if op == "push":
            drr.push(key, None, cost=cost)
        elif len(drr):
            drr.pop()
        stats = drr.statistics()
        for key_stats in stats.per_key.values():
            assert key_stats.deficit >= 0.0
            if key_stats.queued == 0:
                assert key_stats.deficit == 0.0
        assert stats.queued == sum(s.queued for s in stats.per_key.values())


@PROPERTY
@given(
    weights=st.lists(st.floats(0.5, 4.0), min_size=2, max_size=5),
    quantum=st.floats(1.0, 100.0),
    seed=st.integers(0, 2**32),
)
def test_no_burst_after_idling(weights: list[float], quantum: float, seed: int) -> None:
    """A key returning from idle gets no more than one turn's worth before others."""
    rng = random.Random(seed)
    drr: DeficitRoundRobin[int, None] = DeficitRoundRobin(quantum=quantum, max_items=None)
    for key, weight in enumerate(weights):
        drr.set_weight(key, weight)
    cost = quantum * min(weights) / 4
    for key in range(1, len(weights)):
        for _ in range(200):
            drr.push(key, None, cost=cost)
    # Key 0 idles while the others are served for a long time.
    for _ in range(rng.randint(10, 100)):
        drr.pop()
    for _ in range(200):
        drr.push(0, None, cost=cost)
    # Until every other backlogged key has had a turn, key 0 may take at most
    # one turn's worth of items.
    served_in_a_row = 0
    seen_others: set[int] = set()
    backlogged_others = {k for k, s in drr.statistics().per_key.items() if k and s.queued}
    while seen_others != backlogged_others:
        key, _ = drr.pop()
        if key == 0:
            served_in_a_row += 1
        else:
            seen_others.add(key)
    assert served_in_a_row <= math.floor(quantum * weights[0] / cost) + 1


@PROPERTY
@given(
    weights=st.lists(st.floats(1.0, 8.0), min_size=2, max_size=6),
    quantum=st.floats(1.0, 1000.0),
    low=st.floats(0.05, 1.0),
    seed=st.integers(0, 2**32),
)
def test_every_backlogged_key_is_served_within_a_bounded_number_of_pops(
    weights: list[float], quantum: float, low: float, seed: int
) -> None:
    rng = random.Random(seed)
    # Costs in [c_min, c_max] with c_max <= quantum * min weight: a key is
    # served on its first turn, after at most one turn of each other key.
    c_max = quantum
    c_min = low * quantum
    drr: DeficitRoundRobin[int, None] = DeficitRoundRobin(quantum=quantum, max_items=8)
    for key, weight in enumerate(weights):
        drr.set_weight(key, weight)
    # One turn of key j serves at most (carry + quantum * w_j) / c_min items.
    turn = [math.floor((c_max + quantum * w) / c_min) for w in weights]
    bound = [sum(turn) - turn[key] + 1 for key in range(len(weights))]
    waited: Counter[int] = Counter()
    for _ in range(1000):
        key = rng.randrange(len(weights))
        drr.try_push(key, None, cost=rng.uniform(c_min, c_max))
        if not len(drr):
            continue
        served, _ = drr.pop()
        waited[served] = 0
        for other in range(len(weights)):
            if other != served and drr.queued(other):
                waited[other] += 1
        for other, pops in waited.items():
            assert pops <= bound[other]


@PROPERTY
@given(
    weights=st.lists(st.floats(0.01, 100.0), min_size=1, max_size=4),
    costs=st.lists(st.floats(0.01, 1e6), min_size=1, max_size=20),
)
def test_pop_always_terminates_with_dear_items(weights: list[float], costs: list[float]) -> None:
    drr: DeficitRoundRobin[int, int] = DeficitRoundRobin(quantum=0.5, max_items=None)
    for key, weight in enumerate(weights):
        drr.set_weight(key, weight)
    for i, cost in enumerate(costs):
        drr.push(i % len(weights), i, cost=cost)
    seen = [item for _, item in (drr.pop() for _ in range(len(costs)))]
    assert sorted(seen) == list(range(len(costs)))
    assert drr.statistics().popped == len(costs)
