"""SqliteStore: URLs, group commit, schema version, and surviving kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from icefloe.store import StoreUnavailable, open_store
from icefloe.store.sqlite import (
    CHECKPOINT_COMMITS,
    SCHEMA_VERSION,
    SEGMENT_CHUNKS,
    WAL_BACKSTOP_PAGES,
    SqliteStore,
)
from storecheck import chunks, run_record

SRC = Path(__file__).resolve().parents[3] / "src"


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("sqlite:///data/x.db", "sqlite:///data/x.db"),
        ("sqlite:////abs/x.db", "sqlite:////abs/x.db"),
        ("sqlite:///x.db?synchronous=full", "sqlite:///x.db"),
        ("SQLITE:///x%20y.db", "sqlite:///x y.db"),
    ],
)
def test_urls_name_relative_and_absolute_files(url: str, name: str) -> None:
    store = open_store(url)
    assert isinstance(store, SqliteStore)
    assert store.name == name


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("sqlite://", "names no file"),
        ("sqlite:///", "names no file"),
        ("sqlite:///:memory:", "names no file"),
        ("sqlite://host/x.db", "has a host"),
        ("sqlite:///x.db?synchronous=off", "synchronous must be normal or full"),
        ("sqlite:///x.db?journal=delete", "unknown option"),
    ],
)
def test_bad_urls_are_refused_by_name(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SqliteStore.from_url(url)


async def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    try:
        sids = [f"s{i}" for i in range(50)]
        for sid in sids:
            await store.create_run(run_record(sid))
        before = store.commits
        await asyncio.wait_for(
            asyncio.gather(*(store.append(sid, chunks(0, 9)) for sid in sids)), 30
        )
        # 50 calls queued at once cannot take 50 transactions.
        assert store.commits - before < len(sids)
        assert store.statistics().chunks_written == 500
    finally:
        await store.close()


async def test_wal_checkpoints_run_beside_the_writer(tmp_path: Path) -> None:
    # The writer's own checkpoint waits for WAL_BACKSTOP_PAGES; far fewer
    # commits than that reach the database file all the same, through the
    # checkpoint every CHECKPOINT_COMMITS commits start on their own thread.
    path = tmp_path / "s.db"
    store = SqliteStore(str(path))
    await store.open()
    try:
        await store.create_run(run_record("s1"))
        empty = path.stat().st_size
        seq = 0
        while store.checkpoints == 0 and seq < CHECKPOINT_COMMITS * 40:
            await asyncio.wait_for(store.append("s1", chunks(seq, seq + 1)), 30)
            seq += 2
        assert store.checkpoints >= 1
        assert store.commits < WAL_BACKSTOP_PAGES // 10
        assert path.stat().st_size > empty  # copied out of the WAL, store still open
        assert await store.read("s1", 0, 10_000) == chunks(0, seq - 1)
    finally:
        await store.close()


async def test_two_stores_on_one_file_share_one_idempotency_winner(tmp_path: Path) -> None:
    # Two writers on one file (as two processes would be): BEGIN IMMEDIATE
    # serialises them, so the key check and the insert stay one atomic step.
    path = str(tmp_path / "s.db")
    first, second = SqliteStore(path), SqliteStore(path)
    await first.open()
    await second.open()
    try:
        calls = [
            (first if i % 2 else second).create_run(run_record(f"r{i}"), idempotency_key="k")
            for i in range(100)
        ]
        winners = await asyncio.wait_for(asyncio.gather(*calls), 60)
        assert len(set(winners)) == 1
        assert len(await first.unfinished_runs()) == 1
    finally:
        await first.close()
        await second.close()


async def test_a_refused_call_does_not_undo_its_batch_neighbours(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    try:
        await store.create_run(run_record("ok"))
        results = await asyncio.wait_for(
            asyncio.gather(
                store.append("ok", chunks(0, 2)),
                store.append("missing", chunks(0, 0)),
                store.append("ok", chunks(7, 7)),
                store.append("ok", chunks(3, 4)),
                return_exceptions=True,
            ),
            30,
        )
        assert results[0] == 3
        assert results[3] == 2
        assert isinstance(results[1], KeyError)
        assert isinstance(results[2], ValueError)
        assert await store.read("ok", 0, 10) == chunks(0, 4)
    finally:
        await store.close()


async def test_a_long_append_is_split_into_segments_read_across_their_bounds(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(str(path))
    await store.open()
    try:
        await store.create_run(run_record("s"))
        total = SEGMENT_CHUNKS * 3 + 10
        assert await store.append("s", chunks(0, total - 1)) == total
        await store.append("s", chunks(total, total + 4))
        everything = chunks(0, total + 4)
        assert await store.read("s", 0, 10_000) == everything
        for start, limit in ((SEGMENT_CHUNKS - 2, 5), (SEGMENT_CHUNKS * 3 + 9, 3), (17, 600)):
            assert await store.read("s", start, limit) == everything[start : start + limit]
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT first_seq, last_seq FROM segments ORDER BY last_seq").fetchall()
    conn.close()
    assert rows[0] == (0, SEGMENT_CHUNKS - 1)
    assert rows[-1] == (total, total + 4)
    assert len(rows) == 5


async def test_a_failing_statement_is_unavailable_and_spares_its_batch(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(str(path))
    await store.open()
    try:
        await store.create_run(run_record("s"))
        with sqlite3.connect(path) as other:
            other.execute("DROP TABLE sessions")  # every session write now fails in SQLite
        other.close()
        results = await asyncio.wait_for(
            asyncio.gather(
                store.put_session("w", b"x", 1e12),
                store.append("s", chunks(0, 2)),
                return_exceptions=True,
            ),
            30,
        )
        assert isinstance(results[0], StoreUnavailable)
        assert "no such table" in str(results[0])
        assert results[1] == 3
        assert await store.read("s", 0, 10) == chunks(0, 2)
    finally:
        await store.close()


async def test_callers_past_the_queue_bound_wait_and_close_answers_everyone(
    tmp_path: Path,
) -> None:
    store = SqliteStore(str(tmp_path / "s.db"), max_pending=4)
    await store.open()
    sids = [f"s{i}" for i in range(60)]
    for sid in sids:
        await store.create_run(run_record(sid))
    calls = [asyncio.ensure_future(store.append(sid, chunks(0, 3))) for sid in sids]
    await asyncio.sleep(0)  # the first calls queue; the rest wait for room
    await asyncio.wait_for(store.close(), 30)
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
    done = [r for r in results if r == 4]
    refused = [r for r in results if isinstance(r, StoreUnavailable)]
    assert len(done) + len(refused) == len(sids)  # every caller answered, none hangs
    assert done  # the queued calls ahead of close() were written


def test_a_bad_queue_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        SqliteStore("x.db", max_pending=0)


async def test_a_value_sqlite_cannot_store_fails_its_call_and_the_writer_lives_on(
    tmp_path: Path,
) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    try:
        bad = run_record("bad")._replace(targets=(object(),))  # type: ignore[arg-type]
        results = await asyncio.wait_for(
            asyncio.gather(
                store.create_run(bad), store.create_run(run_record("ok")), return_exceptions=True
            ),
            30,
        )
        assert isinstance(results[0], TypeError)
        assert results[1] == "ok"
        assert await store.get_run("bad") is None
        assert await asyncio.wait_for(store.append("ok", chunks(0, 1)), 30) == 2
    finally:
        await store.close()


async def test_a_newer_schema_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(str(path))
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    conn.close()
    again = SqliteStore(str(path))
    with pytest.raises(StoreUnavailable, match=f"schema version {SCHEMA_VERSION + 1}"):
        await again.open()
    await again.close()


async def test_calls_on_a_closed_store_are_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.get_run("x")
    await store.open()
    await store.close()
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.append("x", chunks(0, 0))
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.open()


async def test_an_unwritable_path_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = SqliteStore(str(blocker / "sub" / "s.db"))
    with pytest.raises(StoreUnavailable, match="cannot open"):
        await store.open()
    await store.close()


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from icefloe.core.reliability import Reliability
    from icefloe.store.sqlite import SqliteStore
    from icefloe.store.types import Checkpoint, RunRecord, StoredChunk

    async def main(path):
        store = SqliteStore(path)
        await store.open()
        await store.create_run(RunRecord("s", "t", "acme", Reliability.EXACTLY_ONCE, (), b"m", 1.0))
        seq = 0
        while True:
            batch = [StoredChunk(s, b"c%d" % s) for s in range(seq, seq + 8)]
            await store.append("s", batch, checkpoint=Checkpoint(seq + 7, b"k%d" % (seq + 7)))
            seq += 8
            print(seq - 1, flush=True)  # acknowledged: committed

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    path = str(tmp_path / "k.db")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WRITER, path, stdout=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    acked = -1
    try:
        while acked < 2000:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, "the writer died before it was killed"
            acked = int(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == -signal.SIGKILL
    store = SqliteStore(path)
    await store.open()
    try:
        state = await store.get_run("s")
        assert state is not None
        assert state.last_seq >= acked
        assert state.checkpoint is not None
        assert state.checkpoint.seq == state.last_seq
        got = await store.read("s", 0, state.last_seq + 1)
        assert [c.seq for c in got] == list(range(state.last_seq + 1))
        assert all(c.record == b"c%d" % c.seq for c in got)
    finally:
        await store.close()
