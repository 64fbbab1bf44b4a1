"""The SQLite store's tables, and the conversions between rows and values.

Tables: ``runs`` (one row per run: its record, last seq, terminal and latest
checkpoint), ``segments`` (a run's chunks, several per row: see
:func:`segment_rows`, and :mod:`icefloe.store.sqlite_segments` for rows
whose ``sizes`` is empty: one segment record), ``idem_keys``, ``sessions`` and ``schema_version``.
Every statement of :data:`SCHEMA` is ``CREATE ... IF NOT EXISTS``, so
:func:`migrate` is safe on every open and by two processes at once.
"""

from __future__ import annotations

import json
import operator
import sqlite3
import struct
from typing import Any, Final

from icefloe.core.reliability import Reliability
from icefloe.store.protocol import StoreUnavailable
from icefloe.store.types import NO_SEQ, Checkpoint, RunRecord, RunState, StoredChunk, Terminal

__all__ = [
    "RUN_COLUMNS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SEGMENT_BYTES",
    "SEGMENT_CHUNKS",
    "migrate",
    "run_state",
    "segment_rows",
    "split_segment",
]

#: the schema this module writes: 2 adds rows holding one segment record
#: (:mod:`icefloe.store.sqlite_segments`), which version 1 would read as empty
SCHEMA_VERSION: Final = 2
#: the most chunks one segment row holds
SEGMENT_CHUNKS: Final = 256
#: a segment row is closed once its records reach this many bytes
SEGMENT_BYTES: Final = 256 * 1024

_RECORD = operator.itemgetter(1)  # StoredChunk.record, called from C

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    stream_id TEXT PRIMARY KEY,
    trace_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    reliability TEXT NOT NULL,
    targets TEXT NOT NULL,
    message BLOB NOT NULL,
    created_at REAL NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT -1,
    idem_key TEXT,
    end_phase TEXT,
    end_code TEXT,
    end_message TEXT,
    ended_at REAL,
    ckpt_seq INTEGER,
    ckpt_state BLOB
);
CREATE INDEX IF NOT EXISTS runs_unfinished ON runs (created_at) WHERE ended_at IS NULL;
CREATE INDEX IF NOT EXISTS runs_ended ON runs (ended_at) WHERE ended_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS segments (
    stream_id TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    sizes BLOB NOT NULL,
    records BLOB NOT NULL,
    PRIMARY KEY (stream_id, last_seq)
);
CREATE TABLE IF NOT EXISTS idem_keys (
    key TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    record BLOB NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
"""

#: the columns :func:`run_state` reads, in its order
RUN_COLUMNS: Final = (
    "stream_id, trace_id, tenant, reliability, targets, message, created_at, last_seq, "
    "end_phase, end_code, end_message, ended_at, ckpt_seq, ckpt_state"
)


def segment_rows(fresh: list[StoredChunk]) -> list[tuple[int, int, bytes, bytes]]:
    """Consecutive chunks as segment rows: (last_seq, first_seq, sizes, records)."""
    if not fresh:
        return []
    records = list(map(_RECORD, fresh))
    lengths = list(map(len, records))
    # The common append: rows of SEGMENT_CHUNKS chunks, none reaching
    # SEGMENT_BYTES before its last chunk, so the rows the loop below would
    # cut; checked by builtins (the writer thread holds the GIL meanwhile, and
    # the event loop waits for it).
    rows = []
    for start in range(0, len(fresh), SEGMENT_CHUNKS):
        end = min(start + SEGMENT_CHUNKS, len(fresh))
        part = lengths[start:end]
        if sum(part) - part[-1] >= SEGMENT_BYTES:
            return _segment_rows_by_size(fresh)
        sizes = struct.pack(f"<{len(part)}I", *part)
        rows.append((fresh[end - 1].seq, fresh[start].seq, sizes, b"".join(records[start:end])))
    return rows


def _segment_rows_by_size(fresh: list[StoredChunk]) -> list[tuple[int, int, bytes, bytes]]:
    rows = []
    start = 0
    while start < len(fresh):
        end, size = start, 0
        while end < len(fresh) and end - start < SEGMENT_CHUNKS and size < SEGMENT_BYTES:
            size += len(fresh[end].record)
            end += 1
        part = fresh[start:end]
        records = [c.record for c in part]
        sizes = struct.pack(f"<{len(records)}I", *map(len, records))
        rows.append((part[-1].seq, part[0].seq, sizes, b"".join(records)))
        start = end
    return rows


def split_segment(
    into: list[StoredChunk], first_seq: int, sizes: bytes, blob: bytes, from_seq: int, limit: int
) -> None:
    """Add one segment row's chunks from ``from_seq`` to ``into``, up to ``limit`` in all."""
    lengths = struct.unpack(f"<{len(sizes) // 4}I", sizes)
    offset = 0
    for index, length in enumerate(lengths):
        seq = first_seq + index
        if seq >= from_seq:
            if len(into) >= limit:
                return
            into.append(StoredChunk(seq, bytes(blob[offset : offset + length])))
        offset += length


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Create what is missing; refuse a file of a newer schema (StoreUnavailable)."""
    # Every statement is CREATE ... IF NOT EXISTS: safe to run on each open,
    # and by two processes at once (a duplicate version row is harmless).
    conn.executescript(SCHEMA)
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    if row[0] is None or row[0] < SCHEMA_VERSION:
        # Version 1 rows read as they are; the new row keeps older icefloe out.
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
    elif row[0] > SCHEMA_VERSION:
        raise StoreUnavailable(
            f"{path} has store schema version {row[0]}; this icefloe reads up to {SCHEMA_VERSION}"
        )


def run_state(row: tuple[Any, ...]) -> RunState:
    """A ``runs`` row (the :data:`RUN_COLUMNS`) as a :class:`RunState`."""
    (sid, trace, tenant, reliability, targets, message, created, last_seq) = row[:8]
    end_phase, end_code, end_message, ended_at, ckpt_seq, ckpt_state = row[8:]
    record = RunRecord(
        sid,
        trace,
        tenant,
        Reliability.parse(reliability),
        tuple(json.loads(targets)),
        bytes(message),
        created,
    )
    terminal = (
        None if ended_at is None else Terminal(end_phase, end_code, end_message or "", ended_at)
    )
    checkpoint = None if ckpt_seq is None else Checkpoint(ckpt_seq, bytes(ckpt_state))
    return RunState(record, last_seq if last_seq is not None else NO_SEQ, terminal, checkpoint)
