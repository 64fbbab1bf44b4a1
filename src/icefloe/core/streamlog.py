"""The log of one stream and the cursors of its readers: a pure state machine.

A :class:`StreamLog` holds the chunks of one stream in seq order and one
:class:`Cursor` per reader; nothing is copied per reader. It keeps what the
slowest reader it waits for has not consumed yet, plus ``history`` consumed
chunks for late joiners and resumption. It does no I/O and never waits: the
asyncio shell (:mod:`icefloe.runtime.stream`) owns the futures, and the log
tells it when to wake them:

* :meth:`StreamLog.append` returns False when the producer has something to
  check (readers asked for data with :meth:`StreamLog.want_data`, the log
  closed on a ``done`` chunk, or the cheap room check said no);
* after :meth:`StreamLog.want_room`, the log calls ``on_room`` once when room
  may have appeared (the producer re-checks with :meth:`StreamLog.has_room`).

Readers are :class:`~icefloe.core.cursor.Cursor` objects (blocking or
lag-tolerant; how they set the producer's pace, the *floor*, is in
:mod:`icefloe.core.cursor`), kept with their pace by the log's reader side,
a :class:`~icefloe.core.logreaders.LogReaders`. Bytes are counted by a
:class:`~icefloe.core.bytecount.ByteCount`. The log alone orders, trims and
signals room.

Limits: ``window`` chunks between the floor and the head (adaptive within
``[1, window_limit]``, see :meth:`StreamLog.set_window`), ``max_bytes`` bytes
held (as counted by :func:`chunk_size`), ``reorder_limit`` chunks held out of
order (beyond it :meth:`StreamLog.append` raises
:class:`~icefloe.exceptions.ReorderOverflow` and changes nothing). At a limit
the log never blocks: :meth:`StreamLog.has_room` says no and the caller waits.

Invariants (checked against a model in tests/unit/core/test_streamlog_model.py):

1. The log holds the contiguous seqs ``[base, next_seq)``; chunks enter in
   seq order, early ones wait in an :class:`~icefloe.core.intake.Intake`.
2. Every attached cursor has ``start <= pos <= next_seq``; a blocking cursor
   never has ``pos < base`` (nothing it has not read is ever trimmed).
3. ``floor`` is never above the exact pace, and exact after :meth:`StreamLog.refresh`.
4. ``byte_count.bound`` is at least the bytes held, and exact after
   :meth:`StreamLog.held_bytes`.
5. ``held < room_len`` implies the pace is less than ``window`` chunks behind
   the head: the O(1) room check never says yes wrongly (unless the pace is
   an overrun lag-tolerant cursor, below ``base``: the exact check still
   counts it, the O(1) check counts from ``base``, as before the log moved
   into the core).
6. With a cursor attached, consumed chunks beyond ``history`` are trimmed in
   batches of :data:`TRIM_BATCH` (at once with a solo reader); under byte
   pressure retained history is trimmed down to the floor. With no cursor,
   nothing is trimmed: unread chunks wait for a first reader (the rules are
   :mod:`icefloe.core.retention`'s).

The per-chunk paths are flat on purpose (they are most of the cost of
streaming tokens). With one blocking reader and no history (*solo*), the log
is a queue: the reader pops what it reads (``Cursor.solo_queue``), so memory
is released chunk by chunk. The producer has its own fast path, the in-order
case of :meth:`StreamLog.append` written out by a caller that cannot afford
the call (``runtime/context.py``: about 5% of a one-hop stream). While
``log.in_order`` and ``chunk.seq == log.next_seq``, it may instead:

1. ``log.queue.append(chunk)``; ``log.next_seq = chunk.seq + 1``;
   ``log.byte_count.bound += chunk_size(chunk)``;
2. if ``chunk.done`` or ``log.data_wanted``: call :meth:`StreamLog.appended`
   and treat the append as having returned False;
3. else go on if ``len(log.queue) < log.room_len`` and
   ``log.byte_count.bound < log.byte_count.limit`` (the O(1) room check),
   and treat it as False otherwise.

That is exactly what :meth:`StreamLog.append` does in that case. The
durable store writer (``runtime/durable.py``) releases a stored batch of
consecutive chunks the same way, steps 1 and 2 for the whole batch at once
(``queue.extend``, one ``appended`` with the last chunk). Nothing else
outside the log writes its public fields.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from icefloe.core.bytecount import ByteCount, chunk_size
from icefloe.core.cursor import Cursor
from icefloe.core.intake import Intake
from icefloe.core.loglimits import LogLimits
from icefloe.core.logreaders import LogReaders
from icefloe.core.messages import StreamChunk
from icefloe.core.retention import TRIM_BATCH, trim
from icefloe.exceptions import InvalidState

__all__ = [
    "TRIM_BATCH",
    "ByteCount",
    "Cursor",
    "LogLimits",
    "LogState",
    "StreamLog",
    "StreamLogStatistics",
    "chunk_size",
]


class LogState(enum.IntEnum):
    """Whether the log takes new chunks; reading goes on in both states."""

    #: appends are taken
    OPEN = 0
    #: the ``done`` chunk was appended, or :meth:`StreamLog.close` was called
    CLOSED = 1


class StreamLogStatistics(NamedTuple):
    """A snapshot of a :class:`StreamLog` (bytes counted exactly)."""

    #: ``open`` or ``closed``
    state: str
    #: the seq appended next
    next_seq: int
    #: the oldest seq held
    base: int
    #: chunks held
    held: int
    #: bytes held, as counted by :func:`chunk_size`
    held_bytes: int
    #: cursors attached
    readers: int
    #: the producer's pace (exact)
    floor: int
    #: the window now, in chunks
    window: int
    #: chunks held out of order
    reorder_pending: int
    #: duplicate chunks dropped
    duplicates: int
    #: chunks delivered to cursors, attached or not
    delivered: int


class StreamLog:
    """The ordered, bounded log of one stream (see the module docstring).

    ``start_seq``, ``window``, ``max_bytes``, ``history`` and ``reorder_limit``
    are its :class:`~icefloe.core.loglimits.LogLimits` (:attr:`limits`).
    :param on_room: called (with no argument) once room may have appeared
        after :meth:`want_room`; it may call back into the log.
    :raises ValueError: a limit is out of range.
    """

    __slots__ = (
        "_intake",
        "_on_room",
        "_readers",
        "_state",
        "_window",
        "byte_count",
        "data_wanted",
        "in_order",
        "limits",
        "next_seq",
        "queue",
        "room_len",
        "room_wanted",
    )

    def __init__(
        self,
        start_seq: int = 0,
        *,
        window: int,
        max_bytes: int,
        history: int = 0,
        reorder_limit: int = 1024,
        on_room: Callable[[], object] | None = None,
    ) -> None:
        #: the configuration, checked
        self.limits = LogLimits(start_seq, window, max_bytes, history, reorder_limit).checked()
        self._state = LogState.OPEN
        self._window = window
        #: the bytes held against ``max_bytes``
        self.byte_count = ByteCount(max_bytes)
        self._on_room = on_room
        #: the chunks held, seqs ``[base, next_seq)`` (one deque for the log's life)
        self.queue: deque[StreamChunk] = deque()
        #: the seq appended next (every seq before it was appended)
        self.next_seq = start_seq
        #: below this queue length the pace is less than a window behind (O(1))
        self.room_len = window
        self._intake = Intake(reorder_limit)  # chunks early or twice
        #: OPEN and nothing held out of order: the producer fast path applies
        self.in_order = True
        self._readers = LogReaders(self, start_seq, history)  # the cursors and the floor
        #: a producer waits for room (:meth:`want_room`, not yet signalled)
        self.room_wanted = False
        #: a reader is about to wait (:meth:`want_data`): the next append says so
        self.data_wanted = False

    def __repr__(self) -> str:
        return (
            f"<StreamLog {self._state.name} base={self.base} next_seq={self.next_seq} "
            f"readers={len(self._readers)}>"
        )

    # -- facts -----------------------------------------------------------------

    @property
    def state(self) -> LogState:
        return self._state

    @property
    def base(self) -> int:
        """The oldest seq held (``next_seq`` when nothing is)."""
        return self.next_seq - len(self.queue)

    @property
    def held(self) -> int:
        """Chunks held."""
        return len(self.queue)

    @property
    def floor(self) -> int:
        """The producer's pace; a lower bound, exact after :meth:`refresh`."""
        return self._readers.floor

    @property
    def window(self) -> int:
        """The window now, in chunks (adaptive: within ``[1, window_limit]``)."""
        return self._window

    @property
    def readers(self) -> int:
        """Cursors attached."""
        return len(self._readers)

    @property
    def duplicates(self) -> int:
        """Chunks dropped because their seq was already appended or held."""
        return self._intake.duplicates

    @property
    def reorder_pending(self) -> int:
        """Chunks held out of order, waiting for a missing seq."""
        return self._intake.pending

    def cursors(self) -> tuple[Cursor, ...]:
        """The attached cursors, in attach order."""
        return self._readers.cursors()

    # -- appending -------------------------------------------------------------

    def append(self, chunk: StreamChunk) -> bool:
        """Take ``chunk`` into the log, or hold it until its turn.

        Duplicates (a seq already appended or held) are dropped and counted;
        retried nodes and fan-in rely on that. A ``done`` chunk closes the log.

        True: appended in order, the O(1) room check passed, nobody needs
        telling. False asks the caller to look: readers wanted data, the log
        closed, the chunk was held out of order, or room may be short
        (:meth:`has_room` decides). The in-order case is the producer fast
        path (module docstring).

        :raises ReorderOverflow: holding ``chunk`` would exceed ``reorder_limit``;
            nothing changed.
        :raises InvalidState: the log is CLOSED and ``chunk`` is not a duplicate.
        """
        seq = chunk.seq
        if seq == self.next_seq and self.in_order:
            queue = self.queue
            queue.append(chunk)
            self.next_seq = seq + 1
            count = self.byte_count
            count.bound += len(chunk.text) if chunk.data is None else chunk_size(chunk)
            if chunk.done or self.data_wanted:
                self.appended(chunk)
                return False
            return len(queue) < self.room_len and count.bound < count.limit
        self._append_slow(chunk)
        return False

    def appended(self, chunk: StreamChunk) -> None:
        """The producer fast path appended ``chunk``, a ``done`` one or while
        :attr:`data_wanted`: close on ``done``, clear the want."""
        if chunk.done:
            self._state = LogState.CLOSED
            self.in_order = False
        self.data_wanted = False

    def _append_slow(self, chunk: StreamChunk) -> None:
        if self._state:
            if chunk.seq < self.next_seq:
                self._intake.duplicates += 1
                return
            raise InvalidState(f"cannot append seq {chunk.seq} to a {self._state.name} log")
        for item in self._intake.push(chunk, self.next_seq):
            self.queue.append(item)
            self.next_seq = item.seq + 1
            self.byte_count.bound += chunk_size(item)
            if item.done:
                self._state = LogState.CLOSED
                self._intake.drop()
                break
        self.in_order = not self._state and not self._intake.pending
        self.data_wanted = False

    def close(self) -> bool:
        """Take no more chunks (the stream ended); False if already CLOSED.

        Chunks held out of order are dropped; reading goes on.
        """
        if self._state:
            return False
        self._state = LogState.CLOSED
        self._intake.drop()
        self.in_order = False
        return True

    def discard(self) -> None:
        """Drop everything held, unread or not, and move every cursor to the head.

        For cancellation: unread chunks are skipped, not delivered (cursors'
        ``start`` moves with them, so delivered counts stay honest).
        """
        head = self.next_seq
        self.queue.clear()
        self.byte_count.clear()
        self._intake.drop()
        self.in_order = not self._state
        self.room_len = self._window
        self._readers.skip_to(head)
        self._floor_moved()  # room for a waiting producer, if any

    # -- room ------------------------------------------------------------------

    def has_room_fast(self) -> bool:
        """The O(1) room check: never says yes wrongly; :meth:`has_room` decides a no."""
        return len(self.queue) < self.room_len and self.byte_count.bound < self.byte_count.limit

    def has_room(self) -> bool:
        """Whether the producer may append another chunk now (exact).

        A log with history and no reader yet may fill its history first: a
        run started over HTTP should not stall before its client connects.
        """
        self.refresh()
        count = self.byte_count
        if count.bound >= count.limit and count.full(self.queue):
            return False
        if self.limits.history > self._window and not self._readers:
            return len(self.queue) < self.limits.history
        return self.next_seq - self._readers.floor < self._window

    def credit(self) -> int:
        """Chunks the producer may append before it has to wait (0 once CLOSED)."""
        if self._state:
            return 0
        self.refresh()
        count = self.byte_count
        if count.bound >= count.limit and count.full(self.queue):
            return 0
        return max(0, self._window - (self.next_seq - self._readers.floor))

    def want_room(self) -> None:
        """A producer is about to wait: call ``on_room`` once room may have appeared."""
        self.room_wanted = True

    def want_data(self) -> None:
        """A reader is about to wait: the next :meth:`append` returns False."""
        self.data_wanted = True

    def set_window(self, window: int) -> None:
        """Move the window (the adaptive window's controller decides).

        :raises ValueError: ``window`` is not within ``[1, window_limit]``.
        """
        if not 1 <= window <= self.limits.window_limit:
            raise ValueError(f"window must be within [1, {self.limits.window_limit}], got {window}")
        self._window = window
        self.room_len = window + max(0, self._readers.floor - self.base)

    def pace_chunk(self) -> StreamChunk | None:
        """The oldest chunk the pace has not passed (None: nothing unread);
        exact after :meth:`refresh` (or :meth:`has_room`)."""
        index = self._readers.floor - (self.next_seq - len(self.queue))
        if 0 <= index < len(self.queue):
            return self.queue[index]
        return None

    # -- readers ---------------------------------------------------------------

    def attach(
        self, from_seq: int | None = None, lag_limit: int | None = None, owner: object = None
    ) -> Cursor:
        """A new cursor at ``from_seq`` (None: at the head).

        :raises ValueError: ``lag_limit`` < 1, or ``from_seq`` is not within
            ``[base, next_seq]`` (the caller names a seq no longer held).
        """
        if lag_limit is not None and lag_limit < 1:
            raise ValueError(f"lag_limit must be >= 1 or None, got {lag_limit!r}")
        head = self.next_seq
        if from_seq is None:
            from_seq = head
        elif not self.base <= from_seq <= head:
            raise ValueError(f"from_seq {from_seq} is not within [{self.base}, {head}]")
        cursor = Cursor(self, from_seq, lag_limit, owner)
        if self._readers.attach(cursor):
            self._floor_moved()  # a lag-tolerant cursor raised the floor: room, maybe
        return cursor

    def detach(self, cursor: Cursor) -> bool:
        """Remove ``cursor``; False if it was not attached.

        Its delivered count is kept (:meth:`delivered_total`) and it is parked
        past any seq, so ``cursor.take()`` returns None from now on.
        """
        return self._readers.detach(cursor, producing=not self._state)

    def popped(self) -> None:
        """A solo reader popped a chunk from ``Cursor.solo_queue``: call ``on_room``
        if a producer waits."""
        if self.room_wanted:
            self._room_freed()

    def delivered_total(self) -> int:
        """Chunks taken by cursors so far, attached or since detached."""
        return self._readers.delivered_total()

    # -- the floor and trimming ------------------------------------------------

    def refresh(self) -> None:
        """Make :attr:`floor` exact, trim what no reader needs, maybe call ``on_room``.

        O(readers); the read path calls it only while a producer waits.
        """
        readers = self._readers
        keep = readers.repace()
        trim(self.queue, self.byte_count, self.next_seq, keep, readers.floor, readers.solo)
        self._floor_moved()

    def _floor_moved(self) -> None:
        floor = self._readers.floor
        # The log length at which the pace is a window behind, given what is
        # held before the floor now: until then append needs no recount
        # (cursors only move forward, so this never says yes wrongly).
        self.room_len = self._window + max(0, floor - (self.next_seq - len(self.queue)))
        if (
            self.room_wanted
            and floor + self._window > self.next_seq
            and self.byte_count.bound < self.byte_count.limit
        ):
            self._room_freed()

    def _room_freed(self) -> None:
        self.room_wanted = False
        if self._on_room is not None:
            self._on_room()

    # -- bytes -----------------------------------------------------------------

    def held_bytes(self) -> int:
        """Bytes held, counted exactly (O(chunks held))."""
        return self.byte_count.recount(self.queue)

    def unread_bytes(self) -> int:
        """Bytes appended but not yet passed by the pace (what is in flight).

        Retained history (chunks every reader has consumed, kept for
        resumption) is not counted: it is bounded by ``history`` and
        ``max_bytes``. Exact (it refreshes the floor first) and incremental
        (see :meth:`ByteCount.unread`).
        """
        self.refresh()
        return self.byte_count.unread(self.queue, self.next_seq, self._readers.floor)

    def statistics(self) -> StreamLogStatistics:
        """A snapshot; makes the floor and the byte count exact first."""
        self.refresh()
        return StreamLogStatistics(
            self._state.name.lower(),
            self.next_seq,
            self.base,
            len(self.queue),
            self.held_bytes(),
            len(self._readers),
            self._readers.floor,
            self._window,
            self.reorder_pending,
            self._intake.duplicates,
            self.delivered_total(),
        )
