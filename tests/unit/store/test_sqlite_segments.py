"""SQLite keeps a durable batch as segment records; reads split them back into chunks."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest

from icefloe.core.messages import StreamChunk
from icefloe.exceptions import CorruptRecord
from icefloe.store import MemoryStore
from icefloe.store.batch import ChunkBatch
from icefloe.store.records import decode_chunk, encode_chunks
from icefloe.store.sqlite import SEGMENT_BYTES, SqliteStore
from icefloe.store.types import Checkpoint
from storecheck import chunks, run_record


def tokens(first: int, last: int, sid: str = "s", text: str = "tok") -> list[StreamChunk]:
    return [StreamChunk(sid, seq, f"{text}{seq}", ts=seq) for seq in range(first, last + 1)]


def rows(path: Path) -> list[tuple[int, int, int]]:
    """(first_seq, last_seq, len(sizes)) of every segments row, in order."""
    with sqlite3.connect(path) as conn:
        got = conn.execute(
            "SELECT first_seq, last_seq, length(sizes) FROM segments ORDER BY last_seq"
        ).fetchall()
    conn.close()
    return got


def test_a_batch_reads_as_the_records_of_its_chunks() -> None:
    batch = ChunkBatch(tokens(3, 9))
    assert list(batch) == encode_chunks(tokens(3, 9))
    assert batch[2] == encode_chunks(tokens(3, 9))[2]
    assert len(batch) == 7
    assert (batch.first_seq, batch.last_seq) == (3, 9)
    with pytest.raises(ValueError, match="at least one"):
        ChunkBatch([])


def test_a_large_batch_is_cut_into_segments_under_the_byte_limit() -> None:
    big = tokens(0, 99, text="x" * 1000)
    segments = ChunkBatch(big).segments(10_000)
    assert all(len(record) <= 10_000 for _, _, record in segments)
    assert segments[0][0] == 0
    assert segments[-1][1] == 99
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(segments))
    # a single chunk larger than the limit is a segment of its own
    assert len(ChunkBatch(tokens(0, 0, text="y" * 50_000)).segments(10_000)) == 1


async def test_a_batch_is_one_segment_row_and_reads_back_from_any_seq(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(str(path))
    await store.open()
    try:
        await store.create_run(run_record("s"))
        # a plain append (a record per chunk), then two batches
        plain = encode_chunks(tokens(0, 4))
        assert await store.append("s", plain) == 5
        assert await store.append("s", ChunkBatch(tokens(5, 300))) == 296
        checkpoint = Checkpoint(310, b"state")
        assert await store.append("s", ChunkBatch(tokens(301, 310)), checkpoint=checkpoint) == 10
        everything = encode_chunks(tokens(0, 310))
        assert await store.read("s", 0, 10_000) == everything
        for start, limit in ((3, 4), (5, 1), (299, 5), (300, 300), (310, 9), (311, 5)):
            assert await store.read("s", start, limit) == everything[start : start + limit]
        state = await store.get_run("s")
        assert state is not None
        assert state.last_seq == 310
        assert state.checkpoint == checkpoint
        assert store.statistics().chunks_written == 311
    finally:
        await store.close()
    assert rows(path) == [(0, 4, 20), (5, 300, 0), (301, 310, 0)]


async def test_a_batch_replaying_stored_seqs_keeps_the_stored_chunks(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    try:
        await store.create_run(run_record("s"))
        await store.append("s", ChunkBatch(tokens(0, 9)))
        # seqs 5..9 again with other texts, then 10..14: only the new ones count
        replay = tokens(5, 14, text="again")
        assert await store.append("s", ChunkBatch(replay)) == 5
        got = [decode_chunk(c.record) for c in await store.read("s", 0, 100)]
        assert got == tokens(0, 9) + replay[5:]
        assert store.statistics().duplicates_skipped == 5
        with pytest.raises(ValueError, match="gap"):
            await store.append("s", ChunkBatch(tokens(20, 21)))
        with pytest.raises(ValueError, match="checkpoint covers seq 30"):
            await store.append("s", ChunkBatch(tokens(15, 16)), checkpoint=Checkpoint(30, b""))
    finally:
        await store.close()


async def test_a_flipped_bit_in_a_segment_delivers_none_of_its_chunks(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(str(path))
    await store.open()
    await store.create_run(run_record("s"))
    for first in (0, 10, 20):
        await store.append("s", ChunkBatch(tokens(first, first + 9)))
    await store.close()
    with sqlite3.connect(path) as conn:
        (blob,) = conn.execute("SELECT records FROM segments WHERE first_seq = 10").fetchone()
        damaged = bytearray(blob)
        damaged[len(damaged) // 2] ^= 0x04
        conn.execute("UPDATE segments SET records = ? WHERE first_seq = 10", (bytes(damaged),))
    conn.close()
    store = SqliteStore(str(path))
    await store.open()
    try:
        for start in (0, 13):
            got = await store.read("s", start, 100)
            good = [c for c in got if c.seq < 10]
            assert [decode_chunk(c.record) for c in good] == tokens(start, 9)
            # then one record under the first seq asked of the segment, never a chunk
            assert got[len(good) :] == [(max(start, 10), bytes(damaged))]
            with pytest.raises(CorruptRecord):
                decode_chunk(got[-1].record, stream_id="s", seq=got[-1].seq)
        assert [decode_chunk(c.record) for c in await store.read("s", 20, 100)] == tokens(20, 29)
    finally:
        await store.close()


async def test_a_segment_under_another_key_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(str(path))
    await store.open()
    await store.create_run(run_record("s"))
    await store.create_run(run_record("t"))
    await store.append("s", ChunkBatch(tokens(0, 3)))
    await store.append("t", ChunkBatch(tokens(0, 3, sid="t")))
    await store.close()
    with sqlite3.connect(path) as conn:  # t's row now holds s's segment
        (blob,) = conn.execute("SELECT records FROM segments WHERE stream_id = 's'").fetchone()
        conn.execute("UPDATE segments SET records = ? WHERE stream_id = 't'", (blob,))
    conn.close()
    store = SqliteStore(str(path))
    await store.open()
    try:
        got = await store.read("t", 0, 10)
        assert len(got) == 1
        with pytest.raises(CorruptRecord):
            decode_chunk(got[0].record, stream_id="t", seq=0)
    finally:
        await store.close()


async def test_a_version_1_file_reads_on_and_is_marked_version_2(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(str(path))
    await store.open()
    await store.create_run(run_record("s"))
    await store.append("s", chunks(0, 9))  # rows of chunk records, as version 1 wrote them
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 1")
    conn.close()
    store = SqliteStore(str(path))
    await store.open()
    try:
        assert await store.read("s", 3, 4) == chunks(3, 6)
        await store.append("s", ChunkBatch(tokens(10, 12)))
        got = await store.read("s", 8, 10)
        assert got[:2] == chunks(8, 9)
        assert [decode_chunk(c.record) for c in got[2:]] == tokens(10, 12)
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version")]
    conn.close()
    assert max(versions) == 2


async def test_other_backends_take_a_batch_as_its_chunk_records() -> None:
    store = MemoryStore()
    await store.open()
    await store.create_run(run_record("s"))
    assert await store.append("s", ChunkBatch(tokens(0, 5))) == 6
    assert await store.read("s", 2, 2) == encode_chunks(tokens(2, 3))
    await store.close()


def test_the_segment_byte_limit_fits_a_record() -> None:
    from icefloe.store.records import MAX_RECORD

    assert SEGMENT_BYTES < MAX_RECORD
