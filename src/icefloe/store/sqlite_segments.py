"""The SQLite store's chunk rows: a durable batch kept as segment records.

A row of ``segments`` holds consecutive chunks of one stream, keyed by
(stream id, last seq), in one of two forms:

* **a segment record** (``sizes`` empty): one record of kind ``segment``
  (:func:`~icefloe.store.records.encode_segment`), one CRC32C over all its
  chunks. The store writer's batches (:class:`~icefloe.store.batch.ChunkBatch`)
  are written so: one encode and one checksum per batch, and about a sixth
  of the bytes of a record per chunk for small chunks (a token is its text
  and its timestamp);
* **chunk records back to back** (``sizes`` the packed array of their
  lengths): any other ``append`` (a plain list of records), and every row a
  file of schema version 1 holds.

A read finds the rows covering its seqs and answers a record per chunk, as
the :class:`~icefloe.store.protocol.Store` protocol says: a segment row is
decoded and its chunks encoded again as chunk records. A segment that fails
its check (a flipped bit anywhere in it) answers no chunk of it: the read
ends with its raw bytes under the first seq asked of it, which no chunk
decoder accepts, so the reader gets what precedes it and then ``corrupt``.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from icefloe.exceptions import CorruptRecord
from icefloe.store.batch import ChunkBatch, Segment
from icefloe.store.records import decode_segment, encode_chunks
from icefloe.store.sqlite_schema import split_segment
from icefloe.store.types import Checkpoint, StoredChunk

__all__ = ["SEGMENT_ROW", "insert_batch", "read_chunks"]

#: the ``sizes`` of a row holding one segment record
SEGMENT_ROW: Final = b""

_ADVANCE: Final = "UPDATE runs SET last_seq = ? WHERE stream_id = ? AND last_seq = ?"
_ADVANCE_CHECKPOINT: Final = (
    "UPDATE runs SET last_seq = ?, ckpt_seq = ?, ckpt_state = ?"
    " WHERE stream_id = ? AND last_seq = ?"
)
_INSERT: Final = (
    "INSERT INTO segments (stream_id, last_seq, first_seq, sizes, records) VALUES (?, ?, ?, ?, ?)"
)


def insert_batch(
    conn: sqlite3.Connection,
    stream_id: str,
    batch: ChunkBatch,
    segments: list[Segment],
    checkpoint: Checkpoint | None,
) -> bool:
    """Write ``batch`` as its ``segments``, and the run's last seq (and
    ``checkpoint``), when the batch is exactly the seqs after the stored ones
    and covers ``checkpoint``. False, nothing written: it is not (a replay,
    a gap, an unknown run), and the caller checks it chunk by chunk.

    Two statements: sqlite3 gives up the GIL around each one and must win it
    back from the event loop, so each statement saved shortens the commit.
    """
    if checkpoint is not None and checkpoint.seq > batch.last_seq:
        return False
    expect = batch.first_seq - 1
    if checkpoint is None:
        moved = conn.execute(_ADVANCE, (batch.last_seq, stream_id, expect))
    else:
        args = (batch.last_seq, checkpoint.seq, checkpoint.state, stream_id, expect)
        moved = conn.execute(_ADVANCE_CHECKPOINT, args)
    if moved.rowcount != 1:
        return False
    if len(segments) == 1:
        first, last, record = segments[0]
        conn.execute(_INSERT, (stream_id, last, first, SEGMENT_ROW, record))
    else:
        rows = [(stream_id, last, first, SEGMENT_ROW, record) for first, last, record in segments]
        conn.executemany(_INSERT, rows)
    return True


def read_chunks(
    conn: sqlite3.Connection, stream_id: str, from_seq: int, limit: int
) -> list[StoredChunk]:
    """Up to ``limit`` stored chunks of ``stream_id`` from ``from_seq`` (see the module doc)."""
    rows = conn.execute(
        "SELECT first_seq, sizes, records FROM segments"
        " WHERE stream_id = ? AND last_seq >= ? ORDER BY last_seq",
        (stream_id, from_seq),
    )
    got: list[StoredChunk] = []
    try:
        for first_seq, sizes, blob in rows:
            if sizes != SEGMENT_ROW:
                split_segment(got, first_seq, sizes, blob, from_seq, limit)
            elif not _split_record(got, stream_id, first_seq, bytes(blob), from_seq, limit):
                break
            if len(got) >= limit:
                break
    finally:
        rows.close()
    return got


def _split_record(
    into: list[StoredChunk], stream_id: str, first_seq: int, blob: bytes, from_seq: int, limit: int
) -> bool:
    """Add a segment row's chunks from ``from_seq`` to ``into`` (``limit`` in
    all); False: the segment is corrupt, and its raw bytes were added instead."""
    try:
        chunks = decode_segment(blob, stream_id=stream_id, first_seq=first_seq)
    except CorruptRecord:
        into.append(StoredChunk(max(first_seq, from_seq), blob))
        return False
    start = max(0, from_seq - first_seq)
    into.extend(encode_chunks(chunks[start : start + limit - len(into)]))
    return True
