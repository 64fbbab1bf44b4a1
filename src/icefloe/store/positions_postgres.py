"""The PostgreSQL store's connector positions (:mod:`icefloe.store.positions`).

One table in the store's schema, keyed by ``(namespace, key)``, written with
``INSERT ... ON CONFLICT DO UPDATE``. It is created by the first write that
finds it missing (under the store's schema advisory lock, so processes
starting together do not race), so a database laid out before positions
existed needs no migration; a read that finds no table finds no position.
The functions take a pooled connection; :class:`~icefloe.store.postgres.PostgresStore`
turns driver errors into ``StoreUnavailable``.
"""

from __future__ import annotations

from typing import Any, Final

from icefloe.store.postgres_schema import create_tables

__all__ = ["TABLE", "all_positions", "get_position", "put_position"]

TABLE: Final = """
CREATE TABLE IF NOT EXISTS positions (
    namespace text NOT NULL,
    key text NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (namespace, key)
)
"""
_PUT = (
    "INSERT INTO positions (namespace, key, value) VALUES ($1, $2, $3)"
    " ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value"
)


def _undefined_table() -> type[BaseException]:
    from asyncpg.exceptions import UndefinedTableError  # type: ignore[import-untyped]

    error: type[BaseException] = UndefinedTableError
    return error


async def put_position(conn: Any, namespace: str, key: str, value: bytes) -> None:
    """Store (replace) one position, creating the table on first use."""
    try:
        await conn.execute(_PUT, namespace, key, bytes(value))
        return
    except _undefined_table():
        pass
    await create_tables(conn, None, TABLE)  # the connection's search_path is the schema
    await conn.execute(_PUT, namespace, key, bytes(value))


async def get_position(conn: Any, namespace: str, key: str) -> bytes | None:
    try:
        value = await conn.fetchval(
            "SELECT value FROM positions WHERE namespace = $1 AND key = $2", namespace, key
        )
    except _undefined_table():
        return None
    return None if value is None else bytes(value)


async def all_positions(conn: Any, namespace: str) -> dict[str, bytes]:
    try:
        rows = await conn.fetch("SELECT key, value FROM positions WHERE namespace = $1", namespace)
    except _undefined_table():
        return {}
    return {str(row["key"]): bytes(row["value"]) for row in rows}
