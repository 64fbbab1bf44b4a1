"""The values a :class:`~icefloe.store.protocol.Store` keeps and returns.

Every blob a backend stores (a chunk, a run's start message, a checkpoint's
state, a session) is an opaque ``bytes`` record written by
:mod:`icefloe.store.records`, which frames it with a CRC32C: backends move
bytes and never interpret them, so a corrupted record is caught by whoever
decodes it, whatever the backend.
"""

from __future__ import annotations

from typing import NamedTuple

from icefloe.core.reliability import Reliability

__all__ = [
    "NO_SEQ",
    "Checkpoint",
    "RunRecord",
    "RunState",
    "StoreStatistics",
    "StoredChunk",
    "Terminal",
]

#: the ``last_seq`` of a stream that holds no chunk yet
NO_SEQ = -1


class RunRecord(NamedTuple):
    """What started a run: enough to call its node again after a restart."""

    #: the run's stream id (unique in the store)
    stream_id: str
    #: the trace id of the start message
    trace_id: str
    #: the tenant owning the stream
    tenant: str
    #: the guarantee the run asked for
    reliability: Reliability
    #: names of the nodes the start message entered (the flow's entry when empty)
    targets: tuple[str, ...]
    #: the start message, as a record of :mod:`icefloe.store.records`
    message: bytes
    #: wall-clock seconds (``time.time()``) when it was created
    created_at: float


class Terminal(NamedTuple):
    """How a stream ended."""

    #: ``"done"``, ``"failed"`` or ``"cancelled"`` (a :class:`StreamPhase` value)
    phase: str
    #: the wire error code that ended it (``None`` when done)
    code: str | None
    #: human-readable detail (may be empty)
    message: str
    #: wall-clock seconds when it ended
    ended_at: float


class StoredChunk(NamedTuple):
    """One chunk of a stream as stored: its seq and its record."""

    seq: int
    #: the chunk, as a record of :mod:`icefloe.store.records`
    record: bytes


class Checkpoint(NamedTuple):
    """A node's state for a stream, and the last seq it covers."""

    #: the last seq the state covers (:data:`NO_SEQ` before any chunk)
    seq: int
    #: the state, as a record of :mod:`icefloe.store.records`
    state: bytes


class RunState(NamedTuple):
    """A run as the store knows it."""

    run: RunRecord
    #: the highest stored seq (:data:`NO_SEQ` when none)
    last_seq: int
    #: how it ended, ``None`` while unfinished
    terminal: Terminal | None
    #: the latest checkpoint, ``None`` when none was taken
    checkpoint: Checkpoint | None


class StoreStatistics(NamedTuple):
    """A snapshot of a store's own counters (not of its contents)."""

    #: runs created
    runs_created: int
    #: chunks written (duplicates skipped are not counted)
    chunks_written: int
    #: chunks an ``append`` skipped because their seq was stored already
    duplicates_skipped: int
    #: checkpoints written
    checkpoints_written: int
