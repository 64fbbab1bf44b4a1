"""One stream's shell: the asyncio side of a :class:`~icefloe.core.streamlog.StreamLog`.

The log (``icefloe.core.streamlog``) holds the chunks in seq order and one
cursor per reader (:class:`Subscription`); it never waits. A
:class:`StreamState` wraps it with what needs an event loop or the rest of
the runtime: the futures of producers waiting for room and of readers
waiting for data, the stream's phase and terminal code, the registry's
callbacks (:class:`StreamHost`), timers (deadline, linger) and the adaptive
window's feedback. The producer waits while the slowest reader is
``stream_buffer`` chunks or ``stream_max_bytes`` bytes behind; that one rule
gives backpressure, bounded memory and late joining.

Two parts live in their own modules: the waiting futures
(:mod:`icefloe.runtime.stream_waiters`) and the adaptive window's controller
(:mod:`icefloe.runtime.stream_window`), sampled each time the producer finds
the window full (``Limits.adaptive_window``).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import TYPE_CHECKING, Any, Protocol

from icefloe.core.flowwindow import FlowWindowStatistics
from icefloe.core.messages import Headers, StreamChunk
from icefloe.core.streamlog import TRIM_BATCH, Cursor, StreamLog
from icefloe.exceptions import (
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
    chunk_size,
)
from icefloe.runtime.stream_waiters import StreamWaiters
from icefloe.runtime.stream_window import WindowFeedback, window_totals
from icefloe.runtime.subscription import Kickoff, Subscription

if TYPE_CHECKING:
    from icefloe.runtime.budgets import Gate
    from icefloe.runtime.durable import DurableRun
    from icefloe.runtime.limits import Limits

__all__ = [
    "TRIM_BATCH",
    "StreamHost",
    "StreamPhase",
    "StreamState",
    "StreamStatistics",
    "Subscription",
    "chunk_size",
    "window_totals",
]


class StreamHost(Protocol):
    """What a stream needs of its owner (the :class:`StreamRegistry`)."""

    @property
    def limits(self) -> Limits: ...

    def stream_ended(self, state: StreamState) -> None:
        """``state`` reached a terminal phase (called once)."""

    def stream_unread(self, state: StreamState) -> None:
        """The last reader of ``state`` detached."""

    def stream_abandoned(self, state: StreamState) -> None:
        """The owning reader of ``state`` left early: cancel it and its run."""


class StreamState:
    """One stream: its log, its waiters and its life. Created by a StreamRegistry.

    The log's invariants are in :mod:`icefloe.core.streamlog`; here, the
    phase only moves from RUNNING to one terminal phase, and the log is
    CLOSED once the phase is terminal.
    """

    __slots__ = (
        "_adaptive",
        "_host",
        "_waiters",
        "budget_gate",
        "code",
        "created_ns",
        "deadline_handle",
        "durable",
        "emitters",
        "headers",
        "inputs",
        "linger_handle",
        "log",
        "message",
        "phase",
        "stream_id",
        "terminal_seen",
        "trace_id",
    )

    def __init__(
        self,
        host: StreamHost,
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
        self._host = host
        #: admission time (unix ns), where a first chunk's latency starts
        self.created_ns = time.time_ns()
        self.stream_id = stream_id
        self.trace_id = trace_id
        self.headers = headers
        self._waiters = StreamWaiters()
        #: the chunks and the readers' cursors (the pure state machine)
        self.log = StreamLog(
            start_seq,
            window=window,
            max_bytes=max_bytes,
            history=history,
            reorder_limit=reorder_limit,
            on_room=self._waiters.wake_producers,
        )
        policy = host.limits.adaptive_window
        self._adaptive = None if policy is None else WindowFeedback(policy)
        self.phase = StreamPhase.RUNNING
        self.code: ErrorCode | None = None
        self.message = ""
        self.terminal_seen = False
        self.emitters: dict[int, Any] = {}  # per producing node, see context.py
        #: the stream's byte budgets gate (icefloe.runtime.budgets; None: none)
        self.budget_gate: Gate | None = None
        self.deadline_handle: asyncio.TimerHandle | None = None
        self.linger_handle: asyncio.TimerHandle | None = None
        #: interactive inputs for the producing node, created on first use
        self.inputs: StreamInputs | None = None
        #: the run's store record (runtime/durable.py; None: memory only)
        self.durable: DurableRun | None = None

    def __repr__(self) -> str:
        return (
            f"<StreamState {self.stream_id!r} {self.phase.label} head={self.log.next_seq} "
            f"readers={self.log.readers}>"
        )

    @property
    def next_seq(self) -> int:
        """The seq the stream releases next (chunks before it were released)."""
        return self.log.next_seq

    @property
    def base(self) -> int:
        """The oldest seq still held."""
        return self.log.base

    @property
    def start_seq(self) -> int:
        return self.log.limits.start_seq

    @property
    def history(self) -> int:
        """Consumed chunks kept for late readers (``stream_history``)."""
        return self.log.limits.history

    @property
    def window(self) -> int:
        """The producer's window now, in chunks (adaptive: <= window_limit)."""
        return self.log.window

    @property
    def window_limit(self) -> int:
        """The configured window (``stream_buffer``, or ``Flow.start(window=)``)."""
        return self.log.limits.window_limit

    @property
    def max_bytes(self) -> int:
        return self.log.limits.max_bytes

    @property
    def duplicates(self) -> int:
        """Duplicate chunks dropped (retries, fan-in)."""
        return self.log.duplicates

    # -- producing -------------------------------------------------------------

    def publish(self, chunk: StreamChunk) -> bool:
        """Release ``chunk`` into the log, or hold it until its turn.

        Duplicates (a seq already released or held) are dropped and counted:
        retried nodes and fan-in rely on that. Returns whether the producer
        may go on without waiting; when False, await :meth:`wait_room`.

        :raises StreamClosedError: the stream already ended, or a gap in the
            seqs outgrew ``reorder_limit`` (the stream fails).
        """
        if self.phase:
            if chunk.seq < self.log.next_seq:
                self.log.append(chunk)  # counted as a duplicate
                return True
            raise StreamClosedError(self.stream_id, self.code)
        try:
            if self.log.append(chunk):
                return True
        except ReorderOverflow as exc:
            self.reorder_overflow(exc)
        return self.settle()

    def settle(self) -> bool:
        """The rest of a publish whose :meth:`StreamLog.append` returned False:
        wake parked readers, end the stream on its ``done`` chunk; returns the
        cheap room check (False: await :meth:`wait_room`)."""
        waiters = self._waiters
        if waiters.readers:
            waiters.wake_readers()
        log = self.log
        # in_order: OPEN, the common case, with no call to the state property.
        if not log.in_order and log.state and not self.phase:
            self.finish()
        count = log.byte_count
        return len(log.queue) < log.room_len and count.bound < count.limit  # has_room_fast()

    def reorder_overflow(self, exc: ReorderOverflow) -> None:
        """A gap in the seqs outgrew ``reorder_limit``: the stream fails.

        :raises StreamClosedError: always.
        """
        self.fail(ErrorCode.FAILED, f"gap in the stream: {exc}")
        raise StreamClosedError(self.stream_id, ErrorCode.FAILED) from exc

    def park_reader(self, waiter: asyncio.Future[None]) -> None:
        """Resolve ``waiter`` on the next publish or the end of the stream."""
        self._waiters.park_reader(waiter)
        self.log.want_data()

    def has_room(self) -> bool:
        """Whether the producer may release another chunk without waiting (exact)."""
        return self.log.has_room()

    @property
    def credit(self) -> int:
        """Chunks the producer may release before it has to wait."""
        if self.phase:
            return 0
        return self.log.credit()

    @property
    def producers_waiting(self) -> int:
        """Producers waiting in :meth:`wait_room` now."""
        return self._waiters.producers

    async def wait_room(self) -> None:
        """Wait until the slowest reader makes room, or the stream ends.

        Finding the window full is the adaptive window's sample point: the
        window may shrink (the producer waits longer) or grow (it may not
        have to wait at all).
        """
        log = self.log
        if self.phase or log.has_room():
            return
        adaptive = self._adaptive
        if adaptive is not None and log.readers and adaptive.sample(log) and log.has_room():
            return
        await self._waiters.wait_room(log.want_room, self._room_or_end)

    def _room_or_end(self) -> bool:
        return bool(self.phase) or self.log.has_room()

    def window_statistics(self) -> FlowWindowStatistics | None:
        """The adaptive window's figures (None until the producer first waited)."""
        return None if self._adaptive is None else self._adaptive.statistics()

    def unread_bytes(self) -> int:
        """Bytes released but not yet read by the readers that pace the stream.

        Retained history is not counted; exact and incremental (see
        :meth:`StreamLog.unread_bytes`).
        """
        return self.log.unread_bytes()

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
        self.log.discard()
        return True

    def _end(self, phase: StreamPhase, code: ErrorCode | None, message: str) -> bool:
        if self.phase:
            return False
        self.phase = phase
        self.code = code
        self.message = message or (code.value if code is not None else "")
        self.log.close()
        if self.inputs is not None:
            self.inputs.close(code)
        if self.deadline_handle is not None:
            self.deadline_handle.cancel()
            self.deadline_handle = None
        self._waiters.wake_readers()
        self._waiters.wake_producers()
        self._host.stream_ended(self)
        return True

    def release(self) -> None:
        """Drop what the stream holds: it left the registry."""
        self.log.discard()
        self.emitters.clear()
        self.budget_gate = None

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
        self,
        from_seq: int | None,
        *,
        owner: bool = False,
        lag_limit: int | None = None,
        kickoff: Kickoff | None = None,
    ) -> Subscription:
        """A new reader starting at ``from_seq`` (None: at the live head).

        ``lag_limit`` None makes a *blocking* reader: the producer waits for
        it. A number makes a lag-tolerant reader (network clients): the
        producer waits for it only while it is fewer than ``lag_limit`` chunks
        behind; past that it may fall behind what the log holds, and its next
        read raises ``StreamError("history_gone")``. Memory stays bounded
        either way. ``kickoff`` (the inboxes and the message that start the
        run) is sent on the reader's first wait.

        :raises StreamError: ``history_gone`` when ``from_seq`` is no longer held.
        :raises ValueError: ``from_seq`` is negative or beyond the next seq.
        """
        log = self.log
        if from_seq is not None:
            if from_seq < 0:
                raise ValueError(f"from_seq must be >= 0, got {from_seq}")
            if from_seq < log.base:
                raise StreamError(
                    ErrorCode.HISTORY_GONE,
                    f"seq {from_seq} is no longer retained; oldest is {log.base}",
                    self.stream_id,
                )
            if from_seq > log.next_seq:
                raise ValueError(
                    f"from_seq {from_seq} is beyond the stream's next seq {log.next_seq}"
                )
        cursor = log.attach(from_seq, lag_limit)
        reader = Subscription(self, cursor, owner, kickoff)
        cursor.owner = weakref.ref(reader)
        if self.linger_handle is not None:
            self.linger_handle.cancel()
            self.linger_handle = None
        return reader

    def detach(self, cursor: Cursor, *, abandon: bool) -> None:
        """A reader leaves; ``abandon``: it owns the run and left early (cancel it)."""
        if not self.log.detach(cursor):
            return
        if not self.log.readers:
            self._host.stream_unread(self)
        if abandon and not self.phase:
            self._host.stream_abandoned(self)

    def readers(self) -> list[Subscription]:
        """The readers attached now (for inspection and tests)."""
        live = (c.owner() if isinstance(c.owner, weakref.ref) else None for c in self.log.cursors())
        return [r for r in live if isinstance(r, Subscription)]

    @property
    def subscribers(self) -> int:
        return self.log.readers

    def delivered_total(self) -> int:
        """Chunks handed to readers so far, attached or not."""
        return self.log.delivered_total()

    # -- figures ---------------------------------------------------------------

    def statistics(self) -> StreamStatistics:
        log = self.log
        return StreamStatistics(
            self.stream_id,
            self.headers.tenant,
            self.phase.label,
            log.next_seq - 1,
            log.readers,
            log.held,
            log.held_bytes(),
            self.credit,
            log.reorder_pending,
            log.duplicates,
            self.code.value if self.code is not None else None,
            self.window_statistics(),
        )

    def brief(self) -> StreamBrief:
        """Who owns the stream and where it stands, in O(1) (no recount)."""
        headers = self.headers
        last = self.log.next_seq - 1
        return StreamBrief(self.stream_id, headers.tenant, self.phase.label, last, headers.priority)

    def held_bytes(self) -> int:
        """Bytes held now, counted exactly."""
        return self.log.held_bytes()

    @property
    def bytes_bound(self) -> int:
        """An upper bound of the bytes held, in O(1)."""
        return self.log.byte_count.bound
