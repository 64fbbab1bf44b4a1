"""Sequence numbers put back in order by the consumer.

A stream's chunks carry ``seq`` 0, 1, 2, ... (see :class:`~icefloe.core.messages.StreamChunk`),
assigned per producing node by ``runtime/context.py`` (a retry rewinds them,
which a forward-only counter could not express, so no sequencer object is
kept). :class:`ReorderBuffer` takes items that may arrive out of order
(parallel paths, broker partitions, retries) and releases them strictly in
``seq`` order, holding at most ``limit`` items while it waits for a gap to fill.
"""

from __future__ import annotations

from typing import Generic, NamedTuple, TypeVar

from icefloe.exceptions import DuplicateSeq, ReorderOverflow

__all__ = ["ReorderBuffer", "ReorderBufferStatistics"]

T = TypeVar("T")

#: default for :class:`ReorderBuffer` ``limit``, in items
DEFAULT_REORDER_LIMIT = 1024


def _check_seq_start(start: int) -> None:
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")


class ReorderBufferStatistics(NamedTuple):
    """A snapshot of a :class:`ReorderBuffer`."""

    #: items held out of order, waiting for a gap to fill
    held: int
    #: the most items that may be held (``None``: unbounded)
    limit: int | None
    #: the seq that must arrive before anything more is released
    next_seq: int
    #: items released in order since construction
    released: int
    #: pushes refused with :exc:`~icefloe.exceptions.DuplicateSeq`
    duplicates_rejected: int
    #: pushes refused with :exc:`~icefloe.exceptions.ReorderOverflow`
    overflows_rejected: int


class ReorderBuffer(Generic[T]):
    """Releases ``(seq, item)`` pairs strictly in seq order, whatever order they arrive in.

    :meth:`push` returns the items it releases; an item that arrives early is
    held until every seq before it has arrived.

    :param start: the first seq expected (``0``, or where a resumed stream
        restarts).
    :param limit: the most items held out of order, in items; default 1024.
        At the limit, a push that would need holding one more raises
        :exc:`~icefloe.exceptions.ReorderOverflow` and changes nothing. ``0``
        demands strict order. ``None`` means unbounded, which is a bad idea: a
        single lost seq then makes the buffer grow without end.
    :raises ValueError: if ``start`` or ``limit`` is negative.
    """

    __slots__ = ("_duplicates", "_held", "_limit", "_next", "_overflows", "_released")

    def __init__(self, start: int = 0, limit: int | None = DEFAULT_REORDER_LIMIT) -> None:
        _check_seq_start(start)
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {limit}")
        self._next = start
        self._limit = limit
        # Invariant: every held seq is > _next, so _next itself is never held
        # and the buffer has a gap exactly when it holds anything.
        self._held: dict[int, T] = {}
        self._released = 0
        self._duplicates = 0
        self._overflows = 0

    def __repr__(self) -> str:
        return f"ReorderBuffer(next_seq={self._next}, held={len(self._held)}, limit={self._limit})"

    @property
    def next_seq(self) -> int:
        """The seq that must arrive before anything more is released."""
        return self._next

    @property
    def pending(self) -> int:
        """How many items are held out of order."""
        return len(self._held)

    @property
    def has_gap(self) -> bool:
        """Whether items are held waiting for an earlier seq."""
        return bool(self._held)

    def push(self, seq: int, item: T) -> list[T]:
        """Accept ``item`` as ``seq`` and return the items this releases, in order.

        The list is empty when ``item`` has to be held.

        :raises DuplicateSeq: if ``seq`` was already released or is already
            held; nothing changes, so the caller may simply drop the item.
        :raises ReorderOverflow: if holding ``item`` would exceed ``limit``;
            nothing changes.
        """
        nxt = self._next
        if seq == nxt:
            if not self._held:
                # The common case: in order with nothing waiting.
                self._next = nxt + 1
                self._released += 1
                return [item]
            return self._release_from(item)
        if seq < nxt or seq in self._held:
            self._duplicates += 1
            raise DuplicateSeq(seq)
        limit = self._limit
        if limit is not None and len(self._held) >= limit:
            self._overflows += 1
            raise ReorderOverflow(nxt, seq, limit)
        self._held[seq] = item
        return []

    def _release_from(self, item: T) -> list[T]:
        # ``item`` fills the gap at _next; drain the run of held seqs after it.
        held = self._held
        out = [item]
        nxt = self._next + 1
        while nxt in held:
            out.append(held.pop(nxt))
            nxt += 1
        self._next = nxt
        self._released += len(out)
        return out

    def drain_held(self) -> list[T]:
        """Remove and return every held item, in seq order (``next_seq`` is kept).

        For a consumer giving up on a gap: the items can then be acked or
        dead-lettered instead of vanishing with the buffer.
        """
        held = self._held
        out = [held[seq] for seq in sorted(held)]
        held.clear()
        return out

    def missing(self, at_most: int | None = None) -> list[int]:
        """The seqs not yet arrived below the highest held one, ascending.

        One far-ahead item can make this range wide, so ``at_most`` caps the
        length of the list (``None``: no cap).
        """
        if not self._held:
            return []
        highest = max(self._held)
        held = self._held
        gaps: list[int] = []
        for seq in range(self._next, highest):
            if at_most is not None and len(gaps) >= at_most:
                break
            if seq not in held:
                gaps.append(seq)
        return gaps

    def statistics(self) -> ReorderBufferStatistics:
        """A snapshot of the buffer's fill level and counters."""
        return ReorderBufferStatistics(
            held=len(self._held),
            limit=self._limit,
            next_seq=self._next,
            released=self._released,
            duplicates_rejected=self._duplicates,
            overflows_rejected=self._overflows,
        )
