"""``postgresql://``: a :class:`~icefloe.store.protocol.Store` in PostgreSQL.

``open()`` creates the schema (``public`` unless the URL's ``schema`` query
parameter names another) and its tables, under an advisory lock so that
processes opening together do not race, and records the layout's version in
``icefloe_schema``::

    runs              one row per run: its record's columns, last_seq, the
                      terminal (t_*), the latest checkpoint (cp_*), idem_key
    chunks            (stream_id, seq) primary key, record bytea
    idempotency_keys  key primary key, stream_id, expires_at
    sessions          session_id primary key, record bytea, expires_at
    positions         (namespace, key) primary key, value bytea: connector
                      positions, created by their first write

Atomicity: ``append`` is one statement (an ``UPDATE`` of the run guarded by
the last seq this object expects, feeding the chunks' ``INSERT``), so the
chunks, ``last_seq`` and the checkpoint are written together or not at all;
when another writer moved the stream on, it re-reads under ``FOR UPDATE`` in
a transaction and checks :func:`~icefloe.store.memory.check_append` again.
``create_run`` claims its idempotency key with ``INSERT ... ON CONFLICT``
and inserts the run in one transaction, so concurrent callers (in any
process) wait for the first and then read its stream id. ``end_run`` is one
``UPDATE ... WHERE t_phase IS NULL``. Expiry (keys, sessions) uses the
database server's clock; ``delete_runs`` also purges expired keys and
sessions, up to its limit of each.
"""

from __future__ import annotations

import importlib.util
import re
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Final
from urllib.parse import urlsplit

from icefloe.core.reliability import Reliability
from icefloe.exceptions import StreamNotFound
from icefloe.store import positions_postgres
from icefloe.store.counters import StoreCounters
from icefloe.store.memory import check_append
from icefloe.store.positions import check_position
from icefloe.store.postgres_schema import SCHEMA_LOCK
from icefloe.store.protocol import StoreUnavailable
from icefloe.store.remote import as_unavailable, check_url, split_options
from icefloe.store.types import (
    NO_SEQ,
    Checkpoint,
    RunRecord,
    RunState,
    StoredChunk,
    StoreStatistics,
    Terminal,
)

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

#: the table layout this module writes (``icefloe_schema.version``)
SCHEMA_VERSION: Final = 1
#: seconds to connect, and to wait for any one statement
DEFAULT_TIMEOUT_S: Final = 5.0
#: connections in the pool at most
DEFAULT_POOL_SIZE: Final = 10
#: streams whose last seq this object remembers (oldest forgotten first); a
#: stream it forgot costs one locked re-read on its next append
LAST_SEQ_CACHE: Final = 4096

#: the URL's query parameters this module reads (the rest go to asyncpg)
_OUR_PARAMETERS = frozenset({"schema", "pool_size", "timeout_s"})
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_NOW = "extract(epoch FROM clock_timestamp())::float8"

_TABLES = f"""
CREATE TABLE IF NOT EXISTS icefloe_schema (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    stream_id text PRIMARY KEY,
    trace_id text NOT NULL,
    tenant text NOT NULL,
    reliability text NOT NULL,
    targets text[] NOT NULL,
    message bytea NOT NULL,
    created_at float8 NOT NULL,
    last_seq bigint NOT NULL DEFAULT {NO_SEQ},
    idem_key text,
    t_phase text,
    t_code text,
    t_message text,
    t_ended_at float8,
    cp_seq bigint,
    cp_state bytea
);
CREATE INDEX IF NOT EXISTS runs_unfinished ON runs (created_at) WHERE t_phase IS NULL;
CREATE INDEX IF NOT EXISTS runs_ended ON runs (t_ended_at) WHERE t_phase IS NOT NULL;
CREATE TABLE IF NOT EXISTS chunks (
    stream_id text NOT NULL,
    seq bigint NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (stream_id, seq)
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key text PRIMARY KEY,
    stream_id text NOT NULL,
    expires_at float8 NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_keys_expiry ON idempotency_keys (expires_at);
CREATE TABLE IF NOT EXISTS sessions (
    session_id text PRIMARY KEY,
    record bytea NOT NULL,
    expires_at float8 NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_at);
"""

