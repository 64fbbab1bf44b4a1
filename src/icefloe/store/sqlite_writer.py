"""The SQLite store's one writer: a thread that group-commits queued operations.

Callers :meth:`~GroupCommitWriter.submit` an operation (a function of the
write connection) from the event loop. The thread takes every operation
waiting, up to :data:`MAX_BATCH`, and runs them in one transaction; each
caller's ``await`` returns once that transaction committed, and one wake-up
of the loop settles the whole batch.

Failures stay with their call. An operation refuses (``IcefloeError``,
``ValueError``) before it writes, so a refusal needs no undo. Any other
error inside a batch (a failing statement, a value SQLite cannot bind) rolls
the batch back and runs it again with a savepoint per call, so only the
failing call fails (a SQLite error as ``StoreUnavailable``). The thread
outlives every batch.

The queue holds at most ``max_pending`` operations; a caller past it waits
for room. A slot is freed when the writer is done with the operation, not
when its caller gives up (a timeout): the bound counts real work.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, Final

from icefloe.exceptions import IcefloeError
from icefloe.store.protocol import StoreUnavailable

__all__ = ["MAX_BATCH", "Counts", "GroupCommitWriter", "Op"]

#: the most operations one transaction holds
MAX_BATCH: Final = 1024

#: what an operation moved: runs created, chunks written, chunks skipped, checkpoints
Counts = tuple[int, int, int, int]
#: an operation: runs inside the writer's transaction; returns the caller's
#: result and the :data:`Counts` it moved
Op = Callable[[sqlite3.Connection], tuple[Any, Counts]]
# A call's future, and its result or its error.
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]
_Item = tuple[Op, "asyncio.Future[Any]"]


class GroupCommitWriter:
    """One thread owning one write connection, committing queued operations in groups.

    :param name: the store's name, for error messages.
    :param conn: the write connection (autocommit mode); closed at :meth:`stop`.
    :param max_pending: operations queued at most.
    """

    def __init__(self, name: str, conn: sqlite3.Connection, max_pending: int) -> None:
        self._name = name
        self._conn = conn
        self._loop = asyncio.get_running_loop()
        self._room = asyncio.Semaphore(max_pending)
        self._ops: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._loop_forever, name="icefloe-sqlite-write", daemon=True
        )
        self._stopped = False
        self._commits = 0
        self._counts = [0, 0, 0, 0]
        self._thread.start()

    @property
    def commits(self) -> int:
        """Transactions committed."""
        return self._commits

    @property
    def counts(self) -> Counts:
        """The :data:`Counts` of every committed operation, summed."""
        runs, chunks, skipped, checkpoints = self._counts
        return runs, chunks, skipped, checkpoints

    def _accepting(self) -> bool:
        return not self._stopped

    async def submit(self, op: Op) -> Any:
        """Run ``op`` in the next group commit; its result once committed.

        :raises StoreUnavailable: the writer is stopped, or the commit failed.
        """
        if not self._accepting():
            raise StoreUnavailable(f"{self._name} is not open")
        await self._room.acquire()
        # Checked again after the wait, with no await before the put: stop()
        # queues its sentinel after setting _stopped, so an operation queued
        # here is always ahead of it and always answered.
        if not self._accepting():
            self._room.release()
            raise StoreUnavailable(f"{self._name} is not open")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._ops.put((op, future))
        return await future

    async def stop(self) -> None:
        """Commit what is queued, then stop the thread and close the connection."""
        if self._stopped:
            return
        self._stopped = True
        self._ops.put(None)
        await asyncio.to_thread(self._thread.join)

    # -- the thread ----------------------------------------------------------------------

    def _loop_forever(self) -> None:
        conn = self._conn
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
        closed = StoreUnavailable(f"{self._name} was closed")
        while True:
            try:
                item = self._ops.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._settle([(item[1], None, closed)])

    def _commit(self, conn: sqlite3.Connection, batch: list[_Item]) -> None:
        try:
            try:
                outcomes, counts = self._run(conn, batch, isolate=False)
            except Exception:
                # Something failed past its checks: undo the batch and run it
                # again with a savepoint per call, so only that call fails.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                outcomes, counts = self._run(conn, batch, isolate=True)
        except Exception as exc:  # the thread must outlive any one batch
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            failure = StoreUnavailable(f"{self._name}: write failed: {exc}")
            outcomes = [(future, None, failure) for _, future in batch]
        else:
            self._commits += 1
            self._counts = [a + b for a, b in zip(self._counts, counts, strict=True)]
        self._settle(outcomes)

    def _run(
        self, conn: sqlite3.Connection, batch: list[_Item], *, isolate: bool
    ) -> tuple[list[_Outcome], list[int]]:
        """Run ``batch`` in one transaction and commit it (see the module doc)."""
        outcomes: list[_Outcome] = []
        counts = [0, 0, 0, 0]
        conn.execute("BEGIN IMMEDIATE")
        for op, future in batch:
            if isolate:
                conn.execute("SAVEPOINT op")
            try:
                result, moved = op(conn)
            except Exception as exc:
                error: BaseException = exc
                if not isinstance(exc, IcefloeError | ValueError):
                    if not isolate:
                        raise
                    if isinstance(exc, sqlite3.Error):
                        error = StoreUnavailable(f"{self._name}: write failed: {exc}")
                if isolate:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                outcomes.append((future, None, error))
                continue
            if isolate:
                conn.execute("RELEASE op")
            outcomes.append((future, result, None))
            counts = [a + b for a, b in zip(counts, moved, strict=True)]
        conn.execute("COMMIT")
        return outcomes, counts

    def _settle(self, outcomes: list[_Outcome]) -> None:
        try:
            # One wake-up of the loop per batch, not per call.
            self._loop.call_soon_threadsafe(self._resolve, outcomes)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _resolve(self, outcomes: list[_Outcome]) -> None:
        for future, result, error in outcomes:
            self._room.release()
            if future.done():  # the caller was cancelled
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
