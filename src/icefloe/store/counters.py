"""The counters a store object keeps of its own work, for :class:`StoreStatistics`.

The remote stores (:mod:`icefloe.store.postgres`, :mod:`icefloe.store.redis`)
count the same things at the same points: a run created, and each append's
chunks written, duplicates skipped and checkpoint. They count this object's
calls since it was made, not what the server holds.
"""

from __future__ import annotations

from icefloe.store.types import StoreStatistics

__all__ = ["StoreCounters"]


class StoreCounters:
    """Runs created, chunks written and skipped, checkpoints written."""

    __slots__ = ("_checkpoints", "_created", "_skipped", "_written")

    def __init__(self) -> None:
        self._created = self._written = self._skipped = self._checkpoints = 0

    def run_created(self) -> None:
        self._created += 1

    def appended(self, chunks: int, written: int, *, checkpoint: bool) -> None:
        """One append of ``chunks`` chunks wrote ``written`` (the rest were stored already)."""
        self._written += written
        self._skipped += chunks - written
        self._checkpoints += checkpoint

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(self._created, self._written, self._skipped, self._checkpoints)
