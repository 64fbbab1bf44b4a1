"""Weighted fair queueing by deficit round robin (Shreedhar and Varghese, 1995).

:class:`DeficitRoundRobin` shares one server (a worker, a connection) among
keys (priority classes, streams, tenants) in proportion to their weights,
whatever the cost of each item, so a flood on one key cannot starve another.
It only queues and chooses; the owner pops when it has capacity to serve.

How it chooses: backlogged keys take turns in a ring. A key's turn adds
``quantum * weight`` to its deficit; it is served while its head item costs
no more than its deficit, each item served subtracting its cost, and then the
turn passes on. A key whose queue empties leaves the ring with its deficit
reset to zero, so idling earns no burst credit; it rejoins at the back of the
ring when something is pushed again.

Guarantees, with every backlogged key's items costing at most ``C``:

* Over any run in which keys stay backlogged, a key's served cost differs
  from ``turns * quantum * weight`` by less than ``C``: served shares converge
  to weight shares.
* A key whose items cost at most ``quantum * weight`` is served on its first
  turn, so it waits at most one turn of every other backlogged key (no
  starvation). Dearer items wait ``ceil(cost / (quantum * weight))`` turns;
  rounds in which no key can afford its head item are skipped in one step,
  so :meth:`DeficitRoundRobin.pop` never spins through empty rounds.
* Items of one key leave in the order they were pushed.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Mapping
from typing import Generic, NamedTuple, TypeVar

from icefloe.core.checks import check_positive
from icefloe.exceptions import WouldBlock

__all__ = ["DeficitRoundRobin", "DeficitRoundRobinStatistics", "DrrKeyStatistics"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


def _check_turn(quantum: float, weight: float) -> None:
    # A turn's credit must be a usable float: not 0 (a key that never saves
    # up) and not infinite (a key that is never charged).
    credit = quantum * weight
    if not 0.0 < credit < math.inf:
        raise ValueError(f"quantum * weight must be a finite number > 0, got {credit!r}")


class DrrKeyStatistics(NamedTuple):
    """A snapshot of one key of a :class:`DeficitRoundRobin`."""

    #: items waiting under this key
    queued: int
    #: the key's weight; its share of service is ``weight / sum of backlogged weights``
    weight: float
    #: cost the key may still spend in its current turn (0 when idle)
    deficit: float
    #: total cost of the items popped for this key
    served_cost: float
    #: items popped for this key
    served_items: int
    #: pushes refused because this key's queue held ``max_items``
    refused: int


class DeficitRoundRobinStatistics(NamedTuple, Generic[K]):
    """A snapshot of a :class:`DeficitRoundRobin`."""

    #: items waiting under every key
    queued: int
    #: the per-key queue limit, in items (``None``: unbounded)
    max_items: int | None
    #: cost added to a key's deficit per turn, per unit of weight
    quantum: float
    #: keys known (with a weight), idle or not
    keys: int
    #: keys with queued items, taking turns
    backlogged: int
    #: items pushed since construction
    pushed: int
    #: items popped since construction
    popped: int
    #: pushes refused since construction (a key's queue was full)
    refused: int
    #: per-key snapshots
    per_key: Mapping[K, DrrKeyStatistics]


class _Key(Generic[T]):
    """One key's queue and accounts."""

    __slots__ = (
        "deficit",
        "in_turn",
        "items",
        "refused",
        "served_cost",
        "served_items",
        "weight",
    )

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.items: deque[tuple[T, float]] = deque()
        self.deficit = 0.0
        # True between the turn's quantum being added and the turn passing on.
        self.in_turn = False
        self.served_cost = 0.0
        self.served_items = 0
        self.refused = 0


