"""One reader's position in a :class:`~icefloe.core.streamlog.StreamLog`, and the pace.

A :class:`Cursor` reads its log through the log's public API: ``queue`` (the
chunks held, seqs ``[base, next_seq)``), ``next_seq``, ``floor``, and it
tells the log when its reading may matter to a waiting producer
(:meth:`StreamLog.refresh`, :meth:`StreamLog.popped`). The log alone moves
the floor and trims; a cursor only moves its own ``pos`` forward.

Reader kinds: a *blocking* cursor (``lag_limit`` None) is never overrun; a
*lag-tolerant* one (network clients) holds the producer back only while it
is less than ``lag_limit`` chunks behind, and past that may be overrun
(:meth:`Cursor.lost`). :meth:`CursorSet.pace` is how the cursors together set the
producer's pace (the *floor*): the slowest blocking cursor and the fastest
lag-tolerant one, so a single network client still paces its producer but
one slow client among many does not slow the rest.

Invariant: an attached cursor has ``start <= pos <= next_seq``; a detached
one is parked past any seq (:meth:`Cursor.park`) and reads nothing more.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

from icefloe.core.messages import StreamChunk
from icefloe.exceptions import InvalidState

if TYPE_CHECKING:
    from icefloe.core.streamlog import StreamLog

__all__ = ["PARKED", "Cursor", "CursorSet"]

#: where a detached cursor is parked (beyond any real seq): it reads nothing more
PARKED = 1 << 62


class Cursor:
    """One reader's position in ``log``; made by :meth:`StreamLog.attach`.

    ``pos`` is the seq it reads next and ``start`` where it started (so
    ``pos - start`` chunks were delivered). ``lag_limit`` None makes a
    blocking reader. ``owner`` is free for the shell (the runtime keeps a
    weak reference to the reader object there).

    Every read is one call per chunk at most (it is the per-chunk path of
    every reader); with a solo cursor, none (see :attr:`solo_queue`).
    """

    __slots__ = ("lag_limit", "log", "owner", "pos", "solo_queue", "start")

    def __init__(
        self, log: StreamLog, pos: int, lag_limit: int | None, owner: object = None
    ) -> None:
        self.log = log
        self.pos = pos
        self.start = pos
        self.lag_limit = lag_limit
        self.owner = owner
        #: The solo fast path: while this is the log's only cursor (blocking,
        #: no history), the log's queue of chunks, which then holds exactly
        #: ``[pos, next_seq)``; else None. Its reader may take a chunk with
        #: ``solo_queue.popleft()``, then must add 1 to ``pos`` and call
        #: :meth:`StreamLog.popped` if :attr:`StreamLog.room_wanted`: exactly
        #: what :meth:`take` does, without a call per chunk.
        self.solo_queue: deque[StreamChunk] | None = None

    def __repr__(self) -> str:
        return f"Cursor(pos={self.pos}, start={self.start}, lag_limit={self.lag_limit})"

    def park(self) -> None:
        """Detached: read nothing more (the log calls it from :meth:`StreamLog.detach`)."""
        self.pos = self.start = PARKED
        self.solo_queue = None

    def take(self) -> StreamChunk | None:
        """The chunk at the cursor, moving it one on; None if there is none.

        None also when a lag-tolerant cursor was overrun (:meth:`lost`).
        """
        log = self.log
        pos = self.pos
        head = log.next_seq
        if pos >= head:
            return None
        queue = self.solo_queue
        if queue is not None:
            # The only reader pops what it reads (see solo_queue).
            self.pos = pos + 1
            chunk = queue.popleft()
            if log.room_wanted:
                log.popped()
            return chunk
        held = log.queue
        index = pos - head + len(held)
        if index < 0:
            return None
        self.pos = pos + 1
        chunk = held[index]  # before refresh(): it may trim this chunk
        if log.room_wanted and pos >= log.floor:
            # A producer waits, and this cursor may be what it waits for
            # (only one at or past the floor can move it): recompute.
            log.refresh()
        return chunk

    def lost(self) -> bool:
        """Whether chunks the cursor has not read were trimmed (it was overrun)."""
        return self.pos < self.log.base

    def available(self) -> int:
        """Chunks the cursor may take now (overrun ones included; 0 once detached)."""
        return max(0, self.log.next_seq - self.pos)

    def peek(self, offset: int = 0) -> StreamChunk:
        """The chunk ``offset`` places ahead, without moving the cursor.

        :raises IndexError: ``offset`` is not below :meth:`available`.
        :raises InvalidState: the cursor was overrun (check :meth:`lost`).
        """
        pos = self.pos
        log = self.log
        head = log.next_seq
        if not 0 <= offset < head - pos:
            raise IndexError(f"peek offset {offset} is not below available()")
        held = log.queue
        index = pos - head + len(held)
        if index < 0:
            raise InvalidState(f"cursor at {pos} was overrun; the log starts at {log.base}")
        return held[index + offset]

    def skip(self, count: int) -> StreamChunk:
        """Move past ``count`` chunks (>= 1) as ``count`` takes would; returns
        the last one. The floor moves once for the whole run.

        :raises ValueError: ``count`` is not within ``[1, available()]``.
        :raises InvalidState: the cursor was overrun (check :meth:`lost`).
        """
        pos = self.pos
        log = self.log
        head = log.next_seq
        if not 0 < count <= head - pos:
            raise ValueError(f"cannot skip {count} chunks; {self.available()} available")
        queue = self.solo_queue
        if queue is not None:
            last = queue[count - 1]
            if count == len(queue):
                queue.clear()
            else:
                for _ in range(count):
                    queue.popleft()
            self.pos = pos + count
            if log.room_wanted:
                log.popped()
            return last
        held = log.queue
        index = pos - head + len(held)
        if index < 0:
            raise InvalidState(f"cursor at {pos} was overrun; the log starts at {log.base}")
        last = held[index + count - 1]
        self.pos = pos + count
        if log.room_wanted and pos + count > log.floor:
            log.refresh()
        return last


class CursorSet:
    """The cursors attached to one log, in attach order, and what detached
    ones delivered. The log decides what attaching or detaching means for
    its floor; the set only keeps the cursors."""

    __slots__ = ("_cursors", "_delivered")

    def __init__(self) -> None:
        self._cursors: list[Cursor] = []
        self._delivered = 0  # by cursors since detached

    def __len__(self) -> int:
        return len(self._cursors)

    def __iter__(self) -> Iterator[Cursor]:
        return iter(self._cursors)

    def add(self, cursor: Cursor) -> None:
        self._cursors.append(cursor)

    def remove(self, cursor: Cursor) -> bool:
        """Detach and park ``cursor``, keeping its delivered count; False if absent."""
        try:
            self._cursors.remove(cursor)
        except ValueError:
            return False
        self._delivered += cursor.pos - cursor.start
        cursor.park()
        return True

    def skip_to(self, head: int) -> None:
        """Move every cursor to ``head``, skipping (not delivering) what it had
        not read: its ``start`` moves with it."""
        for cursor in self._cursors:
            cursor.start += head - cursor.pos
            cursor.pos = head

    def lone_blocking(self) -> Cursor | None:
        """The only cursor, if there is exactly one and it is blocking."""
        cursors = self._cursors
        if len(cursors) == 1 and cursors[0].lag_limit is None:
            return cursors[0]
        return None

    def delivered_total(self) -> int:
        """Chunks taken so far, by cursors attached or since detached."""
        return self._delivered + sum(c.pos - c.start for c in self._cursors)

    def pace(self, head: int, history: int) -> tuple[int, int, int] | None:
        """Where the cursors put the producer: ``(floor, blocking_min, keep)``
        (None without a cursor: then nothing sets a pace).

        ``floor`` is the pace (the slowest blocking cursor and the fastest
        lag-tolerant one, see the module docstring); ``blocking_min`` the
        slowest blocking cursor (``head`` if none); ``keep`` the oldest seq
        the log must still hold: ``history`` chunks behind the slowest
        blocking cursor and behind the head (for late resumers), and what a
        lag-tolerant cursor within its ``lag_limit`` has not read.
        O(cursors).
        """
        if not self._cursors:
            return None
        floor = head
        keep = head - history
        fastest = -1
        for cursor in self._cursors:
            pos = cursor.pos
            limit = cursor.lag_limit
            if limit is None:
                if pos < floor:
                    floor = pos
                if pos - history < keep:
                    keep = pos - history
            else:
                if pos > fastest:
                    fastest = pos
                keep = min(keep, max(pos, head - limit))
        blocking_min = floor
        if 0 <= fastest < floor:
            floor = fastest
        return floor, blocking_min, keep
