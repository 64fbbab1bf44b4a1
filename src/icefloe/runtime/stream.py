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
"""

from __future__ import annotations

import asyncio
import enum
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

from icefloe.core.messages import Headers, Message, StreamChunk
from icefloe.core.sequencer import ReorderBuffer
from icefloe.exceptions import (
    ClosedResourceError,
    DuplicateSeq,
    EndOfStream,
    ErrorCode,
    ReorderOverflow,
    StreamClosedError,
    StreamError,
    WouldBlock,
)

if TYPE_CHECKING:
    from icefloe.runtime.channel import Channel
    from icefloe.runtime.registry import StreamRegistry

__all__ = ["StreamPhase", "StreamState", "StreamStatistics", "Subscription", "chunk_size"]

#: where a closed reader's cursor is parked (beyond any real seq)
_CLOSED_POS = 1 << 62

#: consumed chunks trimmed at once; the log may hold this many beyond its limits
TRIM_BATCH = 32


class StreamPhase(enum.IntEnum):
    """Where a stream is in its life; everything but RUNNING is terminal."""

    RUNNING = 0
    DONE = 1
    FAILED = 2
    CANCELLED = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class StreamStatistics(NamedTuple):
    """A snapshot of one stream."""

    #: the stream's id
    stream_id: str
    #: owning tenant
    tenant: str
    #: ``running``, ``done``, ``failed`` or ``cancelled``
    state: str
    #: highest released seq, -1 before the first chunk
    last_seq: int
    #: readers attached now
    subscribers: int
    #: chunks held (unread by the slowest reader, plus retained history)
    buffered: int
    #: bytes held, as counted by :func:`chunk_size`
    buffered_bytes: int
    #: chunks the producer may still release before it waits
    credit: int
    #: chunks held out of order waiting for a missing seq
    reorder_pending: int
    #: duplicate chunks dropped (retries, fan-in)
    duplicates: int
    #: the terminal code, if it ended abnormally
    code: str | None


def chunk_size(chunk: StreamChunk) -> int:
    """What a chunk counts against byte limits: its text plus str/bytes data.

    It is an estimate of the memory held, cheap enough for the hot path, not
    the wire size (that depends on the transport's encoding).
    """
    data = chunk.data
    if data is None:
        return len(chunk.text)
    if isinstance(data, str | bytes | bytearray):
        return len(chunk.text) + len(data)
    return len(chunk.text) + 64


class StreamState:
    """The shared log of one stream. Created and owned by a StreamRegistry.

    Invariant: ``_buf`` holds the contiguous seqs ``_head - len(_buf)`` to
    ``_head - 1``; ``_floor`` (the producer's pace: where the readers it waits
    for are) is exact after :meth:`_recompute_floor`; ``_bytes`` is at least
    the bytes held and exact after :meth:`_recount`.
    """

    __slots__ = (
        "_buf",
        "_bytes",
        "_floor",
        "_head",
        "_readers",
        "_registry",
        "_reorder",
        "_room",
        "_room_len",
        "_solo",
        "_waiting",
        "code",
        "deadline_handle",
        "delivered",
        "duplicates",
        "emitters",
        "headers",
        "history",
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
        self.stream_id = stream_id
        self.trace_id = trace_id
        self.headers = headers
        self.window = window
        self.max_bytes = max_bytes
        self.history = history
        self.reorder_limit = reorder_limit
        self.start_seq = start_seq
        self._buf: deque[StreamChunk] = deque()
        self._head = start_seq  # next seq to release
        self._floor = start_seq
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
        self.deadline_handle: asyncio.TimerHandle | None = None
        self.linger_handle: asyncio.TimerHandle | None = None

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
        """Wait until the slowest reader makes room, or the stream ends."""
        loop = asyncio.get_running_loop()
        while not self.phase and not self.has_room():
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
        self._recompute_floor()
        return reader

    def _detach(self, reader: Subscription) -> None:
        try:
            self._readers.remove(reader._ref)
        except ValueError:
            return
        self.delivered += reader._pos - reader._start
        self._solo = self._is_solo()
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
            if fastest >= 0:
                floor = min(floor, fastest)
        self._floor = floor
        self._trim(keep)
        # The log length at which the pace reader is a window behind, given
        # what is held before the floor now: until then publish needs no
        # recount (readers only move forward, so this never says yes wrongly).
        self._room_len = self.window + max(0, floor - self.base)
        if self._room and floor + self.window > head and self._bytes < self.max_bytes:
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


class Subscription:
    """An async iterator over one stream's chunks, in seq order.

    It ends after the ``done`` chunk, or raises :class:`StreamError` with the
    stream's terminal code. Leaving early (``break``, :meth:`aclose`, task
    cancellation, or dropping the last reference) detaches it; if it is the
    *owner* (the reader ``flow.stream`` made for the run it started) the
    stream is cancelled too, so its producers stop and its memory is freed.
    """

    __slots__ = (
        "__weakref__",
        "_closed",
        "_delivered",
        "_lag_limit",
        "_owner",
        "_pending",
        "_pos",
        "_ref",
        "_start",
        "_state",
        "_waiter",
    )

    def __init__(
        self, state: StreamState, pos: int, owner: bool, lag_limit: int | None = None
    ) -> None:
        self._state = state
        self._lag_limit = lag_limit
        # The message that starts the run, sent on the first wait: where to.
        self._pending: tuple[tuple[Channel[Message], ...], Message] | None = None
        self._ref = weakref.ref(self)
        self._pos = pos
        self._start = pos
        self._owner = owner
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._delivered = 0

    @property
    def stream_id(self) -> str:
        return self._state.stream_id

    @property
    def trace_id(self) -> str:
        return self._state.trace_id

    @property
    def next_seq(self) -> int:
        """The seq this reader returns next (where it stopped, once closed)."""
        return self._start + self.delivered if self._closed else self._pos

    @property
    def delivered(self) -> int:
        """Chunks this reader has returned."""
        return self._delivered if self._closed else self._pos - self._start

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> StreamChunk:
        state = self._state
        while True:
            # _take() inlined: this is the per-token path of every in-process
            # reader, and the call alone costs ~4% of a one-hop stream.
            pos = self._pos
            if pos < state._head:
                self._pos = pos + 1
                if state._solo:
                    chunk = state._buf.popleft()
                    if state._room:
                        state._wake_room()
                else:
                    buf = state._buf
                    index = pos - state._head + len(buf)
                    if index < 0:
                        raise self._overrun()
                    chunk = buf[index]
                    if state._room and pos >= state._floor:
                        state._recompute_floor()
                if chunk.done:
                    state.terminal_seen = True
                    self._release(cancel=False)
                return chunk
            ended = self._ended()
            if ended is not None:
                raise StopAsyncIteration if isinstance(ended, EndOfStream) else ended
            if self._pending is not None:
                await self._start_run()
                continue
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            state._waiting.append(waiter)
            try:
                await waiter
            except BaseException:
                self._waiter = None
                self._release(cancel=True)
                raise
            self._waiter = None

    def receive_nowait(self) -> StreamChunk:
        """The next chunk if one is held now.

        The same sequence as iterating, for edges that batch what is
        buffered into one write.

        :raises WouldBlock: nothing yet; await :meth:`wait`.
        :raises EndOfStream: the ``done`` chunk was already returned (or closed).
        :raises StreamError: the stream ended abnormally.
        """
        chunk = self._take()
        if chunk is not None:
            return chunk
        ended = self._ended()
        if ended is not None:
            raise ended
        raise WouldBlock(f"no chunk of {self._state.stream_id!r} yet")

    def _take(self) -> StreamChunk | None:
        """The next held chunk, or None; the per-chunk path of every read."""
        state = self._state
        pos = self._pos
        if pos >= state._head:
            return None
        self._pos = pos + 1
        if state._solo:
            # The only reader pops what it reads (see the module docstring).
            chunk = state._buf.popleft()
            if state._room:
                state._wake_room()
        else:
            buf = state._buf
            index = pos - state._head + len(buf)
            if index < 0:
                raise self._overrun()
            chunk = buf[index]
            if state._room and pos >= state._floor:
                # A producer waits, and this reader may be what it waits for
                # (only one at or past the floor can move it): recompute.
                state._recompute_floor()
        if chunk.done:
            state.terminal_seen = True
            self._release(cancel=False)
        return chunk

    def _ended(self) -> EndOfStream | StreamError | None:
        """Why nothing more will come (None: more may come); detaches on the end."""
        state = self._state
        if self._closed:
            return EndOfStream(f"reader of {state.stream_id!r} is closed")
        if not state.phase:
            return None
        state.terminal_seen = True
        self._release(cancel=False)
        if state.phase is StreamPhase.DONE:
            return EndOfStream(f"stream {state.stream_id!r} is done")
        assert state.code is not None
        return StreamError(state.code, state.message, state.stream_id)

    async def wait(self) -> None:
        """Wait until :meth:`receive_nowait` has something to say (a chunk or an end).

        Cancelling the wait (a timeout, for heartbeats) keeps the reader attached.
        """
        state = self._state
        if self._pos < state._head or self._closed or state.phase:
            return
        if self._pending is not None:
            await self._start_run()
            return
        waiter = asyncio.get_running_loop().create_future()
        state._waiting.append(waiter)
        try:
            await waiter
        finally:
            if not waiter.done():
                waiter.cancel()

    def _overrun(self) -> StreamError:
        # A lag-tolerant reader fell behind what the log holds: it is cut.
        self._pos -= 1
        self._release(cancel=False)
        return StreamError(
            ErrorCode.HISTORY_GONE,
            f"the reader fell more than {self._lag_limit} chunks behind",
            self._state.stream_id,
        )

    async def _start_run(self) -> None:
        assert self._pending is not None
        targets, message = self._pending
        self._pending = None
        try:
            for inbox in targets:
                await inbox.send(message)
        except ClosedResourceError:
            self._state.cancel(ErrorCode.CANCELLED, "the flow stopped")
        except BaseException:
            self._release(cancel=True)
            raise

    def _release(self, *, cancel: bool) -> None:
        if self._closed:
            return
        self._closed = True
        state = self._state
        state._detach(self)
        # Park the cursor past any seq, so the hot path in __anext__ falls
        # through to the closed check instead of reading the log again.
        self._delivered = self._pos - self._start
        self._pos = _CLOSED_POS
        if cancel and self._owner and not state.phase:
            state._registry._abandon(state)

    async def aclose(self) -> None:
        """Stop reading. Idempotent; an owner that leaves early cancels the stream."""
        self._release(cancel=True)

    def close(self) -> None:
        """Synchronous :meth:`aclose`."""
        self._release(cancel=True)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release(cancel=True)

    def __del__(self) -> None:
        # ``break`` out of ``async for`` drops the last reference without
        # calling aclose: clean up here, as async generators' finalizers do.
        if not self._closed:
            try:
                self._release(cancel=True)
            except Exception:  # pragma: no cover - interpreter shutdown
                pass
