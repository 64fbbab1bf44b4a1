"""Crash recovery: what a flow does with the runs a previous process left unfinished.

When a flow with a store starts, every run the store holds without a
terminal was cut short (a crash, a kill, a deploy). Each is settled, and
none silently:

* its last stored chunk is its ``done`` chunk: it finished, only the
  terminal was not written; it is ended ``done``;
* ``exactly_once``: resumed. Its node is called again with the start message,
  ``ctx.restored_state`` (the last checkpoint) and ``ctx.resumed_from`` (the
  last stored seq); seqs it re-emits that the store holds are dropped;
* anything else (``at_least_once``, or an ``exactly_once`` run that cannot be
  resumed: its node is gone from the flow, its record unreadable): ended
  with ``interrupted``. Its stored prefix stays readable.

Each run is logged at INFO with its counts, and the totals once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from icefloe.core.reliability import Reliability
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import CorruptRecord
from icefloe.runtime.durable import StoreWriter
from icefloe.runtime.stream_types import StreamPhase
from icefloe.store.types import NO_SEQ, RunState, Terminal

__all__ = ["CORRUPT", "DONE", "INTERRUPTED", "INTERRUPTED_MESSAGE", "RESUMED", "recover", "settle"]

log = logging.getLogger("icefloe.recovery")

#: the message of the ``interrupted`` terminal recovery writes
INTERRUPTED_MESSAGE = "the server restarted while the run was producing; its stored chunks remain"


#: what :func:`settle` did with a run
DONE = "done"
RESUMED = "resumed"
INTERRUPTED = ErrorCode.INTERRUPTED.value
CORRUPT = ErrorCode.CORRUPT.value


async def recover(writer: StoreWriter, resume: Callable[[RunState], None]) -> None:
    """Settle every unfinished run of ``writer.store``; ``resume`` restarts one
    (raising when it cannot)."""
    store = writer.store
    runs = await store.unfinished_runs()
    outcomes = [await settle(writer, run, resume) for run in runs]
    if runs:
        log.info(
            "recovery on %s: %d unfinished runs, %d resumed, %d interrupted, %d already done",
            store.name,
            len(runs),
            writer.resumed,
            writer.interrupted,
            outcomes.count(DONE),
        )


async def settle(writer: StoreWriter, run: RunState, resume: Callable[[RunState], None]) -> str:
    """Settle one unfinished run: :data:`DONE`, :data:`RESUMED`,
    :data:`INTERRUPTED` or :data:`CORRUPT` (what was done with it)."""
    store = writer.store
    sid = run.run.stream_id
    level = run.run.reliability
    try:
        finished = await _finished(writer, run)
    except CorruptRecord as exc:
        terminal = Terminal(StreamPhase.FAILED.label, exc.code.value, str(exc), time.time())
        await store.end_run(sid, terminal)
        log.error("recovery: stream %s: its last stored chunk is corrupt; ended corrupt", sid)
        return CORRUPT
    if finished:
        await store.end_run(sid, Terminal(StreamPhase.DONE.label, None, "", time.time()))
        log.info("recovery: stream %s had stored its done chunk; ended done", sid)
        return DONE
    why = "not resumable at this level"
    if level is Reliability.EXACTLY_ONCE:
        try:
            resume(run)
        except Exception as exc:
            why = f"could not resume: {exc}"
        else:
            writer.resumed += 1
            cp = run.checkpoint
            log.info(
                "recovery: resumed %s stream %s: %d chunks stored, checkpoint at seq %s",
                level.value,
                sid,
                run.last_seq + 1,
                "none" if cp is None else cp.seq,
            )
            return RESUMED
    terminal = Terminal(
        StreamPhase.FAILED.label, ErrorCode.INTERRUPTED.value, INTERRUPTED_MESSAGE, time.time()
    )
    await store.end_run(sid, terminal)
    writer.interrupted += 1
    log.info(
        "recovery: ended %s stream %s with interrupted (%s): %d chunks stored, readable",
        level.value,
        sid,
        why,
        run.last_seq + 1,
    )
    return INTERRUPTED


async def _finished(writer: StoreWriter, run: RunState) -> bool:
    """Whether the run's last stored chunk is its ``done`` chunk."""
    from icefloe.store.records import decode_chunk

    if run.last_seq == NO_SEQ:
        return False
    last = await writer.store.read(run.run.stream_id, run.last_seq, 1)
    return bool(last) and decode_chunk(last[0].record).done
