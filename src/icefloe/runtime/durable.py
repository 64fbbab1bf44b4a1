"""Durable streams: chunks reach the store before any reader sees them.

A run whose nodes ask for ``at_least_once`` or ``exactly_once`` (and whose
flow has a store) gets a :class:`DurableRun`. Its producer does not release
chunks into the stream's log; it hands them to the flow's
:class:`StoreWriter`, which batches the pending chunks of every durable
stream (one ``Store.append`` per stream and round, the rounds of all streams
concurrently, so a backend with group commit folds them into one commit) and
releases each chunk into the log only after its ``append`` returned. A
reader therefore never sees a chunk the store does not hold.

Backpressure (every buffer is bounded): a producer waits while the writer
holds ``max_pending`` chunks in all (in flight included), or ``max_batch``
not yet taken of its own stream, or while its stream's log is full (the
window of today's streams). The writer takes a stream's pending chunks when
its round starts, so the producer fills the next batch while one commits
(two batches of a stream at most: one in flight, one pending). A batch
goes to the store as a :class:`~icefloe.store.batch.ChunkBatch`, encoded
by the backend as it keeps it (one segment record for SQLite, a record per
chunk for the others), and a stored batch reaches the log in one
``extend``. A checkpoint travels in the
same queue and is written in the same ``append`` as the chunks it covers.

The terminal of a recorded run (done, failed, cancelled) is written after
its last chunk. A flow that stops (a deploy, ``flow.stop()``) writes what is
pending and leaves its durable runs unfinished in the store, so the next
flow on that store resumes or ends them (:mod:`icefloe.runtime.recovery`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import operator
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from icefloe.core.bytecount import chunk_size
from icefloe.core.messages import StreamChunk
from icefloe.core.reliability import Reliability
from icefloe.exceptions import ErrorCode, ReorderOverflow, StreamClosedError
from icefloe.store.types import NO_SEQ, Checkpoint, RunRecord, Terminal

if TYPE_CHECKING:
    from icefloe.runtime.stream import StreamState
    from icefloe.store.protocol import Store

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_PENDING",
    "DurableRun",
    "DurableStatistics",
    "StoreWriter",
    "current_run",
]

log = logging.getLogger("icefloe.durable")

#: chunks waiting for the store, all durable streams together, before producers wait
DEFAULT_MAX_PENDING = 4096
#: chunks of one stream in one ``append`` at most (also its pending limit; measured
#: with bench/run.py one_hop_at_least_once: 256 gave 0.30x, 512 0.39x, p50 about 2 ms)
DEFAULT_MAX_BATCH = 512
#: seconds a stopping flow waits for its pending chunks to be written
CLOSE_FLUSH_S = 5.0
#: seconds between retention sweeps of ended runs
SWEEP_EVERY_S = 60.0

#: the durable run of the invocation running now (set by the node runner)
_CURRENT: contextvars.ContextVar[DurableRun | None] = contextvars.ContextVar(
    "icefloe_durable_run", default=None
)


def current_run() -> DurableRun | None:
    """The durable run of the running invocation, None outside one."""
    return _CURRENT.get()


def enter_run(run: DurableRun | None) -> contextvars.Token[DurableRun | None]:
    """Make ``run`` the current one for this invocation (the runner calls it)."""
    return _CURRENT.set(run)


def leave_run(token: contextvars.Token[DurableRun | None]) -> None:
    _CURRENT.reset(token)


_TEXT = operator.attrgetter("text")
_DATA = operator.attrgetter("data")


def _bytes_of(chunks: list[StreamChunk]) -> int:
    """What ``chunks`` count against their log's byte limit (``chunk_size``,
    summed): by builtins when no chunk has data, the common case."""
    datas = list(map(_DATA, chunks))
    if datas.count(None) == len(datas):
        return sum(map(len, map(_TEXT, chunks)))
    return sum(map(chunk_size, chunks))


class DurableStatistics(NamedTuple):
    """The store writer's counters (``flow.stats().durable``)."""

    #: the store, as ``Store.name`` says it (no secret)
    store: str
    #: durable or recorded runs the writer tracks now
    runs: int
    #: chunks waiting for the store now
    pending: int
    #: ``Store.append`` calls made
    appends: int
    #: chunks written
    chunks_stored: int
    #: re-emitted chunks dropped because the store held their seq (the stored one wins)
    duplicates_dropped: int
    #: checkpoints written
    checkpoints: int
    #: producers that waited for the writer
    producer_waits: int
    #: store calls that failed (each failed its stream with ``unavailable``)
    failures: int
    #: runs resumed after a restart
    resumed: int = 0
    #: runs ended with ``interrupted`` after a restart
    interrupted: int = 0


