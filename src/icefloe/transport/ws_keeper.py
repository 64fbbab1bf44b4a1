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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import msgspec

from icefloe.core.sessions import SessionError, SessionTable
from icefloe.runtime.flow import Flow
from icefloe.store.protocol import Store

__all__ = ["KeptSessionTable", "session_table"]

log = logging.getLogger("icefloe.store")

_encode = msgspec.msgpack.Encoder().encode


class _Kept(msgspec.Struct, frozen=True):
    owner: str
    streams: dict[str, int]


_decode = msgspec.msgpack.Decoder(_Kept).decode


class KeptSessionTable(SessionTable):
    """A :class:`SessionTable` whose sessions are also written to a store."""

    __slots__ = ("_dirty", "_flow", "_task", "_ttl_s")

    def __init__(
        self, flow: Flow, ttl_s: float, max_sessions: int, clock: Callable[[], float]
    ) -> None:
        super().__init__(ttl_s, max_sessions, clock)
        self._flow = flow
        self._ttl_s = ttl_s
        self._dirty: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    # -- every change marks the session ------------------------------------------

    def subscribe(self, session_id: str, stream_id: str, from_seq: int = 0) -> None:
        super().subscribe(session_id, stream_id, from_seq)
        self._changed(session_id)

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

    # -- the store -----------------------------------------------------------------

    async def load(self, session_id: str) -> bool:
        """Take a session this table does not hold back from the store; whether it did."""
        store = self._flow.store
        if store is None or session_id in self:
            return False
        from icefloe.store import records

        try:
            await self._flow.store_ready()
            held = await store.get_session(session_id)
            if held is None:
                return False
            kept = _decode(records.decode_session(held))
        except Exception as exc:  # unreachable, corrupt: the resume answers session_expired
            log.warning("session %s could not be loaded from the store: %s", session_id, exc)
            return False
        return self.restore(session_id, kept.owner, kept.streams)

    def _changed(self, session_id: str) -> None:
        self._dirty.add(session_id)
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._flush(), name="icefloe:ws-sessions")

    async def _flush(self) -> None:
        store = self._flow.store
        if store is None:
            self._dirty.clear()
            return
        await asyncio.sleep(0)  # let a burst of acks mark before writing
        while self._dirty:
            batch = list(self._dirty)
            self._dirty.clear()
            for session_id in batch:
                await self._write(store, session_id)

    async def _write(self, store: Store, session_id: str) -> None:
        from icefloe.store import records

        try:
            try:
                info = self.info(session_id)
            except SessionError:
                await store.delete_session(session_id)  # gone here: gone there
                return
            blob = _encode(_Kept(info.tenant, info.subscriptions))
            expires_at = time.time() + self._ttl_s
            await store.put_session(session_id, records.encode_session(blob), expires_at)
        except Exception as exc:  # the next change writes it again
            log.warning("session %s could not be written to the store: %s", session_id, exc)


def session_table(
    flow: Flow, ttl_s: float, max_sessions: int, clock: Callable[[], float]
) -> SessionTable:
    """The edge's session table: kept in the store when the flow has one."""
    if flow.store is None:
        return SessionTable(ttl_s, max_sessions, clock)
    return KeptSessionTable(flow, ttl_s, max_sessions, clock)
