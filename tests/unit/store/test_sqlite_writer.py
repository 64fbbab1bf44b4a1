"""GroupCommitWriter: calls share commits, answer after them, and fail alone."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from icefloe.store import StoreUnavailable
from icefloe.store.sqlite_writer import Counts, GroupCommitWriter


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)")
    return conn


def _insert(k: int, v: object = "x") -> Any:
    def op(conn: sqlite3.Connection) -> tuple[Any, Counts]:
        conn.execute("INSERT INTO t (k, v) VALUES (?, ?)", (k, v))
        return k, (0, 1, 0, 0)

    return op


def _seen(path: Path) -> set[int]:
    with sqlite3.connect(path) as other:
        keys = {row[0] for row in other.execute("SELECT k FROM t")}
    other.close()
    return keys


async def test_an_answer_comes_after_its_commit_and_calls_share_commits(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    writer = GroupCommitWriter("test", _connect(path), max_pending=100)
    try:
        assert await asyncio.wait_for(writer.submit(_insert(0)), 30) == 0
        assert _seen(path) == {0}  # another connection sees it: committed
        results = await asyncio.wait_for(
            asyncio.gather(*(writer.submit(_insert(k)) for k in range(1, 51))), 30
        )
        assert results == list(range(1, 51))
        assert _seen(path) == set(range(51))
        assert writer.commits < 51
        assert writer.counts == (0, 51, 0, 0)
    finally:
        await writer.stop()


async def test_a_refusal_and_a_failure_each_fail_alone(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    writer = GroupCommitWriter("test", _connect(path), max_pending=100)

    def refuse(conn: sqlite3.Connection) -> tuple[Any, Counts]:
        raise ValueError("refused before writing")

    try:
        results = await asyncio.wait_for(
            asyncio.gather(
                writer.submit(_insert(1)),
                writer.submit(refuse),
                writer.submit(_insert(1)),  # a duplicate key: SQLite fails it
                writer.submit(_insert(2, object())),  # a value SQLite cannot bind
                writer.submit(_insert(3)),
                return_exceptions=True,
            ),
            30,
        )
        assert results[0] == 1
        assert isinstance(results[1], ValueError)
        assert isinstance(results[2], StoreUnavailable)
        assert "UNIQUE" in str(results[2])
        assert isinstance(results[3], Exception)
        assert results[4] == 3
        assert _seen(path) == {1, 3}
        assert await asyncio.wait_for(writer.submit(_insert(4)), 30) == 4  # still alive
    finally:
        await writer.stop()


async def test_stop_answers_every_caller_even_those_waiting_for_room(tmp_path: Path) -> None:
    writer = GroupCommitWriter("test", _connect(tmp_path / "w.db"), max_pending=2)
    calls = [asyncio.ensure_future(writer.submit(_insert(k))) for k in range(40)]
    await asyncio.sleep(0)
    await asyncio.wait_for(writer.stop(), 30)
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
    assert all(r == k or isinstance(r, StoreUnavailable) for k, r in enumerate(results))
    assert any(r == k for k, r in enumerate(results))
    with pytest.raises(StoreUnavailable, match="not open"):
        await writer.submit(_insert(99))
