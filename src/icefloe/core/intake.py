"""The slow way into a :class:`~icefloe.core.streamlog.StreamLog`: chunks early or twice.

A chunk whose seq is not the log's next one either came early (parallel
paths, fan-in, a retry racing its original) and waits in a
:class:`~icefloe.core.sequencer.ReorderBuffer` until the gap fills, or was
already appended or held, and is dropped and counted. :class:`Intake` keeps
that buffer, made only when a chunk first comes early and dropped once
nothing is held, so an in-order stream never pays for it. The log appends
what :meth:`Intake.push` releases, in seq order, and decides when to close.
"""

from __future__ import annotations

from icefloe.core.messages import StreamChunk
from icefloe.core.sequencer import ReorderBuffer
from icefloe.exceptions import DuplicateSeq, ReorderOverflow

__all__ = ["Intake"]


class Intake:
    """Early chunks (at most ``limit``, >= 0) and the count of duplicates dropped."""

    __slots__ = ("_held", "_limit", "duplicates")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held: ReorderBuffer[StreamChunk] | None = None
        #: chunks dropped because their seq was already appended or held
        self.duplicates = 0

    def __repr__(self) -> str:
        return f"Intake(pending={self.pending}, duplicates={self.duplicates})"

    @property
    def pending(self) -> int:
        """Chunks held, waiting for a missing seq."""
        return 0 if self._held is None else self._held.pending

    def push(self, chunk: StreamChunk, next_seq: int) -> list[StreamChunk]:
        """Hold ``chunk`` (the log's next seq is ``next_seq``); the chunks it
        releases, in seq order (none for a duplicate, which is counted).

        :raises ReorderOverflow: holding ``chunk`` would exceed ``limit``;
            nothing changed.
        """
        held = self._held
        if held is None:
            held = self._held = ReorderBuffer(next_seq, self._limit)
        try:
            released = held.push(chunk.seq, chunk)
        except DuplicateSeq:
            self.duplicates += 1
            released = []
        except ReorderOverflow:
            if not held.pending:
                self._held = None  # nothing held: the next append is in order again
            raise
        if not held.pending:
            self._held = None
        return released

    def drop(self) -> None:
        """Forget the chunks held (the log closed or was discarded)."""
        self._held = None