_RUN_COLUMNS = (
    "stream_id, trace_id, tenant, reliability, targets, message, created_at, last_seq,"
    " t_phase, t_code, t_message, t_ended_at, cp_seq, cp_state"
)

_CLAIM_KEY = f"""
INSERT INTO idempotency_keys AS k (key, stream_id, expires_at)
VALUES ($1, $2, {_NOW} + $3::float8)
ON CONFLICT (key) DO UPDATE SET stream_id = EXCLUDED.stream_id, expires_at = EXCLUDED.expires_at
WHERE k.expires_at <= {_NOW}
RETURNING stream_id
"""

_INSERT_RUN = """
INSERT INTO runs (stream_id, trace_id, tenant, reliability, targets, message, created_at, idem_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""

# One statement: the UPDATE matches only while last_seq is what the caller
# checked against, and the INSERT takes its rows from the UPDATE's result.
_APPEND = """
WITH run AS (
    UPDATE runs SET last_seq = $3::bigint,
        cp_seq = CASE WHEN $4::boolean THEN $5::bigint ELSE cp_seq END,
        cp_state = CASE WHEN $4::boolean THEN $6::bytea ELSE cp_state END
    WHERE stream_id = $1 AND last_seq = $2::bigint
    RETURNING stream_id
), added AS (
    INSERT INTO chunks (stream_id, seq, record)
    SELECT run.stream_id, c.seq, c.record
    FROM run, unnest($7::bigint[], $8::bytea[]) AS c(seq, record)
    RETURNING 1
)
SELECT (SELECT count(*) FROM run) AS matched, (SELECT count(*) FROM added) AS written
"""

_END_RUN = """
WITH ended AS (
    UPDATE runs SET t_phase = $2, t_code = $3, t_message = $4, t_ended_at = $5
    WHERE stream_id = $1 AND t_phase IS NULL
    RETURNING 1
)
SELECT (SELECT count(*) FROM ended) AS ended,
       EXISTS (SELECT 1 FROM runs WHERE stream_id = $1) AS found
