"""``sqlite:///path.db``: the embedded durable store (standard library sqlite3).

One file, no server. ``sqlite:///relative/path.db`` is relative to the
working directory, ``sqlite:////abs/path.db`` absolute. The query string may
set ``synchronous=normal`` (the default) or ``synchronous=full``.

**Writes** go through ONE writer thread that owns the only write
connection (:class:`~icefloe.store.sqlite_writer.GroupCommitWriter`).
Callers queue operations; the writer takes every operation waiting (up to
:data:`MAX_BATCH`) and runs them in one transaction, and a refused or
failing call fails alone while its neighbours commit. Each caller's
``await`` returns only after the transaction holding its operation
committed: this *group commit* turns many streams' small appends into one
commit (and one WAL sync). The queue holds at most :data:`MAX_PENDING`
operations; a caller past it waits for room (back-pressure, nothing is
dropped).

A store is used from the event loop that opened it.

**Reads** run on a second connection in a worker thread, off the event loop;
WAL lets them proceed while the writer writes, and a read issued after a
write's ``await`` returned sees that write.

**WAL checkpoints** run on a third connection in their own thread, a
PASSIVE one every :data:`CHECKPOINT_COMMITS` commits: a checkpoint syncs the
file, and on the writer thread that sync held every commit queued behind it.
The writer checkpoints itself only past :data:`WAL_BACKSTOP_PAGES`, which
bounds the WAL should the background checkpoints fall behind.

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

**Chunks are stored in segments**: the new chunks of one ``append`` (up
to :data:`SEGMENT_CHUNKS` chunks or :data:`SEGMENT_BYTES` bytes a row)
become one row, keyed by (stream id, last seq). Writing a row costs about
what writing one chunk did, so a stream that appends many chunks at a time
pays per append, not per chunk. The store writer's batches
(:class:`~icefloe.store.batch.ChunkBatch`) become one *segment record* a
row, one encode and one CRC32C per batch; other appends keep their chunk
records back to back (:mod:`icefloe.store.sqlite_segments`).

The tables are in :mod:`icefloe.store.sqlite_schema`. Schema version
:data:`SCHEMA_VERSION` is recorded in ``schema_version``; a file written by a
newer schema is refused with a clear error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import operator
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from icefloe.exceptions import StreamNotFound
from icefloe.store import positions_sqlite
from icefloe.store.batch import ChunkBatch
from icefloe.store.memory import check_append
from icefloe.store.positions import check_position
from icefloe.store.protocol import StoreUnavailable
from icefloe.store.sqlite_schema import (
    RUN_COLUMNS,
    SCHEMA_VERSION,
    SEGMENT_BYTES,
    SEGMENT_CHUNKS,
    migrate,
    run_state,
    segment_rows,
)
from icefloe.store.sqlite_segments import insert_batch, read_chunks
from icefloe.store.sqlite_writer import MAX_BATCH, Counts, GroupCommitWriter, Op
from icefloe.store.types import (
    Checkpoint,
    RunRecord,
    RunState,
    StoredChunk,
    StoreStatistics,
    Terminal,
)

__all__ = [
    "CHECKPOINT_COMMITS",
    "MAX_BATCH",
    "MAX_PENDING",
    "SCHEMA_VERSION",
    "SEGMENT_BYTES",
    "SEGMENT_CHUNKS",
    "WAL_BACKSTOP_PAGES",
    "SqliteStore",
]

T = TypeVar("T")

log = logging.getLogger("icefloe.store")

#: the most operations queued for the writer; callers past it wait for room
MAX_PENDING: Final = 8192
#: commits between two WAL checkpoints, which run on their own connection and
#: thread: a checkpoint syncs the file, and on the writer thread that sync
#: held every commit queued behind it (the p99 of a durable stream)
CHECKPOINT_COMMITS: Final = 64
#: WAL pages past which the writer checkpoints itself all the same (16 MiB at
#: 4 KiB pages): a backstop should the background checkpoints fall behind
WAL_BACKSTOP_PAGES: Final = 4096
_SYNCHRONOUS = ("normal", "full")
_NO_COUNT: Counts = (0, 0, 0, 0)


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


def _wal_checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


_SEQ = operator.itemgetter(0)  # StoredChunk.seq, called from C


def _in_sequence(
    last_seq: int, chunks: list[StoredChunk], checkpoint: Checkpoint | None
) -> list[StoredChunk] | None:
    """``chunks`` when they are exactly the seqs after ``last_seq`` (and cover
    ``checkpoint``): the common append, checked by builtins, not a Python
    loop per chunk. None: let :func:`check_append` decide (and word the error).
    """
    if not chunks or chunks[0].seq != last_seq + 1:
        return None
    end = last_seq + 1 + len(chunks)
    if list(map(_SEQ, chunks)) != list(range(last_seq + 1, end)):
        return None
    if checkpoint is not None and checkpoint.seq >= end:
        return None
    return chunks


class SqliteStore:
    """A :class:`~icefloe.store.protocol.Store` in one SQLite file (see the module doc).

    :param path: the database file (created, with its directory, if missing).
    :param synchronous: ``"normal"`` or ``"full"`` (see the module doc).
    :param max_pending: operations queued for the writer at most; callers
        past it wait for room.
    :param clock: wall-clock seconds, for idempotency keys and sessions.
    :raises ValueError: a setting out of range, named.
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "normal",
        max_pending: int = MAX_PENDING,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be normal or full, got {synchronous!r}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self._max_pending = max_pending
        self._path = path
        self._sync = synchronous
        self._clock = clock
        self._writer: GroupCommitWriter | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._checkpointer: ThreadPoolExecutor | None = None
        self._ckpt_conn: sqlite3.Connection | None = None
        self._ckpt_running: asyncio.Future[None] | None = None
        self._ckpt_commits = 0
        self._ckpt_done = 0
        self._open_lock = asyncio.Lock()
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
        return 0 if self._writer is None else self._writer.commits

    @property
    def checkpoints(self) -> int:
        """WAL checkpoints run beside the writer (see :data:`CHECKPOINT_COMMITS`)."""
        return self._ckpt_done

    def statistics(self) -> StoreStatistics:
        """This store's counters since it was opened."""
        counts = _NO_COUNT if self._writer is None else self._writer.counts
        return StoreStatistics(*counts)

    # -- life cycle ------------------------------------------------------------

    async def open(self) -> None:
        async with self._open_lock:
            if self._closed:
                raise StoreUnavailable(f"{self.name} was closed")
            if self._writer is not None:
                return
            loop = asyncio.get_running_loop()
            reader = ThreadPoolExecutor(1, thread_name_prefix="icefloe-sqlite-read")
            checkpointer = ThreadPoolExecutor(1, thread_name_prefix="icefloe-sqlite-checkpoint")
            opened: list[sqlite3.Connection] = []
            try:
                opened.append(await asyncio.to_thread(self._connect, True))
                opened.append(await loop.run_in_executor(reader, self._connect, False))
                opened.append(await loop.run_in_executor(checkpointer, self._connect, False))
            except BaseException as exc:
                for conn in opened:
                    conn.close()
                reader.shutdown(wait=False)
                checkpointer.shutdown(wait=False)
                if isinstance(exc, sqlite3.Error | OSError):
                    raise StoreUnavailable(f"cannot open {self.name}: {exc}") from exc
                raise
            write_conn, read_conn, ckpt_conn = opened
            self._reader, self._read_conn = reader, read_conn
            self._checkpointer, self._ckpt_conn = checkpointer, ckpt_conn
            self._writer = GroupCommitWriter(self.name, write_conn, self._max_pending)

    async def close(self) -> None:
        async with self._open_lock:
            self._closed = True
            if self._writer is not None:
                await self._writer.stop()
            reader, self._reader = self._reader, None
            read_conn, self._read_conn = self._read_conn, None
            if reader is not None and read_conn is not None:
                await asyncio.get_running_loop().run_in_executor(reader, read_conn.close)
                reader.shutdown(wait=True)
            if self._ckpt_running is not None:
                await asyncio.gather(self._ckpt_running, return_exceptions=True)
            checkpointer, self._checkpointer = self._checkpointer, None
            ckpt_conn, self._ckpt_conn = self._ckpt_conn, None
            if checkpointer is not None and ckpt_conn is not None:
                await asyncio.get_running_loop().run_in_executor(checkpointer, ckpt_conn.close)
                checkpointer.shutdown(wait=True)

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
                conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_BACKSTOP_PAGES}")
                migrate(conn, self._path)
            else:
                conn.execute("PRAGMA query_only = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    async def _write(self, op: Op) -> Any:
        writer = self._writer
        if writer is None:
            raise StoreUnavailable(f"{self.name} is not open")
        result = await writer.submit(op)
        if writer.commits - self._ckpt_commits >= CHECKPOINT_COMMITS:
            self._checkpoint(writer.commits)
        return result

    def _checkpoint(self, commits: int) -> None:
        """Start a PASSIVE WAL checkpoint on its own thread, unless one runs.

        PASSIVE copies what it can without waiting for the writer or the
        readers, so commits go on meanwhile. Durability does not depend on it:
        a commit is in the WAL before its caller hears of it.
        """
        checkpointer, conn = self._checkpointer, self._ckpt_conn
        if self._ckpt_running is not None or checkpointer is None or conn is None:
            return
        self._ckpt_commits = commits
        loop = asyncio.get_running_loop()
        running = loop.run_in_executor(checkpointer, _wal_checkpoint, conn)
        self._ckpt_running = running
        running.add_done_callback(self._checkpointed)

    def _checkpointed(self, running: asyncio.Future[None]) -> None:
        self._ckpt_running = None
        if running.cancelled():
            return
        if running.exception() is None:
            self._ckpt_done += 1
        else:
            # The writer's backstop checkpoint bounds the WAL; say why it grows.
            log.warning("%s: WAL checkpoint failed: %s", self.name, running.exception())

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        reader, conn = self._reader, self._read_conn
        if reader is None or conn is None:
            raise StoreUnavailable(f"{self.name} is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(reader, fn, conn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.name}: read failed: {exc}") from exc

    # -- runs ---------------------------------------------------------------------

    async def create_run(
        self, run: RunRecord, *, idempotency_key: str | None = None, key_ttl_s: float = 86_400.0
    ) -> str:
        now = self._clock()

        def op(conn: sqlite3.Connection) -> tuple[Any, Counts]:
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
                f"SELECT {RUN_COLUMNS} FROM runs WHERE stream_id = ?", (stream_id,)
            ).fetchone()
            return None if row is None else run_state(row)

        return await self._read(fn)

    async def unfinished_runs(self) -> list[RunState]:
        def fn(conn: sqlite3.Connection) -> list[RunState]:
            rows = conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE ended_at IS NULL ORDER BY created_at"
            ).fetchall()
            return [run_state(row) for row in rows]

        return await self._read(fn)

    async def end_run(self, stream_id: str, terminal: Terminal) -> bool:
        def op(conn: sqlite3.Connection) -> tuple[Any, Counts]:
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
        # A durable batch is encoded here, on the loop, as segment records
        # (sqlite_segments); its per-chunk records are built only if needed.
        batch = chunks if isinstance(chunks, ChunkBatch) else None
        segments = None if batch is None else batch.segments(SEGMENT_BYTES)
        listed: Sequence[StoredChunk] = chunks if batch is not None else list(chunks)

        def op(conn: sqlite3.Connection) -> tuple[Any, Counts]:
            if (
                segments is not None
                and batch is not None
                and insert_batch(conn, stream_id, batch, segments, checkpoint)
            ):
                return len(batch), (0, len(batch), 0, int(checkpoint is not None))
            row = conn.execute(
                "SELECT last_seq FROM runs WHERE stream_id = ?", (stream_id,)
            ).fetchone()
            if row is None:
                raise StreamNotFound(stream_id)
            stored = list(listed)  # a batch's records are encoded here, if ever
            fresh = _in_sequence(row[0], stored, checkpoint)
            if fresh is None:
                fresh = check_append(stream_id, row[0], stored, checkpoint)
            if fresh:
                conn.executemany(
                    "INSERT INTO segments (stream_id, last_seq, first_seq, sizes, records)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [(stream_id, *segment) for segment in segment_rows(fresh)],
                )
            fresh_count, last_seq = len(fresh), fresh[-1].seq if fresh else row[0]
            if fresh_count:
                conn.execute(
                    "UPDATE runs SET last_seq = ? WHERE stream_id = ?", (last_seq, stream_id)
                )
            if checkpoint is not None:
                conn.execute(
                    "UPDATE runs SET ckpt_seq = ?, ckpt_state = ? WHERE stream_id = ?",
                    (checkpoint.seq, checkpoint.state, stream_id),
                )
            moved = (0, fresh_count, len(listed) - fresh_count, int(checkpoint is not None))
            return fresh_count, moved

        result: int = await self._write(op)
        return result

    async def read(self, stream_id: str, from_seq: int, limit: int) -> list[StoredChunk]:
        if limit <= 0:
            return []

        def fn(conn: sqlite3.Connection) -> list[StoredChunk]:
            return read_chunks(conn, stream_id, from_seq, limit)

        return await self._read(fn)

    async def delete_runs(self, ended_before: float, limit: int) -> int:
        if limit <= 0:
            return 0
        now = self._clock()

        def op(conn: sqlite3.Connection) -> tuple[Any, Counts]:
            doomed = conn.execute(
                "SELECT stream_id, idem_key FROM runs WHERE ended_at IS NOT NULL"
                " AND ended_at < ? ORDER BY ended_at, rowid LIMIT ?",
                (ended_before, limit),
            ).fetchall()
            for stream_id, key in doomed:
                conn.execute("DELETE FROM segments WHERE stream_id = ?", (stream_id,))
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
        def op(conn: sqlite3.Connection) -> tuple[Any, Counts]:
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
        def op(conn: sqlite3.Connection) -> tuple[Any, Counts]:
            conn.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))
            return None, _NO_COUNT

        await self._write(op)

    # -- connector positions (icefloe.store.positions_sqlite) ------------------------------

    async def put_position(self, namespace: str, key: str, value: bytes) -> None:
        check_position(namespace, key, value)
        await self._write(positions_sqlite.put_position(namespace, key, value))

    async def get_position(self, namespace: str, key: str) -> bytes | None:
        check_position(namespace, key)
        return await self._read(positions_sqlite.get_position(namespace, key))

    async def positions(self, namespace: str) -> dict[str, bytes]:
        check_position(namespace)
        return await self._read(positions_sqlite.all_positions(namespace))
