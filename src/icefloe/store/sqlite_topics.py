"""Hub topic history in the SQLite store's file (see :mod:`icefloe.store.topics`).

Its own table, ``hub_topics`` (tenant, topic, offset, epoch, at, size,
record), in the same file as the runs, written on its own connection in a
worker thread: one transaction per batch (the journal batches appends).
SQLite serialises it with the run store's writer (WAL, ``busy_timeout``).
Durability is the run store's: with ``synchronous=normal`` a ``kill -9``
loses nothing committed.

Trimming after each batch, per topic touched: rows of another epoch,
rows past ``max_items`` (oldest first), then the oldest rows while the
topic's record bytes exceed ``max_bytes``. A topic idle past ``idle_s`` is
deleted by the load at start (and is never loaded).
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Final, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from icefloe.store.protocol import StoreUnavailable
from icefloe.store.topics import Retention, TopicRecord

__all__ = ["SCHEMA", "SqliteTopicStore"]

T = TypeVar("T")

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS hub_topics (
    tenant TEXT NOT NULL,
    topic TEXT NOT NULL,
    "offset" INTEGER NOT NULL,
    epoch TEXT NOT NULL,
    at REAL NOT NULL,
    size INTEGER NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (tenant, topic, "offset")
) WITHOUT ROWID;
"""

_INSERT = (
    'INSERT OR REPLACE INTO hub_topics (tenant, topic, "offset", epoch, at, size, record) '
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_OTHER_EPOCHS = "DELETE FROM hub_topics WHERE tenant = ? AND topic = ? AND epoch != ?"
_PAST_COUNT = 'DELETE FROM hub_topics WHERE tenant = ? AND topic = ? AND "offset" <= ? - ?'
# The oldest offset whose suffix (it and the newer rows) fits max_bytes.
_PAST_BYTES = """
DELETE FROM hub_topics WHERE tenant = ?1 AND topic = ?2 AND "offset" < (
    SELECT COALESCE(MIN("offset"), ?3) FROM (
        SELECT "offset", SUM(size) OVER (ORDER BY "offset" DESC) AS tail
        FROM hub_topics WHERE tenant = ?1 AND topic = ?2
    ) WHERE tail <= ?4
)
"""
_IDLE = """
DELETE FROM hub_topics WHERE (tenant, topic) IN (
    SELECT tenant, topic FROM hub_topics GROUP BY tenant, topic HAVING MAX(at) < ?
)
"""
_LOAD = (
    'SELECT tenant, topic, epoch, "offset", at, record FROM hub_topics '
    'ORDER BY tenant, topic, "offset"'
)


class SqliteTopicStore:
    """Hub topic history in a SQLite file (see the module docstring)."""

    def __init__(self, path: str, *, synchronous: str = "normal") -> None:
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be normal or full, got {synchronous!r}")
        self._path = path
        self._sync = synchronous
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str) -> SqliteTopicStore:
        """The file of a ``sqlite:///path.db`` store URL (its options are the run store's)."""
        parts = urlsplit(url)
        path = unquote(parts.path)[1:]
        if parts.scheme != "sqlite" or parts.netloc or not path or path == ":memory:":
            raise ValueError(f"not a sqlite store URL naming a file: {url!r}")
        sync = parse_qs(parts.query).get("synchronous", ["normal"])[0]
        return cls(path, synchronous=sync)

    @property
    def name(self) -> str:
        return f"sqlite:///{self._path} (hub_topics)"

    async def open(self) -> None:
        if self._conn is None:
            self._conn = await asyncio.to_thread(self._connect)

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(self._path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        conn = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._sync.upper()}")
            conn.executescript(SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            async with self._lock:
                await asyncio.to_thread(conn.close)

    async def append(self, records: Sequence[TopicRecord], retention: Retention) -> None:
        if records:
            await self._run(functools.partial(_append, records=records, keep=retention))

    async def load(self, retention: Retention) -> list[TopicRecord]:
        return await self._run(functools.partial(_load, keep=retention))

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreUnavailable(f"{self.name} is not open")
        async with self._lock:  # one statement sequence at a time on the connection
            try:
                return await asyncio.to_thread(fn, conn)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"{self.name}: {exc}") from exc


def _append(conn: sqlite3.Connection, records: Sequence[TopicRecord], keep: Retention) -> None:
    last: dict[tuple[str, str], tuple[str, int]] = {}
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            _INSERT,
            [
                (r.tenant, r.topic, r.offset, r.epoch, r.at, len(r.record), r.record)
                for r in records
            ],
        )
        for r in records:
            last[(r.tenant, r.topic)] = (r.epoch, r.offset)
        for (tenant, topic), (epoch, offset) in last.items():
            conn.execute(_OTHER_EPOCHS, (tenant, topic, epoch))
            conn.execute(_PAST_COUNT, (tenant, topic, offset, keep.max_items))
            conn.execute(_PAST_BYTES, (tenant, topic, offset + 1, keep.max_bytes))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _load(conn: sqlite3.Connection, keep: Retention) -> list[TopicRecord]:
    conn.execute(_IDLE, (time.time() - keep.idle_s,))
    return [
        TopicRecord(tenant, topic, epoch, offset, at, bytes(record))
        for tenant, topic, epoch, offset, at, record in conn.execute(_LOAD)
    ]
