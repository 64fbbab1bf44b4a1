"""One followed stream in one process: the chunks its local readers share.

A :class:`Follower` holds a contiguous run of a remote stream's chunks,
``[base, head)``, and the :class:`~icefloe.backplane.reader.RemoteReader`
objects of this process reading it. It does no I/O: the engine's one fetch
task per followed stream (:mod:`icefloe.backplane.fetching`) appends what a
blocking ``XREAD`` or pull request returns, however many local readers
there are.

Limits: the engine fetches only while ``head - slowest`` is below ``limit``
chunks (the slowest local reader holds the fetching back, and through its
reported position the producer); chunks every reader has passed are dropped
at once, so the run holds at most ``limit`` chunks plus one fetch, plus at
most ``limit`` more prepended for a reader resuming behind ``base``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from typing import TYPE_CHECKING

from icefloe.backplane.limits import REPORT_EVERY
from icefloe.core.messages import StreamChunk
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import StreamError

if TYPE_CHECKING:
    from icefloe.backplane.reader import RemoteReader

# REPORT_EVERY is limits.py's, named here as before.
__all__ = ["REPORT_EVERY", "Follower"]


class Follower:
    """The shared chunks of one remote stream and its local readers."""

    def __init__(self, stream_id: str, base: int, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.stream_id = stream_id
        self.limit = limit
        self.base = base
        self._chunks: deque[StreamChunk] = deque()
        #: seq of the ``done`` chunk once fetched
        self.done_seq: int | None = None
        #: the abnormal end, once known (after the chunks held)
        self.terminal: StreamError | None = None
        self.readers: set[RemoteReader] = set()
        #: chunks read since the last position report
        self.moved = 0
        #: set when a reader moved: the fetcher may have room again
        self.room = asyncio.Event()
        #: set when ``moved`` passes REPORT_EVERY
        self.report_due: asyncio.Event | None = None

    @property
    def head(self) -> int:
        """The seq after the last chunk held."""
        return self.base + len(self._chunks)

    @property
    def ended(self) -> bool:
        """Nothing more will be fetched."""
        return self.done_seq is not None or self.terminal is not None

    def slowest(self) -> int:
        """The position of the slowest local reader (``head`` with none)."""
        return min((r.next_seq for r in self.readers), default=self.head)

    def room_left(self) -> int:
        """Chunks the fetcher may fetch now."""
        return self.limit - (self.head - self.slowest())

    def chunk(self, seq: int) -> StreamChunk:
        """The chunk ``seq``.

        :raises StreamError: ``history_gone``: it was dropped or trimmed away.
        :raises IndexError: not fetched yet.
        """
        if seq < self.base:
            raise StreamError(
                ErrorCode.HISTORY_GONE,
                f"the reader fell more than {self.limit} chunks behind",
                self.stream_id,
            )
        return self._chunks[seq - self.base]

    def extend(self, chunks: list[StreamChunk]) -> None:
        """Append fetched chunks (in seq order), then wake the readers.

        A chunk past ``head`` means the engine's log was trimmed under a slow
        fetch: the run restarts there and readers behind it are overrun.
        """
        for chunk in chunks:
            if chunk.seq < self.head:
                continue  # a prepend raced a fetch: already held
            if chunk.seq > self.head:
                self._chunks.clear()
                self.base = chunk.seq
            self._chunks.append(chunk)
            if chunk.done:
                self.done_seq = chunk.seq
        self._wake()

    def prepend(self, chunks: list[StreamChunk]) -> bool:
        """Put the chunks just before ``base`` back (a reader resumes behind it).

        Returns False (and changes nothing) unless they end right at ``base``.
        """
        if not chunks or chunks[-1].seq != self.base - 1:
            return False
        if any(b.seq != a.seq + 1 for a, b in itertools.pairwise(chunks)):
            return False
        self._chunks.extendleft(reversed(chunks))
        self.base = chunks[0].seq
        return True

    def end(self, error: StreamError) -> None:
        """The stream ended abnormally after the chunks held (or the follow failed)."""
        if self.terminal is None and self.done_seq is None:
            self.terminal = error
        self._wake()

    def moved_by(self, count: int) -> None:
        """A local reader read ``count`` chunks: drop what all have passed."""
        self.moved += count
        floor = self.slowest()
        chunks = self._chunks
        while chunks and self.base < floor:
            chunks.popleft()
            self.base += 1
        self.room.set()
        if self.moved >= REPORT_EVERY and self.report_due is not None:
            self.report_due.set()

    def held_chunks(self) -> int:
        """Chunks held now (for tests and metrics)."""
        return len(self._chunks)

    def _wake(self) -> None:
        for reader in list(self.readers):
            reader.interrupt()