class _Batch(NamedTuple):
    """One append the writer took: chunks out of a run's pending list, and
    the run's checkpoint if they cover it."""

    chunks: list[StreamChunk]
    checkpoint: Checkpoint | None


class DurableRun:
    """One run the store records: where its stream stands in the store."""

    __slots__ = (
        "checkpoint",
        "created",
        "emitted_seq",
        "ending",
        "key",
        "pending",
        "put_seq",
        "record",
        "replay_from",
        "restored_state",
        "resumed_from",
        "sid",
        "state",
        "stored_seq",
        "writer",
    )

    def __init__(
        self,
        writer: StoreWriter,
        record: RunRecord,
        *,
        created: bool = False,
        stored_seq: int = NO_SEQ,
        checkpoint_seq: int = NO_SEQ,
        restored_state: Any = None,
    ) -> None:
        self.writer = writer
        self.record = record
        #: the stream id (a plain slot: the writer reads it per chunk)
        self.sid = record.stream_id
        #: whether the store holds the run already
        self.created = created
        #: the stream this run produces (set at admission)
        self.state: StreamState | None = None
        #: the last seq the store holds
        self.stored_seq = stored_seq
        #: the last seq queued for the store (>= stored_seq)
        self.put_seq = stored_seq
        #: the last seq the node emitted, dropped replays included (checkpoints cover it)
        self.emitted_seq = checkpoint_seq
        #: the seq a resumed node's automatic numbering starts at
        self.replay_from = checkpoint_seq + 1
        #: what ctx.restored_state and ctx.resumed_from answer
        self.restored_state = restored_state
        self.resumed_from = stored_seq
        self.pending: list[StreamChunk] = []
        self.checkpoint: Checkpoint | None = None
        self.ending: Terminal | None = None
        self.key: str | None = None

    @property
    def stream_id(self) -> str:
        return self.record.stream_id

    @property
    def stores_chunks(self) -> bool:
        """Whether chunks go through the store (a recorded at_most_once run's do not)."""
        return self.record.reliability.rank > 0

    @property
    def exactly_once(self) -> bool:
        return self.record.reliability is Reliability.EXACTLY_ONCE

    async def put(self, chunk: StreamChunk) -> None:
        """Queue ``chunk`` for the store; it reaches readers once stored."""
        await self.writer.put(self, chunk)


