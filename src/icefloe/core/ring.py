"""A bounded FIFO for one subscriber, with a named policy for when it is full.

:class:`Ring` holds at most ``max_items`` items and at most ``max_bytes``
bytes (each item's size is given by the caller when it is offered). It
never waits: :meth:`Ring.offer` decides at once and says what happened, and
the caller (the hub) carries out the waiting or disconnecting itself.

What happens when an item does not fit, by :class:`Overflow` policy:

================  ============================================================
``drop_oldest``   the oldest items are evicted until it fits; the offer is
                  accepted (``DROPPED_OLDEST`` with how many were evicted)
``drop_newest``   the offered item is discarded (``DROPPED_NEWEST``)
``disconnect``    nothing changes (``DISCONNECT``); the caller ends the reader
``block``         nothing changes (``WOULD_BLOCK``); the caller waits for room
                  and offers again
================  ============================================================

An item larger than ``max_bytes`` can never fit and is refused with
``ValueError`` before anything is counted.

Counters are exact. Over the life of a ring::

    offered  == accepted + dropped_newest + would_block + disconnects
    accepted == taken + dropped_oldest + len(ring)

so once it is drained, items out == accepted - dropped_oldest.

Several rings may share a :class:`ByteLedger`: a running total of the bytes
they hold together, kept exact on every change, so that a global byte
budget can be checked in O(1) without visiting each ring.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections import deque
from typing import Final, Generic, NamedTuple, TypeVar

from icefloe.core.checks import check_int

__all__ = ["ByteLedger", "OfferResult", "Outcome", "Overflow", "Ring", "RingStatistics"]

T = TypeVar("T")


class Overflow(enum.StrEnum):
    """What a full :class:`Ring` does with one more item."""

    #: evict the oldest items to make room; the reader sees the newest
    DROP_OLDEST = "drop_oldest"
    #: discard the offered item; the reader sees the oldest
    DROP_NEWEST = "drop_newest"
    #: refuse it and tell the caller to end the reader (it is too slow)
    DISCONNECT = "disconnect"
    #: refuse it and tell the caller to wait for room (backpressure)
    BLOCK = "block"


class Outcome(enum.IntEnum):
    """What :meth:`Ring.offer` did."""

    #: the item was appended with room to spare
    ACCEPTED = 0
    #: the item was appended after evicting ``OfferResult.dropped`` oldest items
    DROPPED_OLDEST = 1
    #: the item was discarded (policy ``drop_newest``)
    DROPPED_NEWEST = 2
    #: the item was refused; wait for room and offer again (policy ``block``)
    WOULD_BLOCK = 3
    #: the item was refused; the reader should be ended (policy ``disconnect``)
    DISCONNECT = 4


class OfferResult(NamedTuple):
    """The outcome of one :meth:`Ring.offer`."""

    #: what happened
    outcome: Outcome
    #: oldest items evicted to make room (non-zero only for ``DROPPED_OLDEST``)
    dropped: int = 0

    @property
    def accepted(self) -> bool:
        """Whether the offered item is now in the ring."""
        return self.outcome <= Outcome.DROPPED_OLDEST


# Shared results: the common outcomes allocate nothing.
_ACCEPTED: Final = OfferResult(Outcome.ACCEPTED)
#: DROPPED_OLDEST results by eviction count, for the counts a steady overflow produces
_DROPPED_OLDEST: Final = tuple(OfferResult(Outcome.DROPPED_OLDEST, n) for n in range(17))
# Enum members bound once: attribute access on an enum class is slow.
_DROP_OLDEST: Final = Overflow.DROP_OLDEST
_DROP_NEWEST: Final = Overflow.DROP_NEWEST
_BLOCK: Final = Overflow.BLOCK


class ByteLedger:
    """The bytes held by every ring that shares this ledger, kept exact.

    :attr:`held` goes up when a ring accepts an item and down when it
    evicts, hands out or drains one.
    """

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = 0

    def __repr__(self) -> str:
        return f"ByteLedger(held={self.held})"


_DROPPED_NEWEST: Final = OfferResult(Outcome.DROPPED_NEWEST)
_WOULD_BLOCK: Final = OfferResult(Outcome.WOULD_BLOCK)
_DISCONNECT: Final = OfferResult(Outcome.DISCONNECT)


class RingStatistics(NamedTuple):
    """A snapshot of a :class:`Ring`."""

    #: items held now
    used: int
    #: the most items held at once
    max_items: int
    #: bytes held now (sum of the sizes given to ``offer``)
    used_bytes: int
    #: the most bytes held at once (``None``: no byte limit)
    max_bytes: int | None
    #: what a full ring does
    overflow: Overflow
    #: ``offer`` calls counted (refusals of oversized items excluded)
    offered: int
    #: items appended (including those that evicted older ones)
    accepted: int
    #: items removed by ``take``/``drain``
    taken: int
    #: items evicted to make room (``drop_oldest``)
    dropped_oldest: int
    #: offered items discarded (``drop_newest``)
    dropped_newest: int
    #: offers refused for lack of room (``block``)
    would_block: int
    #: offers refused for lack of room (``disconnect``)
    disconnects: int


class Ring(Generic[T]):
    """A bounded FIFO in items and bytes with an :class:`Overflow` policy.

    :param max_items: the most items held at once; an int >= 1.
    :param max_bytes: the most bytes held at once, in the caller's units of
        item size; an int >= 1, or ``None`` for no byte limit (then only
        ``max_items`` bounds memory).
    :param overflow: the policy for an item that does not fit; an
        :class:`Overflow` or its string value. Default ``drop_oldest``.
    :param ledger: a :class:`ByteLedger` shared with other rings, kept up to
        date with this ring's bytes.
    :raises ValueError: if a limit or the policy is invalid.
    """

    __slots__ = (
        "_accepted",
        "_byte_limit",
        "_bytes",
        "_disconnects",
        "_dropped_newest",
        "_dropped_oldest",
        "_items",
        "_ledger",
        "_max_bytes",
        "_max_items",
        "_overflow",
        "_sizes",
        "_would_block",
    )

    def __init__(
        self,
        max_items: int,
        max_bytes: int | None = None,
        overflow: Overflow | str = Overflow.DROP_OLDEST,
        *,
        ledger: ByteLedger | None = None,
    ) -> None:
        check_int("max_items", max_items, 1)
        if max_bytes is not None:
            check_int("max_bytes", max_bytes, 1)
        try:
            policy = Overflow(overflow)
        except ValueError:
            allowed = ", ".join(repr(p.value) for p in Overflow)
            raise ValueError(f"overflow must be one of {allowed}, got {overflow!r}") from None
        self._max_items = max_items
        self._max_bytes = max_bytes
        # A float so the fast path is one comparison whether or not bytes are limited.
        self._byte_limit: float = math.inf if max_bytes is None else max_bytes
        self._overflow = policy
        self._items: deque[T] = deque()
        self._sizes: deque[int] = deque()
        self._bytes = 0
        # A private ledger when none is shared: one code path, no None checks.
        self._ledger = ledger if ledger is not None else ByteLedger()
        # ``offered`` and ``taken`` are not counted but derived from these
        # (see the module docstring): offer and take run once per item.
        self._accepted = 0
        self._dropped_oldest = 0
        self._dropped_newest = 0
        self._would_block = 0
        self._disconnects = 0

    def __repr__(self) -> str:
        return (
            f"Ring(used={len(self._items)}/{self._max_items}, "
            f"bytes={self._bytes}/{self._max_bytes}, overflow={self._overflow.value!r})"
        )

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    @property
    def overflow(self) -> Overflow:
        return self._overflow

    @property
    def max_items(self) -> int:
        return self._max_items

    @property
    def max_bytes(self) -> int | None:
        return self._max_bytes

    @property
    def used_bytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def has_room(self, size: int = 0) -> bool:
        """Whether an item of ``size`` bytes would be accepted without evicting anything."""
        return len(self._items) < self._max_items and self._bytes + size <= self._byte_limit

    def offer(self, item: T, size: int = 0) -> OfferResult:
        """Try to append ``item``, which counts ``size`` bytes; never waits.

        :raises ValueError: if ``size`` is negative or above ``max_bytes``
            (such an item can never fit); nothing is counted or changed.
        """
        items = self._items
        held = self._bytes + size
        # The common case first; it implies 0 <= size <= max_bytes.
        if len(items) < self._max_items and held <= self._byte_limit and size >= 0:
            items.append(item)
            self._sizes.append(size)
            self._bytes = held
            self._ledger.held += size
            self._accepted += 1
            return _ACCEPTED
        if size < 0 or size > self._byte_limit:
            raise ValueError(
                f"item size must be between 0 and max_bytes ({self._max_bytes}), got {size}"
            )
        policy = self._overflow
        if policy is _DROP_OLDEST:
            return self._evict_for(item, size)
        if policy is _DROP_NEWEST:
            self._dropped_newest += 1
            return _DROPPED_NEWEST
        if policy is _BLOCK:
            self._would_block += 1
            return _WOULD_BLOCK
        self._disconnects += 1
        return _DISCONNECT

    def _evict_for(self, item: T, size: int) -> OfferResult:
        items, sizes = self._items, self._sizes
        held = before = self._bytes
        limit = self._byte_limit - size
        evicted = 0
        # Bytes first; the size check in offer() guarantees this ends with room.
        while held > limit:
            items.popleft()
            held -= sizes.popleft()
            evicted += 1
        # Never more than max_items are held, so one more eviction is enough.
        if len(items) >= self._max_items:
            items.popleft()
            held -= sizes.popleft()
            evicted += 1
        items.append(item)
        sizes.append(size)
        self._bytes = held + size
        self._ledger.held += held + size - before
        self._accepted += 1
        self._dropped_oldest += evicted
        if evicted < len(_DROPPED_OLDEST):
            return _DROPPED_OLDEST[evicted]
        return OfferResult(Outcome.DROPPED_OLDEST, evicted)

    def take(self) -> T:
        """Remove and return the oldest item.

        :raises IndexError: if the ring is empty.
        """
        try:
            item = self._items.popleft()
        except IndexError:
            raise IndexError("take from an empty ring") from None
        size = self._sizes.popleft()
        self._bytes -= size
        self._ledger.held -= size
        return item

    def peek(self) -> T:
        """The oldest item, left in place.

        :raises IndexError: if the ring is empty.
        """
        if not self._items:
            raise IndexError("peek into an empty ring")
        return self._items[0]

    def drain(self) -> list[T]:
        """Remove and return every item, oldest first (they count as taken)."""
        drained = list(self._items)
        self._items.clear()
        self._sizes.clear()
        self._ledger.held -= self._bytes
        self._bytes = 0
        return drained

    def snapshot(self, start: int = 0) -> list[T]:
        """The items from position ``start`` (0 = oldest) to the newest, left in place."""
        return list(itertools.islice(self._items, max(start, 0), None))

    def statistics(self) -> RingStatistics:
        """A snapshot of occupancy, limits and counters."""
        return RingStatistics(
            used=len(self._items),
            max_items=self._max_items,
            used_bytes=self._bytes,
            max_bytes=self._max_bytes,
            overflow=self._overflow,
            offered=(self._accepted + self._dropped_newest + self._would_block + self._disconnects),
            accepted=self._accepted,
            taken=self._accepted - self._dropped_oldest - len(self._items),
            dropped_oldest=self._dropped_oldest,
            dropped_newest=self._dropped_newest,
            would_block=self._would_block,
            disconnects=self._disconnects,
        )
