"""``sqlite:///path.db``: the embedded durable store (standard library sqlite3).

One file, no server. ``sqlite:///relative/path.db`` is relative to the
working directory, ``sqlite:////abs/path.db`` absolute. The query string may
set ``synchronous=normal`` (the default) or ``synchronous=full``.

**Writes** go through ONE writer thread that owns the only write
connection. Callers queue operations; the writer takes every operation
waiting (up to :data:`MAX_BATCH`) and runs them in one transaction, each in
its own savepoint, so a refused call (a gap, a missing run) rolls back alone
while its neighbours commit. Each caller's ``await`` returns only after the
transaction holding its operation committed: this *group commit* turns many
streams' small appends into one commit (and one WAL sync). The queue holds at
most :data:`MAX_PENDING` operations; a caller past it waits for room
(back-pressure, nothing is dropped).

**Reads** run on a second connection in a worker thread, off the event loop;
WAL lets them proceed while the writer writes, and a read issued after a
write's ``await`` returned sees that write.

**Durability** (journal_mode=WAL):

* a process crash (``kill -9``, an OOM kill) loses nothing that was
  acknowledged, with either setting: a commit is in the WAL file (the OS page
  cache) before the caller hears of it, and the next open replays the WAL;
* a power loss or kernel crash with ``synchronous=normal`` may lose the last
  transactions acknowledged before the failure (those since the WAL was last
  synced, at most one checkpoint's worth), never the file's consistency;
  ``synchronous=full`` syncs the WAL at every commit, so it loses nothing
  acknowledged, at the price of one fsync per group commit.

The default is ``normal``: the crash that matters for ``icefloe serve`` (a
killed process, a pod eviction) is covered, and one fsync per batch would
tie the chunk rate to the disk's sync latency.

Schema version :data:`SCHEMA_VERSION` is recorded in ``schema_version``; a
file written by a newer schema is refused with a clear error.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from icefloe.core.reliability import Reliability
from icefloe.exceptions import IcefloeError, StreamNotFound
from icefloe.store.memory import check_append
from icefloe.store.protocol import StoreUnavailable
from icefloe.store.types import (
    NO_SEQ,
    Checkpoint,
    RunRecord,
    RunState,
    StoredChunk,
    StoreStatistics,
    Terminal,
)

__all__ = ["MAX_BATCH", "MAX_PENDING", "SCHEMA_VERSION", "SqliteStore"]

T = TypeVar("T")

#: the schema this module writes
SCHEMA_VERSION: Final = 1
#: the most operations one transaction holds
MAX_BATCH: Final = 1024
#: the most operations queued for the writer; callers past it wait for room
MAX_PENDING: Final = 8192
_SYNCHRONOUS = ("normal", "full")

_SCHEMA = """
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
CREATE TABLE IF NOT EXISTS chunks (
    stream_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (stream_id, seq)
) WITHOUT ROWID;
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

_RUN_COLUMNS = (
    "stream_id, trace_id, tenant, reliability, targets, message, created_at, last_seq, "
    "end_phase, end_code, end_message, ended_at, ckpt_seq, ckpt_state"
)

# An operation the writer runs inside its transaction; it returns the
# caller's result and the counters it moved (runs, chunks, skipped, ckpts).
_Op = Callable[[sqlite3.Connection], tuple[Any, tuple[int, int, int, int]]]
_NO_COUNT = (0, 0, 0, 0)