class StoreWriter:
    """The flow's one store-writer task and its bounded pending buffer."""

    def __init__(
        self,
        store: Store,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_batch: int = DEFAULT_MAX_BATCH,
        retention_s: float = 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_pending < 1 or max_batch < 1:
            raise ValueError("max_pending and max_batch must be >= 1")
        self.store = store
        self.max_pending = max_pending
        self.max_batch = max_batch
        self.retention_s = retention_s
        self._clock = clock
        self.runs: dict[str, DurableRun] = {}
        self._dirty: dict[str, DurableRun] = {}
        self._pending = 0
        self._wake = asyncio.Event()
        self._round: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._closing = False
        #: the writer task is told to end (close() has flushed what it could)
        self._stopping = False
        #: the store could not be opened: durable runs fail at once
        self._dead = False
        self._appends = self._stored = self._dropped = self._checkpoints = 0
        self._waits = self._failures = 0
        self.resumed = self.interrupted = 0
        # The record codec (CRC32C frames) loads with the first store, not with icefloe.
        from icefloe.store import records
        from icefloe.store.batch import ChunkBatch

        self._batch = ChunkBatch
        self._encode_state = records.encode_state

    # -- life cycle ------------------------------------------------------------

    def start(self, recover: Callable[[], Any]) -> None:
        """Open the store, run ``recover()`` (a coroutine function), then write."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._task = loop.create_task(self._main(recover), name="icefloe:store-writer")

    async def ready(self) -> None:
        """Wait until the store is open and recovery ran.

        :raises StoreUnavailable: the store could not be opened.
        """
        if self._ready is None:
            raise RuntimeError("the store writer has not started")
        await asyncio.shield(self._ready)

    async def close(self) -> None:
        """Write what is pending (bounded), stop, close the store. Idempotent.

        Runs still producing stay unfinished in the store: the next flow
        over it resumes or ends them.
        """
        if self._closing:
            return
        self._closing = True
        task = self._task
        if task is not None and not task.done():
            deadline = asyncio.get_running_loop().time() + CLOSE_FLUSH_S
            while self._dirty and not task.done():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    log.warning("store writer: %d chunks unwritten at close", self._pending)
                    break
                try:
                    async with asyncio.timeout(remaining):
                        await self._next_round()
                except TimeoutError:
                    continue
            # A cancel landing mid-command may come out of the store's client
            # as another error, which _flush absorbs: the loop also stops on
            # this flag, woken, so that close() never waits forever.
            self._stopping = True
            task.cancel()
            self._wake.set()
            await asyncio.gather(task, return_exceptions=True)
        self._wake_producers()
        try:
            await self.store.close()
        except Exception as exc:
            log.warning("closing the store %s failed: %s", self.store.name, exc)

    # -- runs ------------------------------------------------------------------

    def track(self, run: DurableRun, state: StreamState) -> None:
        """``run`` produces ``state`` from now on."""
        run.state = state
        if self._dead:
            state.fail(ErrorCode.UNAVAILABLE, "the stream's store could not be opened")
            return
        self.runs[run.stream_id] = run
        if not run.created:
            self._mark(run)

    def forget(self, stream_id: str) -> None:
        """Write nothing more of ``stream_id`` (another process took it over, issue 12)."""
        run = self.runs.pop(stream_id, None)
        self._dirty.pop(stream_id, None)
        if run is not None and run.pending:
            self._pending -= len(run.pending)
            run.pending.clear()
            self._wake_producers()

    def lookup(self, trace_id: str) -> DurableRun | None:
        """The run of ``trace_id`` (its stream id is its trace id), if tracked."""
        return self.runs.get(trace_id)

    def ended(self, state: StreamState) -> None:
        """``state`` reached its terminal: record it after its last stored chunk."""
        run = self.runs.get(state.stream_id)
        if run is None or self._closing or run.ending is not None:
            return
        if run.pending:
            # Chunks not yet stored were never seen by a reader: they go.
            self._pending -= len(run.pending)
            run.pending.clear()
            self._wake_producers()
        if state.code is not None:
            run.checkpoint = None  # it may cover chunks that were dropped
        code = None if state.code is None else state.code.value
        run.ending = Terminal(state.phase.label, code, state.message, self._clock())
        self._mark(run)

    # -- producing -------------------------------------------------------------

    async def put(self, run: DurableRun, chunk: StreamChunk) -> None:
        """Queue ``chunk`` for the store; return once the producer may go on."""
        if not self.offer(run, chunk):
            await self.settle(run, chunk)

    def offer(self, run: DurableRun, chunk: StreamChunk) -> bool:
        """Queue ``chunk`` for the store; whether its producer may go on at once.

        False: it must ``await settle(run, chunk)`` (a pending bound or its
        stream's log is full, or its stream ended). The split spares the
        common case a coroutine per chunk (``emit_chunk`` calls this).

        :raises ValueError: ``chunk`` leaves a gap in its stream's seqs.
        """
        seq = chunk.seq
        if seq > run.emitted_seq:
            run.emitted_seq = seq
        if seq <= run.put_seq:
            # Stored (or queued) already: a resumed node replaying, a retry.
            self._dropped += 1
            return True
        if seq != run.put_seq + 1:
            raise ValueError(
                f"stream {run.stream_id}: a durable stream takes its seqs in order; "
                f"expected {run.put_seq + 1}, got {seq}"
            )
        state = run.state
        assert state is not None
        pending = run.pending
        pending.append(chunk)
        run.put_seq = seq
        self._pending += 1
        dirty = self._dirty
        if run.sid not in dirty:  # _mark(), written out: it runs per chunk
            dirty[run.sid] = run
            self._wake.set()
        # The log's room, as StreamLog.has_room_fast() checks it, written out.
        log = state.log
        count = log.byte_count
        return (
            not state.phase
            and self._pending < self.max_pending
            and len(pending) < self.max_batch
            and len(log.queue) < log.room_len
            and count.bound < count.limit
        )

    async def settle(self, run: DurableRun, chunk: StreamChunk) -> None:
        """Wait while ``chunk`` (just offered) holds its producer back.

        :raises StreamClosedError: the stream ended (not for its done chunk).
        """
        state = run.state
        assert state is not None
        while not state.phase and (
            self._pending >= self.max_pending or len(run.pending) >= self.max_batch
        ):
            self._waits += 1
            await self._next_round()
        if not state.phase and not state.log.has_room_fast() and not state.has_room():
            await state.wait_room()
        if state.phase and not chunk.done:
            raise StreamClosedError(run.stream_id, state.code)

    async def checkpoint(self, run: DurableRun, value: Any) -> None:
        """Queue ``value`` as the run's state after its last emitted chunk."""
        run.checkpoint = Checkpoint(run.emitted_seq, self._encode_state(value))
        self._mark(run)
        state = run.state
        if state is not None and state.phase:
            raise StreamClosedError(run.stream_id, state.code)

    # -- the writer task ----------------------------------------------------------

    def _mark(self, run: DurableRun) -> None:
        dirty = self._dirty
        if run.stream_id not in dirty:
            dirty[run.stream_id] = run
            self._wake.set()

    async def _next_round(self) -> None:
        if self._round is None:
            self._round = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._round)

    def _wake_producers(self) -> None:
        done, self._round = self._round, None
        if done is not None and not done.done():
            done.set_result(None)

    async def _main(self, recover: Callable[[], Any]) -> None:
        assert self._ready is not None
        try:
            await self.store.open()
            await recover()
        except Exception as exc:
            log.error("store %s could not be opened: %s", self.store.name, exc)
            self._ready.set_exception(exc)
            self._ready.exception()  # retrieved: ready() re-raises it to each caller
            self._dead = True
            for run in list(self.runs.values()):
                self._failed(run, exc)
            return
        self._ready.set_result(None)
        next_sweep = asyncio.get_running_loop().time() + SWEEP_EVERY_S
        while not self._stopping:
            try:
                async with asyncio.timeout(SWEEP_EVERY_S):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            while self._dirty and not self._stopping:
                batch, self._dirty = self._dirty, {}
                takes = [(run, self._take(run)) for run in batch.values()]
                # The taken chunks left their pending lists: producers held by
                # a full list fill the next batch while this one commits.
                self._wake_producers()
                if len(takes) == 1:
                    await self._flush(*takes[0])
                else:
                    await asyncio.gather(*(self._flush(run, taken) for run, taken in takes))
                self._wake_producers()
            if asyncio.get_running_loop().time() >= next_sweep:
                next_sweep += SWEEP_EVERY_S
                await self._sweep()

    def _take(self, run: DurableRun) -> _Batch | None:
        """``run``'s next append, its chunks out of its pending list (None:
        the run is not tracked any more, its terminal is written)."""
        if self.runs.get(run.stream_id) is not run:
            return None
        chunks = run.pending[: self.max_batch]
        # Out of the pending list while in flight (an ending clears the rest),
        # still counted in the pending total until stored: producers wait on it.
        del run.pending[: len(chunks)]
        checkpoint = run.checkpoint
        last = chunks[-1].seq if chunks else run.stored_seq
        if checkpoint is not None and checkpoint.seq > last:
            checkpoint = None  # it covers chunks of a later batch
        return _Batch(chunks, checkpoint)

    async def _flush(self, run: DurableRun, batch: _Batch | None) -> None:
        if batch is None:
            return
        chunks, checkpoint = batch
        store = self.store
        sid = run.stream_id
        try:
            if not run.created:
                await store.create_run(run.record)
                run.created = True
            if chunks or checkpoint is not None:
                await self._append(run, chunks, checkpoint)
            if run.pending or run.checkpoint is not None:
                self._dirty[sid] = run
            elif run.ending is not None:
                await store.end_run(sid, run.ending)
                self.runs.pop(sid, None)
                self._dirty.pop(sid, None)
        except Exception as exc:
            self._pending -= len(chunks)
            self._failed(run, exc)

    async def _append(
        self, run: DurableRun, chunks: list[StreamChunk], checkpoint: Checkpoint | None
    ) -> None:
        batch = self._batch(chunks) if chunks else ()
        await self.store.append(run.stream_id, batch, checkpoint=checkpoint)
        self._appends += 1
        self._stored += len(chunks)
        self._pending -= len(chunks)
        if checkpoint is not None:
            self._checkpoints += 1
            if run.checkpoint is checkpoint:
                run.checkpoint = None
        if not chunks:
            return
        run.stored_seq = chunks[-1].seq
        state = run.state
        assert state is not None
        if state.phase:
            return  # it ended meanwhile; the store keeps what it holds
        # Stored: now readers may see them. One settle for the batch wakes the
        # readers once and ends the stream on its done chunk.
        log = state.log
        if log.in_order and chunks[0].seq == log.next_seq:
            # StreamLog.append's in-order path for the whole batch (offer()
            # keeps seqs consecutive, and a done chunk can only be the last).
            log.queue.extend(chunks)
            last = chunks[-1]
            log.next_seq = last.seq + 1
            log.byte_count.bound += _bytes_of(chunks)
            if last.done or log.data_wanted:
                log.appended(last)
        else:
            try:
                for chunk in chunks:
                    log.append(chunk)
            except ReorderOverflow as exc:
                state.reorder_overflow(exc)  # seqs are checked in offer(): never expected
        state.settle()

    def _failed(self, run: DurableRun, exc: Exception) -> None:
        self._failures += 1
        log.error("store %s failed for stream %s: %s", self.store.name, run.stream_id, exc)
        self._pending -= len(run.pending)
        run.pending.clear()
        run.checkpoint = None
        self.runs.pop(run.stream_id, None)
        if run.state is not None:
            run.state.fail(ErrorCode.UNAVAILABLE, "the stream's store failed")

    async def _sweep(self) -> None:
        try:
            await self.store.delete_runs(self._clock() - self.retention_s, 1000)
        except Exception as exc:
            log.warning("store %s retention sweep failed: %s", self.store.name, exc)

    def statistics(self) -> DurableStatistics:
        return DurableStatistics(
            self.store.name,
            len(self.runs),
            self._pending,
            self._appends,
            self._stored,
            self._dropped,
            self._checkpoints,
            self._waits,
            self._failures,
            self.resumed,
            self.interrupted,
        )
