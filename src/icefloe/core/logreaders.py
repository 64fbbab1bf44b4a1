"""The reader side of a :class:`~icefloe.core.streamlog.StreamLog`: its cursors and their pace.

A stream log has two sides. Its producer side orders the chunks, holds them
and says when the producer may go on; its reader side, a :class:`LogReaders`,
keeps the attached :class:`~icefloe.core.cursor.Cursor` objects and where,
together, they hold the producer back: the *floor* (how cursors set it is
in :mod:`icefloe.core.cursor`). It exists so that the reader-side rules sit
in one place, apart from ordering and room:

* the floor is a lower bound, made exact by the log's
  :meth:`~icefloe.core.streamlog.StreamLog.refresh` (O(readers)); attaching
  and detaching avoid that recount whenever a stale floor is still
  conservative, so a thousand clients attaching or leaving cost O(1) each;
* ``blocking_min``, the slowest blocking cursor when the floor was last made
  exact, is never too high (cursors only move forward), so a new fastest
  lag-tolerant cursor may raise the floor without a recount;
* *solo* mode: one blocking cursor and no history, which reads by popping
  the log's queue (``Cursor.solo_queue``).

It reads its log through :class:`PacedLog`, a few public members of the
log; the log alone trims and signals room.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from icefloe.core.cursor import Cursor, CursorSet
from icefloe.core.messages import StreamChunk

__all__ = ["LogReaders", "PacedLog"]


class PacedLog(Protocol):
    """What :class:`LogReaders` needs of its log."""

    #: the chunks held, seqs ``[base, next_seq)``
    queue: deque[StreamChunk]
    #: the seq appended next
    next_seq: int
    #: a producer waits for room
    room_wanted: bool

    @property
    def base(self) -> int: ...

    def refresh(self) -> None:
        """Make the floor exact (:meth:`LogReaders.repace`), trim, maybe signal room."""


class LogReaders:
    """The cursors attached to one log (``history`` consumed chunks kept) and their pace."""

    __slots__ = ("_cursors", "_history", "_log", "blocking_min", "floor", "solo")

    def __init__(self, log: PacedLog, start_seq: int, history: int) -> None:
        self._log = log
        self._history = history
        self._cursors = CursorSet()
        #: the producer's pace; a lower bound, exact after :meth:`repace`
        self.floor = start_seq
        #: the slowest blocking cursor when the floor was last made exact (the
        #: head if none): cursors only move forward, so it is never too high
        self.blocking_min = start_seq
        #: one blocking cursor and no history: it pops what it reads
        self.solo = False

    def __len__(self) -> int:
        return len(self._cursors)

    def __repr__(self) -> str:
        return f"LogReaders(readers={len(self._cursors)}, floor={self.floor}, solo={self.solo})"

    def cursors(self) -> tuple[Cursor, ...]:
        """The attached cursors, in attach order."""
        return tuple(self._cursors)

    def delivered_total(self) -> int:
        """Chunks taken by cursors so far, attached or since detached."""
        return self._cursors.delivered_total()

    def repace(self) -> int:
        """Make :attr:`floor` exact; the oldest seq the log must still hold.

        Without a cursor, unread chunks wait for a first reader: the floor
        is the log's base and nothing may be trimmed. O(readers).
        """
        log = self._log
        paced = self._cursors.pace(log.next_seq, self._history)
        if paced is None:
            self.floor = keep = log.base
            return keep
        self.floor, self.blocking_min, keep = paced
        return keep

    def attach(self, cursor: Cursor) -> bool:
        """Add ``cursor`` (new, at a seq the log holds); whether it raised the
        floor without a recount (the log then checks for room)."""
        self._cursors.add(cursor)
        self._set_solo()
        from_seq = cursor.pos
        if self.solo or from_seq < self.floor or len(self._cursors) == 1:
            self._log.refresh()
        elif cursor.lag_limit is None:
            # A stale floor is conservative; the blocking minimum must not be.
            if from_seq < self.blocking_min:
                self.blocking_min = from_seq
        elif self._log.room_wanted and from_seq > self.floor:
            # A new fastest lag-tolerant cursor may raise the pace of a waiting
            # producer, and nothing else would wake it: raise the floor in
            # O(1), up to the slowest blocking cursor.
            floor = min(self.blocking_min, from_seq)
            if floor > self.floor:
                self.floor = floor
                return True
        # Otherwise the floor can only rise with this cursor: the stale one is
        # conservative, and a thousand clients attaching cost O(1) each.
        return False

    def detach(self, cursor: Cursor, *, producing: bool) -> bool:
        """Remove ``cursor``; False if it was not attached. ``producing``: the
        log still takes chunks, so its producer's pace matters."""
        if not self._cursors.remove(cursor):
            return False
        self._set_solo()
        if producing or self.solo:
            # A CLOSED log has no producer to pace: skip the O(readers)
            # recount, or a thousand readers leaving at the end cost a
            # million. A solo cursor pops the left end, so the log must be
            # trimmed to it (cheap with one cursor).
            self._log.refresh()
        return True

    def skip_to(self, head: int) -> None:
        """The log dropped everything: every cursor moves to ``head`` (skipping,
        not delivering, what it had not read), and so does the pace."""
        self.floor = self.blocking_min = head
        self._cursors.skip_to(head)

    def _set_solo(self) -> None:
        lone = None if self._history else self._cursors.lone_blocking()
        was = self.solo
        self.solo = lone is not None
        if lone is not None:
            self._log.refresh()  # trims the queue to the cursor: it holds [pos, next_seq)
            lone.solo_queue = self._log.queue
        elif was:
            for cursor in self._cursors:
                cursor.solo_queue = None