"""

_DELETE_RUNS = """
WITH doomed AS (
    SELECT stream_id, idem_key FROM runs
    WHERE t_phase IS NOT NULL AND t_ended_at < $1
    ORDER BY t_ended_at LIMIT $2
    FOR UPDATE SKIP LOCKED
), chunks_gone AS (
    DELETE FROM chunks c USING doomed d WHERE c.stream_id = d.stream_id
), keys_gone AS (
    -- a key that expired and was claimed again belongs to another run now
    DELETE FROM idempotency_keys k USING doomed d
    WHERE k.key = d.idem_key AND k.stream_id = d.stream_id
), runs_gone AS (
    DELETE FROM runs r USING doomed d WHERE r.stream_id = d.stream_id RETURNING r.stream_id
)
SELECT stream_id FROM runs_gone
"""

_PURGE = (
    f"DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys"
    f" WHERE expires_at <= {_NOW} LIMIT $1)",
    f"DELETE FROM sessions WHERE session_id IN (SELECT session_id FROM sessions"
    f" WHERE expires_at <= {_NOW} LIMIT $1)",
)


class PostgresStore:
    """Runs, chunks, keys and sessions in PostgreSQL (see the module docstring)."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(
                f"schema must be 1-63 lowercase letters, digits or _ "
                f"(not starting with a digit), got {schema!r}"
            )
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        check_url(dsn, "Postgres", ("postgresql", "postgres"))
        if importlib.util.find_spec("asyncpg") is None:
            raise ImportError("the Postgres store needs asyncpg: pip install 'icefloe[postgres]'")
        self._dsn = dsn
        self._schema = schema
        self._timeout_s = timeout_s
        self._pool_size = pool_size
        self._pool: Any = None
        self._pg: Any = None
        self._errors: tuple[type[BaseException], ...] = (OSError,)
        self._last: OrderedDict[str, int] = OrderedDict()
        self._counters = StoreCounters()

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """``postgresql://[user[:password]@]host[:port]/db[?schema=S&pool_size=N&timeout_s=T]``.

        Other query parameters go to asyncpg: ``sslmode=require``, or a server
        setting such as ``synchronous_commit=off``.

        :raises ValueError: a malformed URL, a schema name that is not a plain
            lowercase identifier, or a pool size or timeout that is not a positive number.
        :raises ImportError: asyncpg is not installed.
        """
        dsn, ours = split_options(url, _OUR_PARAMETERS)
        try:
            pool_size = int(ours.get("pool_size", DEFAULT_POOL_SIZE))
            timeout_s = float(ours.get("timeout_s", DEFAULT_TIMEOUT_S))
        except ValueError:
            raise ValueError(
                "pool_size must be an integer and timeout_s a number, got "
                f"{ours.get('pool_size')!r} and {ours.get('timeout_s')!r}"
            ) from None
        return cls(
            dsn,
            schema=ours.get("schema", "public"),
            pool_size=pool_size,
            timeout_s=timeout_s,
        )

    @property
    def name(self) -> str:
        parts = urlsplit(self._dsn)
        user = f"{parts.username}@" if parts.username else ""
        port = f":{parts.port}" if parts.port else ""
        where = f"{user}{parts.hostname or 'localhost'}{port}{parts.path}"
        return f"postgresql://{where} (schema {self._schema})"

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding this store's tables."""
        return self._schema

    async def open(self) -> None:
        if self._pool is not None:
            return
        import asyncpg  # type: ignore[import-untyped]

        self._pg = asyncpg
        self._errors = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
        with self._unavailable("connect"):
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._timeout_s,
                command_timeout=self._timeout_s,
                server_settings={"search_path": self._schema, "application_name": "icefloe"},
            )
            try:
                await self._create_schema(pool)
            except BaseException:
                await pool.close()
                raise
        self._pool = pool

    async def _create_schema(self, pool: Any) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._schema}")
            await conn.execute(_TABLES)
            version = await conn.fetchval("SELECT max(version) FROM icefloe_schema")
            if version is None:
                await conn.execute("INSERT INTO icefloe_schema VALUES ($1)", SCHEMA_VERSION)
            elif version > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"{self.name}: the tables have layout version {version}, "
                    f"newer than this icefloe's {SCHEMA_VERSION}; upgrade icefloe"
                )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            with self._unavailable("close"):
                await pool.close()

    # -- runs ------------------------------------------------------------------

    async def create_run(
        self, run: RunRecord, *, idempotency_key: str | None = None, key_ttl_s: float = 86_400.0
    ) -> str:
        row = (
            run.stream_id,
            run.trace_id,
            run.tenant,
            run.reliability.value,
            list(run.targets),
            run.message,
            run.created_at,
            idempotency_key,
        )
        with self._unavailable("create_run"):
            async with self._conn() as conn:
                try:
                    async with conn.transaction():
                        if idempotency_key is not None:
                            held = await self._claim(conn, idempotency_key, run, key_ttl_s)
                            if held is not None:
                                return held
                        await conn.execute(_INSERT_RUN, *row)
                except self._pg.UniqueViolationError as exc:
                    raise ValueError(
                        f"a run with stream id {run.stream_id} exists already"
                    ) from exc
        self._counters.run_created()
        self._remember(run.stream_id, NO_SEQ)
        return run.stream_id

    @staticmethod
    async def _claim(conn: Any, key: str, run: RunRecord, ttl_s: float) -> str | None:
        """None when this call now holds ``key``, else the stream id holding it."""
        claimed = await conn.fetchval(_CLAIM_KEY, key, run.stream_id, ttl_s)
        if claimed is not None:
            return None
        held = await conn.fetchval("SELECT stream_id FROM idempotency_keys WHERE key = $1", key)
        if held is None:
            # retention removed the holder between the two statements
            raise StoreUnavailable(f"idempotency key {key!r} changed hands; retry")
        return str(held)

    async def get_run(self, stream_id: str) -> RunState | None:
        with self._unavailable("get_run"):
            async with self._conn() as conn:
                row = await conn.fetchrow(
                    f"SELECT {_RUN_COLUMNS} FROM runs WHERE stream_id = $1", stream_id
                )
        return None if row is None else _state(row)

    async def unfinished_runs(self) -> list[RunState]:
        with self._unavailable("unfinished_runs"):
            async with self._conn() as conn:
                rows = await conn.fetch(
                    f"SELECT {_RUN_COLUMNS} FROM runs WHERE t_phase IS NULL ORDER BY created_at"
                )
        return [_state(row) for row in rows]

    async def end_run(self, stream_id: str, terminal: Terminal) -> bool:
        with self._unavailable("end_run"):
            async with self._conn() as conn:
                row = await conn.fetchrow(_END_RUN, stream_id, *terminal)
        if not row["found"]:
            raise StreamNotFound(stream_id)
        return bool(row["ended"])

    # -- chunks and checkpoints ------------------------------------------------

    async def append(
        self,
        stream_id: str,
        chunks: Sequence[StoredChunk],
        *,
        checkpoint: Checkpoint | None = None,
    ) -> int:
        with self._unavailable("append"):
            written = await self._append_expected(stream_id, chunks, checkpoint)
            if written is None:
                written = await self._append_locked(stream_id, chunks, checkpoint)
        self._counters.appended(len(chunks), written, checkpoint=checkpoint is not None)
        return written

    async def _append_expected(
        self, stream_id: str, chunks: Sequence[StoredChunk], checkpoint: Checkpoint | None
    ) -> int | None:
        """One statement against the last seq this object remembers; None
        when it remembers none, or the stream moved on (another writer)."""
        last = self._last.get(stream_id)
        if last is None:
            return None
        try:
            fresh = check_append(stream_id, last, chunks, checkpoint)
        except ValueError:
            return None  # maybe only against a stale last seq: check under the lock
        async with self._conn() as conn:
            return await self._write(conn, stream_id, last, fresh, checkpoint)

    async def _append_locked(
        self, stream_id: str, chunks: Sequence[StoredChunk], checkpoint: Checkpoint | None
    ) -> int:
        async with self._conn() as conn, conn.transaction():
            last = await conn.fetchval(
                "SELECT last_seq FROM runs WHERE stream_id = $1 FOR UPDATE", stream_id
            )
            if last is None:
                self._last.pop(stream_id, None)
                raise StreamNotFound(stream_id)
            fresh = check_append(stream_id, last, chunks, checkpoint)
            written = await self._write(conn, stream_id, last, fresh, checkpoint)
        if written is None:  # cannot happen while the row is locked
            raise StoreUnavailable(f"stream {stream_id}: the run changed under its lock")
        return written

    async def _write(
        self,
        conn: Any,
        stream_id: str,
        last: int,
        fresh: list[StoredChunk],
        checkpoint: Checkpoint | None,
    ) -> int | None:
        newest = fresh[-1].seq if fresh else last
        row = await conn.fetchrow(
            _APPEND,
            stream_id,
            last,
            newest,
            checkpoint is not None,
            checkpoint.seq if checkpoint else None,
            checkpoint.state if checkpoint else None,
            [c.seq for c in fresh],
            [c.record for c in fresh],
        )
        if not row["matched"]:
            return None
        self._remember(stream_id, newest)
        return int(row["written"])

    async def read(self, stream_id: str, from_seq: int, limit: int) -> list[StoredChunk]:
        if limit <= 0:
            return []
        with self._unavailable("read"):
            async with self._conn() as conn:
                rows = await conn.fetch(
                    "SELECT seq, record FROM chunks WHERE stream_id = $1 AND seq >= $2"
                    " ORDER BY seq LIMIT $3",
                    stream_id,
                    from_seq,
                    limit,
                )
        return [StoredChunk(row["seq"], bytes(row["record"])) for row in rows]

    async def delete_runs(self, ended_before: float, limit: int) -> int:
        if limit <= 0:
            return 0
        with self._unavailable("delete_runs"):
            async with self._conn() as conn, conn.transaction():
                deleted = await conn.fetch(_DELETE_RUNS, ended_before, limit)
                for purge in _PURGE:
                    await conn.execute(purge, limit)
        for row in deleted:
            self._last.pop(row["stream_id"], None)
        return len(deleted)

    # -- WebSocket sessions ----------------------------------------------------

    async def put_session(self, session_id: str, record: bytes, expires_at: float) -> None:
        with self._unavailable("put_session"):
            async with self._conn() as conn:
                await conn.execute(
                    "INSERT INTO sessions (session_id, record, expires_at) VALUES ($1, $2, $3)"
                    " ON CONFLICT (session_id) DO UPDATE"
                    " SET record = EXCLUDED.record, expires_at = EXCLUDED.expires_at",
                    session_id,
                    record,
                    expires_at,
                )

    async def get_session(self, session_id: str) -> bytes | None:
        with self._unavailable("get_session"):
            async with self._conn() as conn:
                record = await conn.fetchval(
                    f"SELECT record FROM sessions WHERE session_id = $1 AND expires_at > {_NOW}",
                    session_id,
                )
        return None if record is None else bytes(record)

    async def delete_session(self, session_id: str) -> None:
        with self._unavailable("delete_session"):
            async with self._conn() as conn:
                await conn.execute("DELETE FROM sessions WHERE session_id = $1", session_id)

    # -- connector positions (icefloe.store.positions_postgres) ------------------

    async def put_position(self, namespace: str, key: str, value: bytes) -> None:
        check_position(namespace, key, value)
        with self._unavailable("put_position"):
            async with self._conn() as conn:
                await positions_postgres.put_position(conn, namespace, key, value)

    async def get_position(self, namespace: str, key: str) -> bytes | None:
        check_position(namespace, key)
        with self._unavailable("get_position"):
            async with self._conn() as conn:
                return await positions_postgres.get_position(conn, namespace, key)

    async def positions(self, namespace: str) -> dict[str, bytes]:
        check_position(namespace)
        with self._unavailable("positions"):
            async with self._conn() as conn:
                return await positions_postgres.all_positions(conn, namespace)

    def statistics(self) -> StoreStatistics:
        """This store object's counters since it was made (not the database's)."""
        return self._counters.statistics()

    # -- helpers ---------------------------------------------------------------

    def _db(self) -> Any:
        if self._pool is None:
            raise StoreUnavailable(f"{self.name}: the store is not open")
        return self._pool

    def _conn(self) -> Any:
        """A pooled connection, waiting at most the timeout for one to free up."""
        return self._db().acquire(timeout=self._timeout_s)

    def _remember(self, stream_id: str, last_seq: int) -> None:
        self._last[stream_id] = last_seq
        self._last.move_to_end(stream_id)
        if len(self._last) > LAST_SEQ_CACHE:
            self._last.popitem(last=False)

    def _unavailable(self, operation: str) -> AbstractContextManager[None]:
        return as_unavailable(self.name, operation, self._errors)


def _state(row: Any) -> RunState:
    run = RunRecord(
        row["stream_id"],
        row["trace_id"],
        row["tenant"],
        Reliability(row["reliability"]),
        tuple(row["targets"]),
        bytes(row["message"]),
        row["created_at"],
    )
    terminal = None
    if row["t_phase"] is not None:
        terminal = Terminal(row["t_phase"], row["t_code"], row["t_message"], row["t_ended_at"])
    checkpoint = None
    if row["cp_seq"] is not None:
        checkpoint = Checkpoint(row["cp_seq"], bytes(row["cp_state"]))
    return RunState(run, row["last_seq"], terminal, checkpoint)