class DeficitRoundRobin(Generic[K, T]):
    """Weighted fair queue: items pushed under keys, popped in weighted turns.

    :param quantum: cost a key of weight 1 may spend per turn; finite and > 0;
        default 1.0. Choose it at least as large as a typical item's cost so
        most keys are served on every turn; it does not change the long-run
        shares, only how finely turns interleave.
    :param max_items: the most items queued under one key; default 64.
        At the limit :meth:`push` raises :class:`~icefloe.exceptions.WouldBlock`
        and :meth:`try_push` returns ``False`` (nothing is queued either way,
        and the refusal is counted). ``None`` means unbounded, which lets one
        key hold unlimited memory: a bad idea outside tests.
    :param default_weight: the weight of a key first seen by :meth:`push`
        without a prior :meth:`set_weight`; finite and > 0; default 1.0.
    :raises ValueError: if any parameter is out of range.

    Keys are remembered (weight and counters) until :meth:`remove`, even when
    idle; an owner keying by stream must remove finished streams.
    """

    __slots__ = (
        "_default_weight",
        "_keys",
        "_max_items",
        "_popped",
        "_pushed",
        "_quantum",
        "_queued",
        "_refused",
        "_ring",
    )

    def __init__(
        self,
        quantum: float = 1.0,
        max_items: int | None = 64,
        default_weight: float = 1.0,
    ) -> None:
        self._quantum = check_positive("quantum", quantum)
        if max_items is not None and (
            not isinstance(max_items, int) or isinstance(max_items, bool) or max_items < 1
        ):
            raise ValueError(f"max_items must be an int >= 1 or None, got {max_items!r}")
        self._max_items = max_items
        self._default_weight = check_positive("default_weight", default_weight)
        _check_turn(self._quantum, self._default_weight)
        self._keys: dict[K, _Key[T]] = {}
        # The ring of backlogged keys; the key at the left end has the turn.
        self._ring: deque[K] = deque()
        self._queued = 0
        self._pushed = 0
        self._popped = 0
        self._refused = 0

    def __repr__(self) -> str:
        return (
            f"DeficitRoundRobin(quantum={self._quantum}, keys={len(self._keys)}, "
            f"queued={self._queued})"
        )

    def __len__(self) -> int:
        """Items queued under every key."""
        return self._queued

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is known (it has a weight), idle or not."""
        return key in self._keys

    @property
    def quantum(self) -> float:
        """Cost a key of weight 1 may spend per turn."""
        return self._quantum

    @property
    def max_items(self) -> int | None:
        """The per-key queue limit, in items (``None``: unbounded)."""
        return self._max_items

    def weight(self, key: K) -> float:
        """The weight of ``key``.

        :raises KeyError: if the key is unknown.
        """
        return self._lookup(key).weight

    def queued(self, key: K) -> int:
        """Items queued under ``key`` (0 for an unknown key)."""
        state = self._keys.get(key)
        return 0 if state is None else len(state.items)

    def set_weight(self, key: K, weight: float) -> None:
        """Set the weight of ``key``, adding the key if it is new.

        A key in the middle of its turn keeps the deficit it has; the new
        weight applies from its next turn.

        :raises ValueError: if ``weight`` is not a finite number > 0, or
            ``quantum * weight`` underflows to 0 or overflows.
        """
        weight = check_positive("weight", weight)
        _check_turn(self._quantum, weight)
        state = self._keys.get(key)
        if state is None:
            self._keys[key] = _Key(weight)
        else:
            state.weight = weight

    def try_push(self, key: K, item: T, cost: float = 1) -> bool:
        """Queue ``item`` under ``key`` unless that key's queue is full.

        An unknown key is added with ``default_weight``.

        :param cost: what serving the item spends of its key's deficit (bytes,
            tokens, 1 per item, ...); finite and > 0; default 1.
        :returns: ``True`` if queued, ``False`` if the key held ``max_items``
            (counted as refused; nothing changes otherwise).
        :raises ValueError: if ``cost`` is not a finite number > 0.
        """
        cost = check_positive("cost", cost)
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _Key(self._default_weight)
        items = state.items
        if self._max_items is not None and len(items) >= self._max_items:
            state.refused += 1
            self._refused += 1
            return False
        if not items:
            # Back from idle: it waits for its turn at the end of the ring,
            # with no deficit saved from before.
            state.deficit = 0.0
            state.in_turn = False
            self._ring.append(key)
        items.append((item, cost))
        self._queued += 1
        self._pushed += 1
        return True

    def push(self, key: K, item: T, cost: float = 1) -> None:
        """Queue ``item`` under ``key``; like :meth:`try_push` but raises when full.

        :raises WouldBlock: if the key's queue holds ``max_items``; nothing is queued.
        :raises ValueError: if ``cost`` is not a finite number > 0.
        """
        if not self.try_push(key, item, cost):
            raise WouldBlock(f"queue of key {key!r} is full ({self._max_items} items)")

    def pop(self) -> tuple[K, T]:
        """Take the next item in weighted fair order; return ``(key, item)``.

        :raises WouldBlock: if nothing is queued under any key.
        """
        ring = self._ring
        if not ring:
            raise WouldBlock("nothing is queued")
        keys = self._keys
        quantum = self._quantum
        # Turns in a row that served nothing; a whole ring of them means every
        # key is saving up for a head item dearer than its quantum.
        idle_turns = 0
        while True:
            key = ring[0]
            state = keys[key]
            if not state.in_turn:
                state.in_turn = True
                state.deficit += quantum * state.weight
            item, cost = state.items[0]
            if cost <= state.deficit:
                state.items.popleft()
                state.deficit -= cost
                state.served_cost += cost
                state.served_items += 1
                self._queued -= 1
                self._popped += 1
                if not state.items:
                    # Idle keys keep no deficit: no burst credit after idling.
                    state.deficit = 0.0
                    state.in_turn = False
                    ring.popleft()
                return key, item
            state.in_turn = False
            ring.rotate(-1)
            idle_turns += 1
            if idle_turns >= len(ring):
                self._skip_idle_rounds()
                idle_turns = 0

    def _skip_idle_rounds(self) -> None:
        # Every backlogged key has just been offered a turn and none could pay
        # for its head item. Give each the quantum of the rounds that would
        # all be equally fruitless, in one step. floor(min) - 1 is never more
        # than that (float error can only make it one round short, which the
        # caller then plays out).
        keys = self._keys
        quantum = self._quantum
        rounds = min(
            (keys[key].items[0][1] - keys[key].deficit) / (quantum * keys[key].weight)
            for key in self._ring
        )
        skip = math.floor(rounds) - 1
        if skip > 0:
            for key in self._ring:
                state = keys[key]
                state.deficit += skip * quantum * state.weight

    def remove(self, key: K) -> list[T]:
        """Forget ``key``: its weight, its counters and its queue; return the queued items.

        :raises KeyError: if the key is unknown.
        """
        state = self._lookup(key)
        del self._keys[key]
        if state.items:
            self._ring.remove(key)
            self._queued -= len(state.items)
        return [item for item, _cost in state.items]

    def _lookup(self, key: K) -> _Key[T]:
        try:
            return self._keys[key]
        except KeyError:
            raise KeyError(f"unknown key {key!r}") from None

    def statistics(self) -> DeficitRoundRobinStatistics[K]:
        """A snapshot of the queue, its counters and every key's."""
        per_key = {
            key: DrrKeyStatistics(
                queued=len(state.items),
                weight=state.weight,
                deficit=state.deficit,
                served_cost=state.served_cost,
                served_items=state.served_items,
                refused=state.refused,
            )
            for key, state in self._keys.items()
        }
        return DeficitRoundRobinStatistics(
            queued=self._queued,
            max_items=self._max_items,
            quantum=self._quantum,
            keys=len(self._keys),
            backlogged=len(self._ring),
            pushed=self._pushed,
            popped=self._popped,
            refused=self._refused,
            per_key=per_key,
        )
