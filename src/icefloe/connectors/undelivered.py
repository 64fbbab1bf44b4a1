"""The records a sink gave up on, kept until its next flush reports them.

Every sink reports failed deliveries the same way: whatever failed since the
last :meth:`~icefloe.connectors.protocol.Sink.flush` is raised by the next
one as :class:`~icefloe.connectors.protocol.DeliveryFailed`, then forgotten.
Memory: one entry per failed record between two flushes, which a sink's
bounded window of unconfirmed records bounds per flush.
"""

from __future__ import annotations

from collections.abc import Iterable

from icefloe.connectors.protocol import DeliveryFailed
from icefloe.connectors.record import Record

__all__ = ["Undelivered"]


class Undelivered:
    """Failed records and why, since the last :meth:`report`."""

    __slots__ = ("_failures",)

    def __init__(self) -> None:
        self._failures: list[tuple[Record, str]] = []

    def __len__(self) -> int:
        return len(self._failures)

    def add(self, record: Record, reason: str) -> None:
        """``record`` will not be delivered, because of ``reason``."""
        self._failures.append((record, reason))

    def add_all(self, records: Iterable[Record], reason: str) -> None:
        """Every one of ``records`` failed for the same ``reason``."""
        self._failures.extend((record, reason) for record in records)

    def report(self) -> None:
        """Raise what failed since the last report, and forget it.

        :raises DeliveryFailed: with every failed record, when there is one.
        """
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryFailed(failures)
