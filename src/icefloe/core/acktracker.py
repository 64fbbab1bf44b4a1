"""Which position a consumer may commit, when records are acked out of order.

A broker partition hands out records at increasing positions (Kafka
offsets); the application acks them in any order. Committing a position
tells the broker "everything before this is processed", so it may only move
past a record once that record *and every earlier one* is acked: a crash
then never skips an unprocessed record (it may repeat processed ones, which
the consumer's dedup drops).

:class:`AckTracker` holds one partition's delivered-but-not-committable
positions and answers :attr:`~AckTracker.commit_at`, the position to commit.
Positions need not be contiguous (transaction markers take Kafka offsets).
Memory is one entry per delivered record not yet released, which the
caller bounds (the Kafka source's ``max_in_flight``).
"""

from __future__ import annotations

from collections import deque

__all__ = ["AckTracker"]


class AckTracker:
    """One partition's delivered positions, acked in any order, released in order.

    :meth:`deliver` positions in increasing order, :meth:`ack` them in any
    order; :attr:`commit_at` is the first delivered position not acked yet,
    or one past the last delivered when all are acked (``None`` before any
    release). :meth:`rewind` forgets deliveries from a position on, for a
    consumer that seeks back.
    """

    __slots__ = ("_commit_at", "_delivered", "_last", "_pending")

    def __init__(self) -> None:
        # delivered positions not released yet, ascending (acked ones included)
        self._delivered: deque[int] = deque()
        # delivered positions not acked yet
        self._pending: set[int] = set()
        self._commit_at: int | None = None
        self._last = -1

    def __repr__(self) -> str:
        return f"AckTracker(commit_at={self._commit_at}, pending={len(self._pending)})"

    @property
    def commit_at(self) -> int | None:
        """The position to commit: everything before it is acked."""
        return self._commit_at

    @property
    def pending(self) -> int:
        """How many delivered positions are not acked yet."""
        return len(self._pending)

    def deliver(self, position: int) -> None:
        """Record ``position`` as handed out.

        :raises ValueError: ``position`` is not above every position delivered
            and not rewound.
        """
        if position <= self._last:
            raise ValueError(f"position {position} delivered after {self._last}")
        self._last = position
        self._delivered.append(position)
        self._pending.add(position)

    def ack(self, position: int) -> bool:
        """Mark ``position`` processed; False if it is not pending (unknown or acked)."""
        pending = self._pending
        if position not in pending:
            return False
        pending.remove(position)
        delivered = self._delivered
        while delivered and delivered[0] not in pending:
            self._commit_at = delivered.popleft() + 1
        return True

    def rewind(self, position: int) -> int:
        """Forget deliveries at ``position`` and after; returns how many were pending.

        The released prefix (below :attr:`commit_at`) is never forgotten.
        """
        delivered = self._delivered
        dropped = 0
        while delivered and delivered[-1] >= position:
            last = delivered.pop()
            if last in self._pending:
                self._pending.remove(last)
                dropped += 1
        floor = -1 if self._commit_at is None else self._commit_at - 1
        self._last = max(floor, delivered[-1] if delivered else -1, min(self._last, position - 1))
        return dropped