def _path_from_url(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise ValueError(f"not a sqlite URL: {url!r}")
    if parts.netloc:
        raise ValueError(
            f"sqlite URL {url!r} has a host; use sqlite:///relative.db or sqlite:////abs/path.db"
        )
    path = unquote(parts.path)[1:]  # sqlite:///x.db -> "x.db", sqlite:////x.db -> "/x.db"
    if not path or path == ":memory:":
        raise ValueError(f"sqlite URL {url!r} names no file; e.g. sqlite:///icefloe.db")
    options = parse_qs(parts.query)
    unknown = set(options) - {"synchronous"}
    if unknown:
        raise ValueError(f"sqlite URL {url!r}: unknown option(s) {sorted(unknown)}")
    sync = options.get("synchronous", ["normal"])[-1].lower()
    if sync not in _SYNCHRONOUS:
        raise ValueError(f"sqlite URL {url!r}: synchronous must be normal or full, got {sync!r}")
    return path, sync


class SqliteStore:
    """A :class:`~icefloe.store.protocol.Store` in one SQLite file (see the module doc)."""

    def __init__(
        self, path: str, *, synchronous: str = "normal", clock: Callable[[], float] = time.time
    ) -> None:
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be normal or full, got {synchronous!r}")
        self._path = path
        self._sync = synchronous
        self._clock = clock
        self._ops: queue.SimpleQueue[tuple[_Op, asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._room: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open_lock = asyncio.Lock()
        self._counts = [0, 0, 0, 0]
        self._commits = 0
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        """The store ``sqlite:///relative.db`` or ``sqlite:////abs.db`` names.

        :raises ValueError: not a sqlite URL, no file named, or a bad option.
        """
        path, sync = _path_from_url(url)
        return cls(path, synchronous=sync)

    @property
    def name(self) -> str:
        return f"sqlite:///{self._path}"

    @property
    def commits(self) -> int:
        """Transactions the writer committed (each holds one or more calls)."""
        return self._commits

    def statistics(self) -> StoreStatistics:
        """This store's counters since it was opened."""
        runs, chunks, skipped, ckpts = self._counts
        return StoreStatistics(runs, chunks, skipped, ckpts)

    # -- life cycle ------------------------------------------------------------

    async def open(self) -> None:
        async with self._open_lock:
            if self._writer is not None:
                return
            if self._closed:
                raise StoreUnavailable(f"{self.name} was closed")
            self._loop = asyncio.get_running_loop()
            self._room = asyncio.Semaphore(MAX_PENDING)
            try:
                write_conn = await asyncio.to_thread(self._connect, True)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open {self.name}: {exc}") from exc
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="icefloe-sqlite-read")
            self._read_conn = await self._loop.run_in_executor(self._reader, self._connect, False)
            self._writer = threading.Thread(
                target=self._write_loop,
                args=(write_conn,),
                name="icefloe-sqlite-write",
                daemon=True,
            )
            self._writer.start()

    async def close(self) -> None:
        async with self._open_lock:
            self._closed = True
            writer, self._writer = self._writer, None
            if writer is None:
                return
            self._ops.put(None)
            await asyncio.to_thread(writer.join)
            reader, self._reader = self._reader, None
            read_conn, self._read_conn = self._read_conn, None
            if reader is not None and read_conn is not None:
                await asyncio.get_running_loop().run_in_executor(reader, read_conn.close)
                reader.shutdown(wait=True)

    def _connect(self, writer: bool) -> sqlite3.Connection:
        directory = os.path.dirname(self._path)
        if writer and directory:
            os.makedirs(directory, exist_ok=True)
        # Autocommit mode: the writer issues BEGIN/COMMIT itself.
        conn = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            if writer:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA synchronous = {self._sync.upper()}")
                _migrate(conn, self._path)
            else:
                conn.execute("PRAGMA query_only = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    # -- the writer thread -------------------------------------------------------

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                first = self._ops.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        item = self._ops.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                self._commit(conn, batch)
                if stop:
                    return
        finally:
            self._fail_pending()
            conn.close()

    def _fail_pending(self) -> None:
        while True:
            try:
                item = self._ops.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._settle(item[1], None, StoreUnavailable(f"{self.name} was closed"))

    def _commit(
        self, conn: sqlite3.Connection, batch: list[tuple[_Op, asyncio.Future[Any]]]
    ) -> None:
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        counts = [0, 0, 0, 0]
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, future in batch:
                conn.execute("SAVEPOINT op")
                try:
                    result, moved = op(conn)
                except (IcefloeError, ValueError) as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((future, None, exc))
                    continue
                conn.execute("RELEASE op")
                outcomes.append((future, result, None))
                counts = [a + b for a, b in zip(counts, moved, strict=True)]
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = StoreUnavailable(f"{self.name}: write failed: {exc}")
            outcomes = [(future, None, failure) for _, future in batch]
            counts = [0, 0, 0, 0]
        else:
            self._commits += 1
            self._counts = [a + b for a, b in zip(self._counts, counts, strict=True)]
        for future, result, error in outcomes:
            self._settle(future, result, error)

    def _settle(
        self, future: asyncio.Future[Any], result: Any, error: BaseException | None
    ) -> None:
        loop = self._loop
        assert loop is not None
        try:
            loop.call_soon_threadsafe(self._resolve, future, result, error)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _resolve(
        self, future: asyncio.Future[Any], result: Any, error: BaseException | None
    ) -> None:
        # The slot is freed when the writer is done with it, not when a
        # caller gave up (a timeout): the queue bound counts real work.
        assert self._room is not None
        self._room.release()
        if future.done():  # the caller was cancelled
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    async def _write(self, op: _Op) -> Any:
        if self._writer is None or self._room is None or self._loop is None:
            raise StoreUnavailable(f"{self.name} is not open")
        await self._room.acquire()
        future: asyncio.Future[Any] = self._loop.create_future()
        self._ops.put((op, future))
        return await future

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        reader, conn, loop = self._reader, self._read_conn, self._loop
        if reader is None or conn is None or loop is None:
            raise StoreUnavailable(f"{self.name} is not open")
        try:
            return await loop.run_in_executor(reader, fn, conn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.name}: read failed: {exc}") from exc

    # -- runs ---------------------------------------------------------------------

    async def create_run(
        self, run: RunRecord, *, idempotency_key: str | None = None, key_ttl_s: float = 86_400.0
    ) -> str:
        now = self._clock()

        def op(conn: sqlite3.Connection) -> tuple[Any, tuple[int, int, int, int]]:
            if idempotency_key is not None:
                held = conn.execute(
                    "SELECT stream_id, expires_at FROM idem_keys WHERE key = ?", (idempotency_key,)
                ).fetchone()
                if held is not None and held[1] > now:
                    return held[0], _NO_COUNT
            try:
                conn.execute(
                    "INSERT INTO runs (stream_id, trace_id, tenant, reliability, targets, message,"
                    " created_at, idem_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run.stream_id,
                        run.trace_id,
                        run.tenant,
                        str(run.reliability),
                        json.dumps(list(run.targets)),
                        run.message,
                        run.created_at,
                        idempotency_key,
                    ),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"a run with stream id {run.stream_id} exists already") from None
            if idempotency_key is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO idem_keys (key, stream_id, expires_at)"
                    " VALUES (?, ?, ?)",
                    (idempotency_key, run.stream_id, now + key_ttl_s),
                )
            return run.stream_id, (1, 0, 0, 0)

        result: str = await self._write(op)
        return result

    async def get_run(self, stream_id: str) -> RunState | None:
        def fn(conn: sqlite3.Connection) -> RunState | None:
            row = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE stream_id = ?", (stream_id,)
            ).fetchone()
            return None if row is None else _run_state(row)

        return await self._read(fn)

    async def unfinished_runs(self) -> list[RunState]:
        def fn(conn: sqlite3.Connection) -> list[RunState]:
            rows = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE ended_at IS NULL ORDER BY created_at"
            ).fetchall()
            return [_run_state(row) for row in rows]

        return await self._read(fn)

    async def end_run(self, stream_id: str, terminal: Terminal) -> bool:
        def op(conn: sqlite3.Connection) -> tuple[Any, tuple[int, int, int, int]]:
            row = conn.execute(
                "SELECT ended_at IS NULL FROM runs WHERE stream_id = ?", (stream_id,)
            ).fetchone()
            if row is None:
                raise StreamNotFound(stream_id)
            if not row[0]:
                return False, _NO_COUNT
            conn.execute(
                "UPDATE runs SET end_phase = ?, end_code = ?, end_message = ?, ended_at = ?"
                " WHERE stream_id = ?",
                (terminal.phase, terminal.code, terminal.message, terminal.ended_at, stream_id),
            )
            return True, _NO_COUNT

        result: bool = await self._write(op)
        return result

    # -- chunks and checkpoints ---------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        chunks: Sequence[StoredChunk],
        *,
        checkpoint: Checkpoint | None = None,
    ) -> int:
        chunks = list(chunks)

        def op(conn: sqlite3.Connection) -> tuple[Any, tuple[int, int, int, int]]:
            row = conn.execute(
                "SELECT last_seq FROM runs WHERE stream_id = ?", (stream_id,)
            ).fetchone()
            if row is None:
                raise StreamNotFound(stream_id)
            fresh = check_append(stream_id, row[0], chunks, checkpoint)
            if fresh:
                conn.executemany(
                    "INSERT INTO chunks (stream_id, seq, record) VALUES (?, ?, ?)",
                    [(stream_id, c.seq, c.record) for c in fresh],
                )
                conn.execute(
                    "UPDATE runs SET last_seq = ? WHERE stream_id = ?", (fresh[-1].seq, stream_id)
                )
            if checkpoint is not None:
                conn.execute(
                    "UPDATE runs SET ckpt_seq = ?, ckpt_state = ? WHERE stream_id = ?",
                    (checkpoint.seq, checkpoint.state, stream_id),
                )
            moved = (0, len(fresh), len(chunks) - len(fresh), int(checkpoint is not None))
            return len(fresh), moved

        result: int = await self._write(op)
        return result

    async def read(self, stream_id: str, from_seq: int, limit: int) -> list[StoredChunk]:
        if limit <= 0:
            return []

        def fn(conn: sqlite3.Connection) -> list[StoredChunk]:
            rows = conn.execute(
                "SELECT seq, record FROM chunks WHERE stream_id = ? AND seq >= ?"
                " ORDER BY seq LIMIT ?",
                (stream_id, from_seq, limit),
            ).fetchall()
            return [StoredChunk(seq, record) for seq, record in rows]

        return await self._read(fn)

    async def delete_runs(self, ended_before: float, limit: int) -> int:
        if limit <= 0:
            return 0
        now = self._clock()

        def op(conn: sqlite3.Connection) -> tuple[Any, tuple[int, int, int, int]]:
            doomed = conn.execute(
                "SELECT stream_id, idem_key FROM runs WHERE ended_at IS NOT NULL"
                " AND ended_at < ? ORDER BY ended_at LIMIT ?",
                (ended_before, limit),
            ).fetchall()
            for stream_id, key in doomed:
                conn.execute("DELETE FROM chunks WHERE stream_id = ?", (stream_id,))
                conn.execute("DELETE FROM runs WHERE stream_id = ?", (stream_id,))
                if key is not None:
                    conn.execute(
                        "DELETE FROM idem_keys WHERE key = ? AND stream_id = ?", (key, stream_id)
                    )
            # Expired keys and sessions are dead weight; sweep a bounded batch too.
            conn.execute(
                "DELETE FROM idem_keys WHERE key IN"
                " (SELECT key FROM idem_keys WHERE expires_at <= ? LIMIT ?)",
                (now, limit),
            )
            conn.execute(
                "DELETE FROM sessions WHERE session_id IN"
                " (SELECT session_id FROM sessions WHERE expires_at <= ? LIMIT ?)",
                (now, limit),
            )
            return len(doomed), _NO_COUNT

        result: int = await self._write(op)
        return result

    # -- WebSocket sessions ----------------------------------------------------------------

    async def put_session(self, session_id: str, record: bytes, expires_at: float) -> None:
        def op(conn: sqlite3.Connection) -> tuple[Any, tuple[int, int, int, int]]:
            conn.execute(
                "INSERT OR REPLACE INTO sessions (session_id, record, expires_at) VALUES (?, ?, ?)",
                (session_id, bytes(record), expires_at),
            )
            return None, _NO_COUNT

        await self._write(op)

    async def get_session(self, session_id: str) -> bytes | None:
        now = self._clock()

        def fn(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT record FROM sessions WHERE session_id = ? AND expires_at > ?",
                (session_id, now),
            ).fetchone()
            return None if row is None else bytes(row[0])

        return await self._read(fn)

    async def delete_session(self, session_id: str) -> None:
        def op(conn: sqlite3.Connection) -> tuple[Any, tuple[int, int, int, int]]:
            conn.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))
            return None, _NO_COUNT

        await self._write(op)


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    # Every statement is CREATE ... IF NOT EXISTS: safe to run on each open,
    # and by two processes at once (a duplicate version row is harmless).
    conn.executescript(_SCHEMA)
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    if row[0] is None:
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
    elif row[0] > SCHEMA_VERSION:
        raise StoreUnavailable(
            f"{path} has store schema version {row[0]}; this icefloe reads up to {SCHEMA_VERSION}"
        )


def _run_state(row: tuple[Any, ...]) -> RunState:
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
