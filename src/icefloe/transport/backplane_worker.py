"""A worker: runs the starts ``--no-runs`` gateways queue (``icefloe worker``, issue 12).

:class:`Worker` ties a :class:`~icefloe.runtime.flow.Flow` to the run queue
(:mod:`icefloe.backplane.runqueue`) and the engine
(:class:`~icefloe.backplane.engine.RedisBackplane`, for cancel requests and
the keys' keepalive):

* it takes at most ``concurrency`` entries at once: first those whose lease
  expired (a dead worker's, or handed back), then new ones;
* a new start runs through the flow; its stream is appended to the engine
  by a fenced publisher (:mod:`icefloe.backplane.worker_publish`), exactly as
  a producing gateway's, and its entry is acknowledged when it ends;
* a start taken over from another worker is settled from the shared store
  as crash recovery would settle it: an ``exactly_once`` run resumes from its
  checkpoint (the log gets what the store holds past the log's last seq
  first, so readers see each seq once), any other ends ``interrupted`` after
  its stored prefix; without a store (or a record) it ends ``interrupted``,
  unless nothing of it was ever appended: then it starts afresh;
* its lease is renewed every :data:`~icefloe.backplane.runqueue.HEARTBEAT_S`;
  a run whose lease another worker took is abandoned (nothing more of it
  reaches the engine or the store); its appends ride out an engine outage
  within :data:`~icefloe.backplane.backoff.RETRY_BUDGET_S`, and an entry of
  its own that it reclaims after one (idle past the lease meanwhile) stays
  with its run;
* a cancel requested before the worker produces the stream (the engine
  hands it only the requests for the streams it produces) is looked up in
  the control stream: before the node runs (the start then ends
  ``cancelled`` unrun) and once the stream is produced;
* :meth:`Worker.drain` (SIGTERM): no new entries; the runs have
  ``drain_timeout_s`` to end; the rest are fenced, the flow stops (their
  chunks flushed to the store, their records left unfinished) and their
  entries are handed to the next worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Final

from icefloe.backplane.backoff import retrying
from icefloe.backplane.engine import RedisBackplane
from icefloe.backplane.members import Members, beat_forever
from icefloe.backplane.meta import LIVE, QUEUED
from icefloe.backplane.runqueue import CLAIM_COUNT, HEARTBEAT_S, Claimed, RunQueue
from icefloe.backplane.worker_publish import FENCED, GAP, append_owned, end_owned, publish_owned
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import InvalidState, StreamError
from icefloe.runtime.flow import Flow
from icefloe.runtime.recovery import RESUMED
from icefloe.store.protocol import StoreUnavailable

__all__ = ["BLOCK_MS", "CANCELLED_UNRUN", "FILL_BATCH", "MAX_DELIVERIES", "Worker"]

log = logging.getLogger("icefloe.worker")

#: milliseconds one wait for new entries blocks (a drain is noticed within it)
BLOCK_MS: Final = 500
#: stored chunks one read of a taken-over run's missing part fetches
FILL_BATCH: Final = 256
#: times a start may be taken (its first run and take-overs) before it is
#: failed: a start that kills every worker that runs it must not go round forever
MAX_DELIVERIES: Final = 10
#: what a reader of a run that cannot be resumed is told
INTERRUPTED: Final = "its worker stopped while the run was producing; its chunks so far remain"
#: what a reader of a start cancelled before its node ran is told
CANCELLED_UNRUN: Final = "cancelled before its run started"


@dataclass(slots=True)
class _Held:
    """A queue entry this worker holds, and the run it leads to."""

    claimed: Claimed
    token: str
    task: asyncio.Task[Any] | None = None
    #: being handed over by a drain: held (its lease renewed) until given away
    handing: bool = False


class Worker:
    """Runs queued starts through ``flow`` until drained (or idle)."""

    def __init__(
        self,
        flow: Flow,
        url: str,
        *,
        concurrency: int = 16,
        drain_timeout_s: float = 30.0,
        exit_when_idle_s: float | None = None,
        history: int = 1024,
        window: int = 1024,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
        self._flow = flow
        self.engine = RedisBackplane(url, history=history, window=window, on_cancel=flow.cancel)
        #: this worker's consumer name in the queue's group
        self.id = f"w-{self.engine.process_id}"
        self.concurrency = concurrency
        self.drain_timeout_s = drain_timeout_s
        self.exit_when_idle_s = exit_when_idle_s
        self._queue: RunQueue | None = None
        self._held: dict[str, _Held] = {}
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self._busy_at = time.monotonic()
        self._acks: set[asyncio.Task[None]] = set()
        self._started = time.time()

    @property
    def queue(self) -> RunQueue:
        if self._queue is None:
            raise RuntimeError("the worker is not open")
        return self._queue

    def running(self) -> int:
        """Entries held now (runs running, or being taken over)."""
        return len(self._held)

    def stats(self) -> dict[str, Any]:
        """This worker's heartbeat figures, as ``GET /v1/cluster`` lists them."""
        return {
            "started": round(self._started, 3),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "load": self._flow.congestion.value,
            "draining": self._stopping.is_set(),
            "concurrency": self.concurrency,
            "streams": self._flow.stats().streams.active,
            "runs_running": len(self._held),
        }

    def drain(self) -> None:
        """Stop taking entries; :meth:`run` then drains and returns (SIGTERM)."""
        self._stopping.set()
        self._changed.set()

    async def run(self) -> None:
        """Open, take entries until :meth:`drain` (or idle), drain, close.

        A drain that hands runs over stops the flow (its store flushed) even
        if the caller started it."""
        flow = self._flow
        flow.recover_at_start = False  # runs are settled one by one, when taken over
        owned = not flow.running
        if owned:
            flow.run()
        await flow.store_ready()
        await self.engine.open()
        self._queue = RunQueue(self.engine.client, self.engine.keys)
        await self._queue.ensure_group()
        heartbeat = asyncio.ensure_future(self._heartbeat_loop())
        # Listed by every gateway's GET /v1/cluster (backplane/members.py).
        members = Members(self.engine.client, self.engine.keys)
        membership = asyncio.ensure_future(beat_forever(members, self.id, "worker", self.stats))
        try:
            await self._take_loop()
            await self._drain()
        finally:
            heartbeat.cancel()
            membership.cancel()
            await asyncio.gather(heartbeat, membership, return_exceptions=True)
            if owned:
                await flow.stop()
            with contextlib.suppress(Exception):
                await self.queue.leave(self.id)
            if self._acks:
                await asyncio.wait(self._acks, timeout=2.0)
            await self.engine.aclose()

    # -- taking entries --------------------------------------------------------

    async def _take_loop(self) -> None:
        queue = self.queue
        # Idle from now: opening the store and the engine may take longer
        # than --exit-when-idle, and the worker must look at the queue once.
        self._busy_at = time.monotonic()
        while not self._stopping.is_set():
            left = self._idle_for()
            if left is not None and left <= 0:
                log.info("worker %s: idle for %ss, exiting", self.id, self.exit_when_idle_s)
                return
            room = self.concurrency - len(self._held)
            if room <= 0:
                self._changed.clear()
                await self._changed.wait()
                continue
            count = min(room, CLAIM_COUNT)
            try:
                taken = await queue.reclaim(self.id, count)
                if not taken:
                    idle = self._idle_for()
                    block = BLOCK_MS if idle is None else max(1, min(BLOCK_MS, int(idle * 1000)))
                    taken = await queue.claim(self.id, count, block)
            except Exception as exc:
                log.warning("worker %s: the queue did not answer: %r", self.id, exc)
                await asyncio.sleep(HEARTBEAT_S)
                continue
            for claimed in taken:
                if claimed.entry_id in self._held:
                    # Our own, idle past its lease while the engine was away:
                    # the reclaim renewed it, and its run goes on here.
                    continue
                await self._take(claimed)

    def _idle_for(self) -> float | None:
        """Seconds left before an idle worker exits (None: it never does, or it is busy)."""
        if self.exit_when_idle_s is None or self._held:
            return None
        return self.exit_when_idle_s - (time.monotonic() - self._busy_at)

    async def _take(self, claimed: Claimed) -> None:
        # One token per delivery: this worker's earlier hold of the entry is fenced too.
        held = _Held(claimed, f"{self.id}:{claimed.entry_id}:{claimed.deliveries}")
        self._held[claimed.entry_id] = held
        self._busy_at = time.monotonic()
        try:
            await self._start(held)
        except Exception as exc:
            log.warning("worker %s: taking %s failed: %r", self.id, claimed.stream_id, exc)
            self._drop(held)  # its lease expires: another worker takes it

    async def _start(self, held: _Held) -> None:
        claimed, token = held.claimed, held.token
        found = await self.queue.own(claimed.stream_id, token)
        if found is None or found[0] not in LIVE:
            await self._ack(held)  # expired, cancelled while queued, or ended
            return
        state, last_seq = found
        if claimed.deliveries > MAX_DELIVERIES:
            why = f"its workers stopped {claimed.deliveries - 1} times while running it"
            await self._end(held, ErrorCode.FAILED, why)
            return
        if state == QUEUED:
            await self._run_fresh(held)
        else:
            await self._take_over(held, last_seq)

    async def _run_fresh(self, held: _Held) -> None:
        from icefloe.store.records import decode_message

        flow, engine = self._flow, self.engine
        sid = held.claimed.stream_id
        if await self.queue.cancel_requested(held.claimed):
            await self._end(held, ErrorCode.CANCELLED, CANCELLED_UNRUN)
            return
        message = decode_message(held.claimed.message)
        try:
            await flow.start(message, history=engine.history, window=engine.window)
        except StreamError as exc:
            await self._end(held, exc.code, exc.message)
            return
        except (InvalidState, StoreUnavailable) as exc:
            await self._end(held, ErrorCode.UNAVAILABLE, str(exc))
            return
        self._publish(held, 0)
        log.info("worker %s: started %s", self.id, sid)

    async def _take_over(self, held: _Held, last_seq: int) -> None:
        """Settle a run another worker held, from the store."""
        flow = self._flow
        sid = held.claimed.stream_id
        store = flow.store
        outcome = await flow.recover_run(sid)
        if outcome == RESUMED:
            start = flow.held_from(sid)
            assert start is not None
            source = flow.subscribe(sid, start)  # now, before the run moves on
            if not await self._fill(held, last_seq + 1):
                source.close()
                flow.abandon(sid)
                self._drop(held)
                return
            self._publish(held, start, source)
            log.info("worker %s: resumed %s from seq %d", self.id, sid, start)
            return
        stored = None if store is None else await store.get_run(sid)
        if stored is None:
            if last_seq < 0:  # nothing of it reached anyone: it starts again
                await self._run_fresh(held)
                return
            await self._end(held, ErrorCode.INTERRUPTED, INTERRUPTED)
            return
        if not await self._fill(held, last_seq + 1):
            self._drop(held)
            return
        terminal = stored.terminal
        if terminal is None or terminal.code is None:
            if terminal is None:
                await self._end(held, ErrorCode.INTERRUPTED, INTERRUPTED)
            else:
                await self._ack(held)  # done: its done chunk is in the log now
            return
        try:
            code = ErrorCode(terminal.code)
        except ValueError:
            code = ErrorCode.FAILED
        await self._end(held, code, terminal.message)
        log.info("worker %s: took over %s and ended it %s", self.id, sid, code.value)

    async def _fill(self, held: _Held, from_seq: int) -> bool:
        """Append what the store holds of the run from ``from_seq`` (the part
        its dead worker did not append); False: fenced."""
        from icefloe.store.records import decode_chunk

        store = self._flow.store
        if store is None:
            return True
        engine = self.engine
        sid = held.claimed.stream_id
        while True:
            stored = await store.read(sid, from_seq, FILL_BATCH)
            if not stored:
                return True
            chunks = [decode_chunk(s.record) for s in stored]
            last = await append_owned(
                engine.client, engine.keys, sid, held.token, chunks, engine.history
            )
            if last in (FENCED, GAP):
                return False
            from_seq = chunks[-1].seq + 1

    def _publish(self, held: _Held, from_seq: int, source: Any = None) -> None:
        sid = held.claimed.stream_id
        if source is None:
            source = self._flow.subscribe(sid, from_seq)
        held.task = self.engine.produce(sid, self._produce(held, source, from_seq))
        held.task.add_done_callback(lambda task: self._published(held, task))

    async def _produce(self, held: _Held, source: Any, from_seq: int) -> bool:
        """The run's publisher (:func:`publish_owned`), once a cancel requested
        before the engine knew the stream as this worker's has reached the run."""
        engine = self.engine
        sid = held.claimed.stream_id
        try:
            # The engine hands the stream's cancel requests to the flow from
            # now on (it is producing it); one made before is in the log.
            if await retrying(lambda: self.queue.cancel_requested(held.claimed)):
                self._flow.cancel(sid)
        except BaseException:
            source.close()
            raise
        return await publish_owned(
            engine.client,
            engine.keys,
            source,
            stream_id=sid,
            token=held.token,
            history=engine.history,
            window=engine.window,
            next_seq=from_seq,
        )

    def _published(self, held: _Held, task: asyncio.Task[Any]) -> None:
        if held.handing or self._held.get(held.claimed.entry_id) is not held:
            return  # being handed over (the drain gives it away), or lost
        if task.cancelled() or task.exception() is not None or not task.result():
            # The engine failed, or another worker owns the stream now: stop
            # here, and let the lease say who goes on.
            self._flow.abandon(held.claimed.stream_id)
            self._drop(held)
            return
        ack = asyncio.ensure_future(self._ack(held))
        self._acks.add(ack)
        ack.add_done_callback(self._acks.discard)

    async def _end(self, held: _Held, code: ErrorCode, message: str) -> None:
        engine = self.engine
        sid = held.claimed.stream_id
        if await end_owned(engine.client, engine.keys, sid, held.token, code, message):
            await self._ack(held)
        else:
            self._drop(held)

    async def _ack(self, held: _Held) -> None:
        try:
            await self.queue.done(self.id, held.claimed.entry_id)
        except Exception as exc:
            sid = held.claimed.stream_id
            log.warning("worker %s: acknowledging %s failed: %r", self.id, sid, exc)
        self._drop(held)

    def _drop(self, held: _Held) -> None:
        if self._held.get(held.claimed.entry_id) is held:
            del self._held[held.claimed.entry_id]
            self._busy_at = time.monotonic()
            self._changed.set()

    # -- the lease -------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                lost = await self.queue.renew(self.id, list(self._held), self.concurrency)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("worker %s: renewing the lease failed: %r", self.id, exc)
                lost = set()
            for entry_id in lost:
                held = self._held.get(entry_id)
                if held is not None:
                    sid = held.claimed.stream_id
                    log.warning("worker %s: lost %s to another worker", self.id, sid)
                    self._flow.abandon(sid)
                    self._drop(held)
            await asyncio.sleep(HEARTBEAT_S)

    # -- draining --------------------------------------------------------------

    async def _drain(self) -> None:
        """Let the runs end within the drain timeout; hand the rest over."""
        if not self._held:
            return
        deadline = time.monotonic() + self.drain_timeout_s
        while self._held and (left := deadline - time.monotonic()) > 0:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._changed.wait()
        rest = list(self._held.values())
        if not rest:
            return
        queue = self.queue
        # Fence first: nothing more of them reaches the engine (their ends
        # included), while the entries are still ours (their leases renewed
        # until given away) and nobody takes them before the store is flushed.
        for held in rest:
            held.handing = True
            await queue.release(held.claimed.stream_id, held.token)
        # The store gets what is pending; the records stay unfinished.
        await self._flow.stop()
        for held in rest:
            await queue.hand_back(self.id, held.claimed.entry_id)
            self._drop(held)
        log.info("worker %s: handed %d runs over", self.id, len(rest))
