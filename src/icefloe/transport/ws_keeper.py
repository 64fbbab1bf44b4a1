"""WebSocket sessions kept in the flow's store, so a resume survives a restart.

With a store (docs/reliability.md), the edge's session table is a
:class:`KeptSessionTable`: every change of a session (a stream followed, an
ack, a stream let go, a detach) marks it, and one background task writes the
marked sessions to the store (``Store.put_session``, a CRC32C record of the
owner and the last acked seq of each stream, kept ``ttl_s``). A ``hello
{session_id, resume: true}`` for a session this process does not hold loads
it from the store (:meth:`KeptSessionTable.load`) before resuming it, and the
connection then resubscribes each stream from its last ack + 1, through the
store if need be.

Writes are coalesced: a session acked a hundred times between two writes is
written once. The marked set holds at most one entry per session of the
table (``max_sessions``). A failed write is logged and retried at the
session's next change.

Acks are written behind: a crash costs the chunks acked since the last write,
which the resumed session sends again and the client drops by seq. A new
subscription is not: the connection waits for :meth:`KeptSessionTable.written`
before it sends the stream's id (``started``) or its first chunk, so a client
that holds a stream's id or a chunk of it always finds its session after a
crash. A subscribe that changes nothing (the same stream from the same seq)
marks nothing.

Where the sessions are kept is a :class:`SessionKeeper`: the flow's store
by default; with a backplane (``--backplane``, issue 12) the backplane's
Redis (:class:`~icefloe.backplane.sessions.RedisSessionKeeper`), so that a
session opened on one gateway resumes on any other. A shared keeper may hold
a newer state of a session this table also holds (it was resumed elsewhere
since): :meth:`SessionKeeper.hold` says whether this table's copy is
still the latest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

import msgspec

from icefloe.core.sessions import SessionError, SessionState, SessionTable
from icefloe.runtime.flow import Flow
from icefloe.store.protocol import Store

__all__ = ["KeptSessionTable", "SessionKeeper", "StoreSessionKeeper", "session_table"]

log = logging.getLogger("icefloe.store")

_encode = msgspec.msgpack.Encoder().encode


class _Kept(msgspec.Struct, frozen=True):
    owner: str
    streams: dict[str, int]


_decode = msgspec.msgpack.Decoder(_Kept).decode


class SessionKeeper(Protocol):
    """Where a :class:`KeptSessionTable` keeps its sessions."""

    async def take(self, session_id: str, owner: str) -> bytes | None:
        """The kept blob of a session to resume here (None: none, or another owner's)."""
        ...

    async def put(
        self, session_id: str, blob: bytes, owner: str, attached: bool, ttl_s: float
    ) -> None:
        """Keep (replace) a session's blob for ``ttl_s`` seconds."""
        ...

    async def delete(self, session_id: str) -> None:
        """Forget a session (no error when absent)."""
        ...

    async def hold(self, session_id: str) -> bool:
        """Whether this process's copy of the session is the latest; if so, it
        is resumed here now (a shared keeper marks it attached)."""
        ...


class StoreSessionKeeper:
    """Sessions in the flow's store (``Store.put_session``, CRC32C records)."""

    def __init__(self, flow: Flow) -> None:
        self._flow = flow

    def _store(self) -> Store:
        store = self._flow.store
        if store is None:
            raise RuntimeError("the flow has no store")
        return store

    async def take(self, session_id: str, owner: str) -> bytes | None:
        from icefloe.store import records

        await self._flow.store_ready()
        held = await self._store().get_session(session_id)
        return None if held is None else records.decode_session(held)

    async def put(
        self, session_id: str, blob: bytes, owner: str, attached: bool, ttl_s: float
    ) -> None:
        from icefloe.store import records

        record = records.encode_session(blob)
        await self._store().put_session(session_id, record, time.time() + ttl_s)

    async def delete(self, session_id: str) -> None:
        await self._store().delete_session(session_id)

    async def hold(self, session_id: str) -> bool:
        return True  # one process per store: its own copy is the latest


class KeptSessionTable(SessionTable):
    """A :class:`SessionTable` whose sessions are also written to a keeper."""

    __slots__ = ("_dirty", "_flow", "_keeper", "_task", "_ttl_s", "_waiters", "_writing")

    def __init__(
        self,
        flow: Flow,
        ttl_s: float,
        max_sessions: int,
        clock: Callable[[], float],
        keeper: SessionKeeper | None = None,
    ) -> None:
        super().__init__(ttl_s, max_sessions, clock)
        self._flow = flow
        self._keeper: SessionKeeper = StoreSessionKeeper(flow) if keeper is None else keeper
        self._ttl_s = ttl_s
        self._dirty: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        # Sessions whose write is under way, and who waits for a session's next write.
        self._writing: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    # -- every change marks the session ------------------------------------------

    def subscribe(self, session_id: str, stream_id: str, from_seq: int = 0) -> bool:
        changed = super().subscribe(session_id, stream_id, from_seq)
        if changed:
            self._changed(session_id)
        return changed

    def unsubscribe(self, session_id: str, stream_id: str) -> bool:
        gone = super().unsubscribe(session_id, stream_id)
        self._changed(session_id)
        return gone

    def ack(self, session_id: str, stream_id: str, seq: int) -> bool:
        moved = super().ack(session_id, stream_id, seq)
        if moved:
            self._changed(session_id)
        return moved

    def detach(
        self, session_id: str, now: float | None = None, *, attachment: int | None = None
    ) -> bool:
        detached = super().detach(session_id, now, attachment=attachment)
        if detached:
            self._changed(session_id)
        return detached

    # -- the keeper ----------------------------------------------------------------

    async def load(self, session_id: str, owner: str) -> bool:
        """Take a session back from the keeper unless this table holds its latest
        state; whether it did (the resume then finds it here either way)."""
        keeper = self._keeper
        try:
            if session_id in self:
                if await keeper.hold(session_id):
                    return False
                # Resumed on another gateway since: the keeper's state is newer.
                self.discard(session_id)
            blob = await keeper.take(session_id, owner)
            if blob is None:
                return False
            kept = _decode(blob)
        except Exception as exc:  # unreachable, corrupt: the resume answers session_expired
            log.warning("session %s could not be loaded: %s", session_id, exc)
            return False
        return self.restore(session_id, kept.owner, kept.streams)

    async def written(self, session_id: str) -> None:
        """Return once the session's state as of now is in the keeper (at once
        if nothing of it waits to be written). A write that fails is logged,
        and this returns all the same: the session then lives in memory only
        until its next change."""
        if session_id not in self._dirty and session_id not in self._writing:
            return
        done = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(session_id, []).append(done)
        self._changed(session_id)  # a write that began before now may not hold it
        await done

    def _changed(self, session_id: str) -> None:
        self._dirty.add(session_id)
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._flush(), name="icefloe:ws-sessions")

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0)  # let a burst of acks mark before writing
            while self._dirty:
                batch = list(self._dirty)
                self._dirty.clear()
                for session_id in batch:
                    await self._write(session_id)
        finally:  # stopped (shutdown): nobody waits forever
            self._release(list(self._waiters))

    async def _write(self, session_id: str) -> None:
        keeper = self._keeper
        self._writing.add(session_id)
        # Who waits now waits for this write, which reads the state from here on.
        waiting = self._waiters.pop(session_id, [])
        try:
            try:
                info = self.info(session_id)
            except SessionError:
                await keeper.delete(session_id)  # gone here: gone there
                return
            blob = _encode(_Kept(info.tenant, info.subscriptions))
            attached = info.state is SessionState.ATTACHED
            await keeper.put(session_id, blob, info.tenant, attached, self._ttl_s)
        except Exception as exc:  # the next change writes it again
            log.warning("session %s could not be written: %s", session_id, exc)
        finally:
            self._writing.discard(session_id)
            for done in waiting:
                if not done.done():
                    done.set_result(None)

    def _release(self, session_ids: list[str]) -> None:
        for session_id in session_ids:
            for done in self._waiters.pop(session_id, []):
                if not done.done():
                    done.set_result(None)


def session_table(
    flow: Flow,
    ttl_s: float,
    max_sessions: int,
    clock: Callable[[], float],
    keeper: SessionKeeper | None = None,
) -> SessionTable:
    """The edge's session table: kept by ``keeper`` if given (the backplane),
    else in the store when the flow has one."""
    if flow.store is None and keeper is None:
        return SessionTable(ttl_s, max_sessions, clock)
    return KeptSessionTable(flow, ttl_s, max_sessions, clock, keeper)
