"""One stream's ordered log of chunks, and the readers that follow it.

A :class:`StreamState` is a bounded log: chunks are released into it in seq
order (out-of-order arrivals wait in a :class:`~icefloe.core.sequencer.ReorderBuffer`),
every reader (:class:`Subscription`) is a cursor into it, and nothing is
copied per reader. The log keeps what the slowest reader has not consumed
yet plus ``stream_history`` consumed chunks; the producer waits while the
slowest reader is ``stream_buffer`` chunks or ``stream_max_bytes`` bytes
behind. That one rule gives backpressure, bounded memory and late joining.

The per-chunk path is deliberately flat, because it is most of the cost of
streaming tokens:

* An in-order ``publish`` appends, adds the chunk's size to an upper bound of
  the bytes held, and checks room with ``len(log) < window`` and that bound.
  Only when either check fails does the slow path count exactly (move the
  readers' floor, trim, recount bytes) and perhaps wait.
* The common case, one reader and no history ("solo"), makes the log a
  queue: the reader pops what it reads, so memory is released chunk by chunk
  and ``len(log)`` *is* the reader's lag. With several readers (or history)
  each reader indexes the log and the floor is moved lazily.
* A reader with buffered chunks returns them without suspending.

The window is adaptive (``Limits.adaptive_window``): each time the producer
finds it full, :meth:`StreamState.wait_room` feeds a
:class:`~icefloe.core.flowwindow.FlowWindow` with the age of the oldest chunk
the pace reader has not taken (queue latency) and how far it has read (drain
rate), and the window moves within ``[floor, stream_buffer]``. That is one
clock read per full window, never per chunk, and nothing for a producer that
never waits.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import Iterable
from itertools import islice
from typing import TYPE_CHECKING, Any

from icefloe.core.flowwindow import FlowWindow, FlowWindowPolicy
from icefloe.core.messages import Headers, StreamChunk
from icefloe.core.sequencer import ReorderBuffer
from icefloe.exceptions import (
    DuplicateSeq,
    ErrorCode,
    ReorderOverflow,
    StreamClosedError,
    StreamError,
)
from icefloe.runtime.inputs import StreamInputs
from icefloe.runtime.stream_types import (
    StreamBrief,
    StreamPhase,
    StreamStatistics,
    WindowTotals,
    chunk_size,
)
from icefloe.runtime.subscription import Subscription

if TYPE_CHECKING:
    from icefloe.runtime.registry import StreamRegistry

__all__ = [
    "StreamPhase",
    "StreamState",
    "StreamStatistics",
    "Subscription",
    "chunk_size",
    "window_totals",
]

#: consumed chunks trimmed at once; the log may hold this many beyond its limits
TRIM_BATCH = 32


class StreamState:
    """The shared log of one stream. Created and owned by a StreamRegistry.

    Invariant: ``_buf`` holds the contiguous seqs ``_head - len(_buf)`` to
    ``_head - 1``; ``_floor`` (the producer's pace: where the readers it waits
    for are) is exact after :meth:`_recompute_floor`; ``_bytes`` is at least
    the bytes held and exact after :meth:`_recount`; ``window`` (the
    effective window) stays within ``[1, window_limit]``.
    """

    __slots__ = (
        "_blocking_min",
        "_buf",
        "_bytes",
        "_c_floor",
        "_c_head",
        "_c_unread",
        "_floor",
        "_fw",
        "_fw_policy",
        "_head",
        "_readers",
        "_registry",
        "_reorder",
        "_room",
        "_room_len",
        "_solo",
        "_waiting",
        "budget_gate",
        "code",
        "created_ns",
        "deadline_handle",
        "delivered",
        "duplicates",
        "emitters",
        "headers",
        "history",
        "inputs",
        "linger_handle",
        "max_bytes",
        "message",
        "phase",
        "reorder_limit",
        "start_seq",
        "stream_id",
        "terminal_seen",
        "trace_id",
        "window",
        "window_limit",
    )

    def __init__(
        self,
        registry: StreamRegistry,
        stream_id: str,
        trace_id: str,
        headers: Headers,
        *,
        window: int,
        max_bytes: int,
        history: int,
        reorder_limit: int,
        start_seq: int = 0,
    ) -> None:
        self._registry = registry
        #: admission time (unix ns), where a first chunk's latency starts
        self.created_ns = time.time_ns()
        self.stream_id = stream_id
        self.trace_id = trace_id
        self.headers = headers
        #: the producer's window now, in chunks (adaptive: <= window_limit)
        self.window = window
        #: the configured window (``stream_buffer``, or ``Flow.start(window=)``)
        self.window_limit = window
        # The adaptive window's controller, made when the producer first waits.
        self._fw_policy: FlowWindowPolicy | None = registry.limits.adaptive_window
        self._fw: FlowWindow | None = None
        self.max_bytes = max_bytes
        self.history = history
        self.reorder_limit = reorder_limit
        self.start_seq = start_seq
        self._buf: deque[StreamChunk] = deque()
        self._head = start_seq  # next seq to release
        self._floor = start_seq
        # The slowest blocking reader's seq when the floor was last made exact
        # (the head if none): readers only move forward, so it is never too high.
        self._blocking_min = start_seq
        self._room_len = window  # see _recompute_floor
        self._bytes = 0
        # One reader and no history: the reader pops what it reads.
        self._solo = False
        self._reorder: ReorderBuffer[StreamChunk] | None = None
        # Weak references: a reader dropped without aclose (``break``) must be
        # collectable so that its finalizer can detach it and cancel the run.
        self._readers: list[weakref.ref[Subscription]] = []
        self._room: deque[asyncio.Future[None]] = deque()  # producers waiting
        self._waiting: list[asyncio.Future[None]] = []  # readers parked at the head
        self.phase = StreamPhase.RUNNING
        self.code: ErrorCode | None = None
        self.message = ""
        self.duplicates = 0
        self.delivered = 0  # chunks handed to readers that have since detached
        self.terminal_seen = False
        self.emitters: dict[int, Any] = {}  # per producing node, see context.py
        #: the stream's byte budgets gate (icefloe.runtime.budgets; None: none)
        self.budget_gate: Any = None
        # The last exact count of unread bytes (see unread_bytes): -1, none yet.
        self._c_floor = -1
        self._c_head = -1
        self._c_unread = 0
        self.deadline_handle: asyncio.TimerHandle | None = None
        self.linger_handle: asyncio.TimerHandle | None = None
        #: interactive inputs for the producing node, created on first use
        self.inputs: StreamInputs | None = None

    def __repr__(self) -> str:
        return (
            f"<StreamState {self.stream_id!r} {self.phase.label} head={self._head} "
            f"readers={len(self._readers)}>"
        )

    @property
    def next_seq(self) -> int:
        """The seq the stream releases next (chunks before it were released)."""
        return self._head

    @property
    def base(self) -> int:
        """The oldest seq still held."""
        return self._head - len(self._buf)

    # -- producing -------------------------------------------------------------

    def publish(self, chunk: StreamChunk) -> bool:
        """Release ``chunk`` into the log, or hold it until its turn.

        Duplicates (a seq already released or held) are dropped and counted:
        retried nodes and fan-in rely on that. Returns whether the producer
        may go on without waiting; when False, await :meth:`wait_room`.

        :raises StreamClosedError: the stream already ended.
        """
        if self.phase:
            if chunk.seq < self._head:
                self.duplicates += 1
                return True
            raise StreamClosedError(self.stream_id, self.code)
        seq = chunk.seq
        if seq == self._head and self._reorder is None:
            self._buf.append(chunk)
            self._head = seq + 1
            self._bytes += len(chunk.text) if chunk.data is None else chunk_size(chunk)
            if chunk.done:
                self.finish()
        else:
            self._publish_out_of_order(chunk)
        if self._waiting:
            self._wake_readers()
        # Cheap and never too generous (see _room_len); has_room() decides a no.
        return len(self._buf) < self._room_len and self._bytes < self.max_bytes

    def _append(self, chunk: StreamChunk) -> None:
        self._buf.append(chunk)
        self._head = chunk.seq + 1
        self._bytes += chunk_size(chunk)
        if chunk.done:
            self._end(StreamPhase.DONE, None, "")

    def _publish_out_of_order(self, chunk: StreamChunk) -> None:
        reorder = self._reorder
        if reorder is None:
            reorder = self._reorder = ReorderBuffer(self._head, self.reorder_limit)
        try:
            released = reorder.push(chunk.seq, chunk)
        except DuplicateSeq:
            self.duplicates += 1
            released = []
        except ReorderOverflow as exc:
            self.fail(ErrorCode.FAILED, f"gap in the stream: {exc}")
            raise StreamClosedError(self.stream_id, ErrorCode.FAILED) from exc
        for item in released:
            self._append(item)
            if self.phase:
                break
        if not reorder.pending:
            self._reorder = None

    def _wake_readers(self) -> None:
        waiting = self._waiting
        self._waiting = []
        for waiter in waiting:
            if not waiter.done():
                waiter.set_result(None)

    def has_room(self) -> bool:
        """Whether the producer may release another chunk without waiting (exact).

        A stream with history and no reader yet may fill its history first:
        a run started over HTTP should not stall before its client connects.
        """
        self._recompute_floor()
        if self._bytes >= self.max_bytes:
            self._recount()
            if self._bytes >= self.max_bytes:
                return False
        if not self._readers and self.history > self.window:
            return len(self._buf) < self.history
        return self._head - self._floor < self.window

    @property
    def credit(self) -> int:
        """Chunks the producer may release before it has to wait."""
        if self.phase:
            return 0
        self._recompute_floor()
        if self._bytes >= self.max_bytes:
            self._recount()
            if self._bytes >= self.max_bytes:
                return 0
        return max(0, self.window - (self._head - self._floor))

    async def wait_room(self) -> None:
        """Wait until the slowest reader makes room, or the stream ends.

        Finding the window full is the adaptive window's sample point: the
        window may shrink (the producer waits longer) or grow (it may not
        have to wait at all).
        """
        if self.phase or self.has_room():
            return
        if self._fw_policy is not None and self._readers and self._feedback() and self.has_room():
            return
        loop = asyncio.get_running_loop()
        while True:
            fut = loop.create_future()
            self._room.append(fut)
            try:
                await fut
            finally:
                if not fut.done():
                    fut.cancel()
                try:
                    self._room.remove(fut)
                except ValueError:
                    pass
            if self.phase or self.has_room():
                return

    def _feedback(self) -> bool:
        """Feed the window controller one sample; whether the window grew.

        Called with the floor exact (after :meth:`has_room`). The queue
        latency is the age of the oldest chunk the pace reader has not taken;
        chunks are stamped at creation (``StreamChunk.ts``), so the stream
        keeps no timestamps of its own.
        """
        buf = self._buf
        floor = self._floor
        base = self._head - len(buf)
        index = floor - base
        if not 0 <= index < len(buf):
            return False  # nothing unread: a byte limit stopped the producer
        # Chunk stamps are wall-clock: a clock step makes one odd sample at
        # most (a backward step reads as no wait); the controller's own
        # clock is monotonic, so its drain rate never sees the step.
        latency = max(0.0, (time.time_ns() - buf[index].ts) / 1e9)
        fw = self._fw
        if fw is None:
            assert self._fw_policy is not None
            fw = self._fw = FlowWindow(self.window_limit, self._fw_policy)
        elif latency <= fw.quiet_latency:
            return False  # the common case: a reader keeping up at the full window
        before = self.window
        start = self.start_seq
        window = fw.observe(time.monotonic(), latency, floor - start, self._head - start)
        if window == before:
            return False
        self.window = window
        self._room_len = window + max(0, index)
        return window > before

    # -- ending ----------------------------------------------------------------

    def finish(self) -> bool:
        """End normally: the ``done`` chunk was released. False if already ended."""
        return self._end(StreamPhase.DONE, None, "")

    def fail(self, code: ErrorCode, message: str = "") -> bool:
        """End abnormally; readers drain what was released, then get ``code``.

        Returns False if the stream had already ended.
        """
        return self._end(StreamPhase.FAILED, code, message)

    def cancel(self, code: ErrorCode = ErrorCode.CANCELLED, message: str = "") -> bool:
        """End now and drop everything unread; readers get ``code`` next.

        Used for cancellation and deadlines: chunks still queued are
        discarded, never turned into results. Returns False if already ended.
        """
        phase = StreamPhase.CANCELLED if code is ErrorCode.CANCELLED else StreamPhase.FAILED
        if not self._end(phase, code, message):
            return False
        self._drop_buffer()
        for ref in self._readers:
            reader = ref()
            if reader is not None:
                # Skipped, not delivered: keep delivered counts honest.
                reader._start += self._head - reader._pos
                reader._pos = self._head
        return True

    def _end(self, phase: StreamPhase, code: ErrorCode | None, message: str) -> bool:
        if self.phase:
            return False
        self.phase = phase
        self.code = code
        self.message = message or (code.value if code is not None else "")
        self._reorder = None
        if self.inputs is not None:
            self.inputs.close(code)
        if self.deadline_handle is not None:
            self.deadline_handle.cancel()
            self.deadline_handle = None
        self._wake_readers()
        self._wake_room()
        self._registry._on_terminal(self)
        return True

    def _wake_room(self) -> None:
        while self._room:
            fut = self._room.popleft()
            if not fut.done():
                fut.set_result(None)

    def _drop_buffer(self) -> None:
        self._buf.clear()
        self._bytes = 0
        self._floor = self._head
        self._room_len = self.window

    def unread_bytes(self) -> int:
        """Bytes released but not yet read by the readers that pace the stream.

        Retained history (chunks every reader has consumed, kept for
        resumption) is not counted. Exact, and incremental: unchanged since
        the last count, O(1); else O(chunks released or read since) while the
        chunks read since are still held, and O(unread chunks) when they are
        not (a solo reader pops what it reads).
        """
        self._recompute_floor()
        buf = self._buf
        head = self._head
        floor = self._floor
        base = head - len(buf)
        c_floor, c_head = self._c_floor, self._c_head
        if c_floor == floor and c_head == head:
            return self._c_unread
        if (
            base <= c_floor <= floor
            and c_floor <= c_head <= head
            and (floor - c_floor) + (head - c_head) < head - floor
        ):
            # unread = sum[c_floor, c_head) - sum[c_floor, floor) + sum[c_head, head)
            read = sum(map(chunk_size, islice(buf, c_floor - base, floor - base)))
            new = sum(map(chunk_size, islice(reversed(buf), 0, head - c_head)))
            unread = self._c_unread - read + new
        else:
            skip = floor - base
            unread = sum(map(chunk_size, islice(buf, skip if skip > 0 else 0, None)))
        self._c_floor, self._c_head, self._c_unread = floor, head, unread
        return unread

    def input_queue(self, limit: int) -> StreamInputs:
        """This stream's interactive input queue (created on first use).

        :raises StreamClosedError: the stream ended before any input queue existed.
        """
        if self.inputs is None:
            if self.phase:
                raise StreamClosedError(self.stream_id, self.code)
            self.inputs = StreamInputs(self.stream_id, limit)
        return self.inputs

    # -- readers ---------------------------------------------------------------

    def attach(
        self, from_seq: int | None, *, owner: bool = False, lag_limit: int | None = None
    ) -> Subscription:
        """A new reader starting at ``from_seq`` (None: at the live head).

        ``lag_limit`` None makes a *blocking* reader: the producer waits for
        it. A number makes a lag-tolerant reader (network clients): the
        producer waits for it only while it is fewer than ``lag_limit`` chunks
        behind; past that it may fall behind what the log holds, and its next
        read raises ``StreamError("history_gone")``. Memory stays bounded
        either way.

        :raises StreamError: ``history_gone`` when ``from_seq`` is no longer held.
        :raises ValueError: ``from_seq`` is negative or beyond the next seq.
        """
        if lag_limit is not None and lag_limit < 1:
            raise ValueError(f"lag_limit must be >= 1 or None, got {lag_limit!r}")
        base = self.base
        if from_seq is None:
            from_seq = self._head
        elif from_seq < 0:
            raise ValueError(f"from_seq must be >= 0, got {from_seq}")
        elif from_seq < base:
            raise StreamError(
                ErrorCode.HISTORY_GONE,
                f"seq {from_seq} is no longer retained; oldest is {base}",
                self.stream_id,
            )
        elif from_seq > self._head:
            raise ValueError(f"from_seq {from_seq} is beyond the stream's next seq {self._head}")
        reader = Subscription(self, from_seq, owner, lag_limit)
        if self.linger_handle is not None:
            self.linger_handle.cancel()
            self.linger_handle = None
        self._readers.append(reader._ref)
        self._solo = self._is_solo()
        if self._solo or from_seq < self._floor or len(self._readers) == 1:
            self._recompute_floor()
        elif lag_limit is None:
            # A stale floor is conservative; the blocking minimum must not be.
            if from_seq < self._blocking_min:
                self._blocking_min = from_seq
        elif self._room and from_seq > self._floor:
            # A new fastest lag-tolerant reader may raise the pace of a parked
            # producer, and nothing else would wake it: raise the floor in
            # O(1), up to the slowest blocking reader.
            self._raise_floor(min(self._blocking_min, from_seq))
        # Otherwise the floor can only rise with this reader: the stale one is
        # conservative (less room, and the producer's slow path recounts), and
        # a thousand clients attaching cost O(1) each instead of O(readers).
        return reader

    def _raise_floor(self, floor: int) -> None:
        if floor > self._floor:
            self._floor = floor
            self._floor_moved()

    def _detach(self, reader: Subscription) -> None:
        try:
            self._readers.remove(reader._ref)
        except ValueError:
            return
        self.delivered += reader._pos - reader._start
        self._solo = self._is_solo()
        if not self.phase or self._solo:
            # A finished stream has no producer to pace: skip the O(readers)
            # recount, or a thousand readers leaving at the end cost a million.
            # A solo reader pops the log's left end, so the log must be
            # trimmed to it (cheap with one reader).
            self._recompute_floor()
        if not self._readers:
            self._registry._on_unread(self)

    def _is_solo(self) -> bool:
        if len(self._readers) != 1 or self.history:
            return False
        reader = self._readers[0]()
        return reader is not None and reader._lag_limit is None

    def _recompute_floor(self) -> None:
        """Make ``_floor`` exact, trim what no reader needs, wake producers.

        The producer's pace (``_floor``) is the slowest blocking reader and
        the *fastest* lag-tolerant one: a single network client still holds
        its producer back, but one slow client among many cannot slow the
        rest; it may fall up to its ``lag_limit`` behind, then it is overrun.
        """
        head = self._head
        if not self._readers:
            floor = keep = self.base  # unread chunks wait for a first reader
        else:
            # keep: the oldest seq still held; history is kept behind the
            # slowest blocking reader, and behind the head for late resumers.
            floor = head
            keep = head - self.history
            fastest = -1
            for ref in self._readers:
                reader = ref()
                if reader is None:
                    continue
                pos = reader._pos
                limit = reader._lag_limit
                if limit is None:
                    floor = min(floor, pos)
                    keep = min(keep, pos - self.history)
                else:
                    fastest = max(fastest, pos)
                    keep = min(keep, max(pos, head - limit))
            self._blocking_min = floor
            if fastest >= 0:
                floor = min(floor, fastest)
        self._floor = floor
        self._trim(keep)
        self._floor_moved()

    def _floor_moved(self) -> None:
        """After ``_floor`` changed (and the log was trimmed): room and producers."""
        floor = self._floor
        # The log length at which the pace reader is a window behind, given
        # what is held before the floor now: until then publish needs no
        # recount (readers only move forward, so this never says yes wrongly).
        self._room_len = self.window + max(0, floor - self.base)
        if self._room and floor + self.window > self._head and self._bytes < self.max_bytes:
            self._wake_room()

    def _trim(self, keep_from: int) -> None:
        # Forget consumed chunks beyond the retained history: exactly for a
        # solo reader, else in batches of TRIM_BATCH (so steady readers do not
        # pay per chunk), and under byte pressure retained history too.
        buf = self._buf
        drop = keep_from - (self._head - len(buf))
        if drop >= len(buf):
            buf.clear()
            self._bytes = 0
            return
        if self._bytes >= self.max_bytes:
            self._recount()
            if self._bytes >= self.max_bytes:
                drop = max(drop, self._floor - (self._head - len(buf)))
        if drop <= 0 or (drop < TRIM_BATCH and not self._solo and self._bytes < self.max_bytes):
            return
        for _ in range(drop):
            buf.popleft()
        self._recount()

    def _recount(self) -> None:
        # Exact bytes held; O(chunks held), called only on slow paths.
        self._bytes = sum(map(chunk_size, self._buf))

    def statistics(self) -> StreamStatistics:
        pending = self._reorder.pending if self._reorder is not None else 0
        self._recount()
        return StreamStatistics(
            self.stream_id,
            self.headers.tenant,
            self.phase.label,
            self._head - 1,
            len(self._readers),
            len(self._buf),
            self._bytes,
            self.credit,
            pending,
            self.duplicates,
            self.code.value if self.code is not None else None,
            None if self._fw is None else self._fw.statistics(),
        )

    def brief(self) -> StreamBrief:
        """Who owns the stream and where it stands, in O(1) (no recount)."""
        headers = self.headers
        return StreamBrief(
            self.stream_id, headers.tenant, self.phase.label, self._head - 1, headers.priority
        )

    def held_bytes(self) -> int:
        """Bytes held now, counted exactly."""
        self._recount()
        return self._bytes

    @property
    def subscribers(self) -> int:
        return len(self._readers)

    def delivered_total(self) -> int:
        """Chunks handed to readers so far, attached or not."""
        live = (ref() for ref in self._readers)
        return self.delivered + sum(r._pos - r._start for r in live if r is not None)


def window_totals(states: Iterable[StreamState], adaptive: bool) -> WindowTotals:
    """The adaptive windows of ``states`` summed up, for ``flow.stats()``. O(streams)."""
    adapted = sum_window = increases = decreases = 0
    smallest: int | None = None
    for state in states:
        fw = state._fw
        if fw is None:
            continue
        stats = fw.statistics()
        adapted += 1
        sum_window += stats.window
        smallest = stats.window if smallest is None else min(smallest, stats.window)
        increases += stats.increases
        decreases += stats.decreases
    return WindowTotals(adaptive, adapted, sum_window, smallest, increases, decreases)
