"""The SQLite store's connector positions (:mod:`icefloe.store.positions`).

One ``WITHOUT ROWID`` table keyed by ``(namespace, key)``. It is created by
the first write (``CREATE TABLE IF NOT EXISTS`` in the writer's transaction),
so a file written before positions existed needs no migration; a read of a
file that has no table yet finds no position. The functions build the
operations :class:`~icefloe.store.sqlite.SqliteStore` runs on its writer
(group commit) and reader threads.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Final

from icefloe.store.sqlite_writer import Counts, Op

__all__ = ["TABLE", "all_positions", "get_position", "put_position"]

TABLE: Final = """
CREATE TABLE IF NOT EXISTS positions (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID
"""
_NO_COUNT: Counts = (0, 0, 0, 0)


def put_position(namespace: str, key: str, value: bytes) -> Op:
    """The writer operation that stores (replaces) one position."""

    def op(conn: sqlite3.Connection) -> tuple[Any, Counts]:
        conn.execute(TABLE)
        conn.execute(
            "INSERT OR REPLACE INTO positions (namespace, key, value) VALUES (?, ?, ?)",
            (namespace, key, bytes(value)),
        )
        return None, _NO_COUNT

    return op


def _has_table(conn: sqlite3.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'positions'"
    ).fetchone()
    return row is not None


def get_position(namespace: str, key: str) -> Callable[[sqlite3.Connection], bytes | None]:
    """The read of one position (None: none stored)."""

    def fn(conn: sqlite3.Connection) -> bytes | None:
        if not _has_table(conn):
            return None
        row = conn.execute(
            "SELECT value FROM positions WHERE namespace = ? AND key = ?", (namespace, key)
        ).fetchone()
        return None if row is None else bytes(row[0])

    return fn


def all_positions(namespace: str) -> Callable[[sqlite3.Connection], dict[str, bytes]]:
    """The read of every position in ``namespace``."""

    def fn(conn: sqlite3.Connection) -> dict[str, bytes]:
        if not _has_table(conn):
            return {}
        rows = conn.execute(
            "SELECT key, value FROM positions WHERE namespace = ?", (namespace,)
        ).fetchall()
        return {str(key): bytes(value) for key, value in rows}

    return fn
