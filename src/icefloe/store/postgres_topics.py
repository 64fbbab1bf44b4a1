"""Hub topic history in PostgreSQL (see :mod:`icefloe.store.topics`).

Its own table, ``hub_topics`` (tenant, topic, offset, epoch, at, size,
record), in the run store's schema (the URL's ``schema``, ``public`` by
default), on one connection of its own: the journal writes one batch at a
time, in one transaction, and trims each topic it touched (other epochs,
past ``max_items``, past ``max_bytes``) in the same transaction. Topics
idle past ``idle_s`` are deleted by the load at start.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from typing import Any, Final

from icefloe.store.postgres_schema import create_tables
from icefloe.store.protocol import StoreUnavailable
from icefloe.store.remote import split_options
from icefloe.store.topics import Retention, TopicRecord

__all__ = ["PostgresTopicStore"]

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_TABLE: Final = """
CREATE TABLE IF NOT EXISTS hub_topics (
    tenant TEXT NOT NULL,
    topic TEXT NOT NULL,
    "offset" BIGINT NOT NULL,
    epoch TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    size INTEGER NOT NULL,
    record BYTEA NOT NULL,
    PRIMARY KEY (tenant, topic, "offset")
)
"""
_INSERT = (
    'INSERT INTO hub_topics (tenant, topic, "offset", epoch, at, size, record) '
    'VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant, topic, "offset") DO UPDATE '
    "SET epoch = EXCLUDED.epoch, at = EXCLUDED.at, size = EXCLUDED.size, record = EXCLUDED.record"
)
_TRIM = """
DELETE FROM hub_topics WHERE tenant = $1 AND topic = $2 AND (
    epoch != $3 OR "offset" <= $4::bigint - $5::bigint OR "offset" < (
        SELECT COALESCE(MIN("offset"), $4::bigint + 1) FROM (
            SELECT "offset", SUM(size) OVER (ORDER BY "offset" DESC) AS tail
            FROM hub_topics WHERE tenant = $1 AND topic = $2 AND epoch = $3
        ) AS t WHERE tail <= $6::bigint
    )
)
"""
_IDLE = """
DELETE FROM hub_topics WHERE (tenant, topic) IN (
    SELECT tenant, topic FROM hub_topics GROUP BY tenant, topic
    HAVING MAX(at) < $1::double precision
)
"""
_LOAD = (
    'SELECT tenant, topic, epoch, "offset", at, record FROM hub_topics '
    'ORDER BY tenant, topic, "offset"'
)


class PostgresTopicStore:
    """Hub topic history in PostgreSQL (see the module docstring)."""

    def __init__(self, dsn: str, *, schema: str = "public") -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema must be a plain lowercase identifier, got {schema!r}")
        self._dsn = dsn
        self._schema = schema
        self._conn: Any = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str) -> PostgresTopicStore:
        """``postgresql://…[?schema=S]``, as the run store reads it."""
        dsn, ours = split_options(url, ("schema", "pool_size", "timeout_s"))
        return cls(dsn, schema=ours.get("schema", "public"))

    @property
    def name(self) -> str:
        return f"postgresql hub_topics (schema {self._schema})"

    async def open(self) -> None:
        if self._conn is not None:
            return
        import asyncpg  # type: ignore[import-untyped]

        try:
            conn = await asyncpg.connect(
                self._dsn, timeout=5.0, server_settings={"search_path": self._schema}
            )
            await create_tables(conn, self._schema, _TABLE)
        except Exception as exc:
            raise StoreUnavailable(f"{self.name}: {exc!r}") from exc
        self._conn = conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    def _live(self) -> Any:
        if self._conn is None:
            raise StoreUnavailable(f"{self.name} is not open")
        return self._conn

    async def append(self, records: Sequence[TopicRecord], retention: Retention) -> None:
        conn = self._live()
        last: dict[tuple[str, str], tuple[str, int]] = {}
        for r in records:
            last[(r.tenant, r.topic)] = (r.epoch, r.offset)
        rows = [
            (r.tenant, r.topic, r.offset, r.epoch, r.at, len(r.record), r.record) for r in records
        ]
        async with self._lock:
            try:
                async with conn.transaction():
                    await conn.executemany(_INSERT, rows)
                    for (tenant, topic), (epoch, offset) in last.items():
                        await conn.execute(
                            _TRIM,
                            tenant,
                            topic,
                            epoch,
                            offset,
                            retention.max_items,
                            retention.max_bytes,
                        )
            except Exception as exc:
                raise StoreUnavailable(f"{self.name}: {exc!r}") from exc

    async def load(self, retention: Retention) -> list[TopicRecord]:
        conn = self._live()
        async with self._lock:
            try:
                await conn.execute(_IDLE, time.time() - retention.idle_s)
                found = await conn.fetch(_LOAD)
            except Exception as exc:
                raise StoreUnavailable(f"{self.name}: {exc!r}") from exc
        return [TopicRecord(row[0], row[1], row[2], row[3], row[4], bytes(row[5])) for row in found]
