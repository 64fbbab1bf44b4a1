"""In-order commits: which position a source may commit once records are acked.

A source hands records out in each partition's order and the consumer may
ack them in any order. :class:`InOrderCommits` keeps, per partition, the
positions delivered and not yet committed; an ack advances the partition's
commit point only across an unbroken run of acked records from the oldest
one, so a commit never covers a record that was not processed. No I/O: the
connector stores the position this returns.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["InOrderCommits"]

P = TypeVar("P", bound=Hashable)


class InOrderCommits(Generic[P]):
    """Tracks delivered positions per partition and the prefix acked so far."""

    __slots__ = ("_open", "_pending")

    def __init__(self) -> None:
        # partition -> position -> acked?, in delivery order
        self._pending: dict[str, OrderedDict[P, bool]] = {}
        self._open = 0

    def deliver(self, partition: str, position: P) -> None:
        """Record that ``position`` of ``partition`` was handed out (in partition order).

        :raises ValueError: the position is already outstanding.
        """
        entries = self._pending.setdefault(partition, OrderedDict())
        if position in entries:
            raise ValueError(f"position {position!r} of {partition!r} is already outstanding")
        entries[position] = False
        self._open += 1

    def ack(self, partition: str, position: P) -> P | None:
        """Mark ``position`` processed; the new commit point, or ``None`` if it did not move.

        :raises ValueError: ``position`` was not delivered, or was already acked.
        """
        entries = self._pending.get(partition)
        if entries is None or entries.get(position, True):
            raise ValueError(f"position {position!r} of {partition!r} is not awaiting an ack")
        entries[position] = True
        self._open -= 1
        committed: P | None = None
        while entries:
            first, acked = next(iter(entries.items()))
            if not acked:
                break
            entries.popitem(last=False)
            committed = first
        if not entries:
            del self._pending[partition]
        return committed

    def outstanding(self) -> int:
        """Records delivered and not acked, over every partition."""
        return self._open

    def waiting(self, partition: str) -> int:
        """Records of ``partition`` delivered and not acked."""
        entries = self._pending.get(partition)
        return 0 if entries is None else sum(1 for acked in entries.values() if not acked)
