"""The session of one ``/v1/ws`` connection: open, resume, follow, ack, park.

A connection gets a session of the server's
:class:`~icefloe.core.sessions.SessionTable` with its first ``hello``, or
implicitly with its first ``start`` or ``subscribe``. The session lists the
streams the connection follows and the last seq the client acked of each;
when the connection ends it is *parked* (detached) so that a later ``hello
{session_id, resume: true}`` can take it up, possibly on another connection,
which then cuts this one (4000).

A stream whose ``end`` went out stays in the session until the client acks
it: a resume before that ack resends the end. :meth:`WsSession.end_sent`
records the end's seq for that.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from icefloe.core.sessions import SessionError, SessionInfo, SessionTable
from icefloe.transport.errors import HttpError
from icefloe.transport.ws_keeper import KeptSessionTable

__all__ = ["WsSession"]


class WsSession:
    """The session one connection holds, if any.

    :param table: the server's sessions.
    :param owner_key: who may resume the session (tenant and subject).
    :param attach: ``attach(session_id)``: this connection now holds the session.
    :param detach: ``detach(session_id)``: it no longer does.
    """

    __slots__ = ("_attach", "_attachment", "_detach", "_end_seqs", "_id", "_owner_key", "_table")

    def __init__(
        self,
        table: SessionTable,
        owner_key: str,
        attach: Callable[[str], None],
        detach: Callable[[str], None],
    ) -> None:
        self._table = table
        self._owner_key = owner_key
        self._attach = attach
        self._detach = detach
        self._id: str | None = None
        # The attachment number this connection holds: a late park of an old
        # connection must not detach the session from a newer one.
        self._attachment: int | None = None
        # The seq of each stream's done chunk once it was sent, until acked.
        self._end_seqs: dict[str, int] = {}

    @property
    def owner_key(self) -> str:
        """Who may resume the session (tenant and subject)."""
        return self._owner_key

    @property
    def id(self) -> str | None:
        """The session's id; ``None`` before the first ``hello`` (or ``start``)."""
        return self._id

    def ensure(self) -> str:
        """The session's id, opening a fresh session if there is none yet.

        :raises HttpError: ``overloaded`` when every session of the server is in use.
        """
        sid = self._id
        if sid is None:
            try:
                sid = self._table.open(self._owner_key)
            except SessionError as exc:
                raise HttpError(exc.code, str(exc)) from None
            self._id = sid
            self._attachment = self._table.info(sid).attachment
            self._attach(sid)
        return sid

    def resume(self, session_id: str) -> SessionInfo:
        """Take up the session ``session_id`` (parking this connection's own
        fresh one, if any); the streams to resubscribe are in the answer.

        :raises SessionError: ``session_expired``: unknown, expired or another owner's.
        """
        info = self._table.resume(session_id, self._owner_key)
        if self._id is not None:
            self.park()  # this connection's own fresh session, unused
        self._id = session_id
        self._attachment = info.attachment
        self._attach(session_id)
        return info

    def park(self) -> None:
        """Detach the session, which a later ``hello`` may resume."""
        sid = self._id
        if sid is not None:
            self._detach(sid)
            self._table.detach(sid, time.monotonic(), attachment=self._attachment)
            self._id = None

    def release(self) -> None:
        """Another connection took the session over: it is no longer ours to park."""
        self._id = None

    def has_room(self) -> bool:
        """Whether the session may follow one more stream (no session yet: yes)."""
        sid = self._id
        return sid is None or self._table.has_room(sid)

    async def follow(self, stream_id: str, from_seq: int) -> None:
        """The session follows ``stream_id`` from ``from_seq`` (opening it if
        needed); with a store or a backplane, returns once that is kept, so
        that what the client learns next (the stream's id, its first chunk)
        finds the session after a crash.

        :raises HttpError: ``limit_exceeded`` past the streams of one session,
            ``overloaded`` when no session can be opened.
        """
        sid = self.ensure()
        table = self._table
        try:
            table.subscribe(sid, stream_id, from_seq)
        except SessionError as exc:
            raise HttpError(exc.code, str(exc)) from None
        if isinstance(table, KeptSessionTable):
            await table.written(sid)

    def forget(self, stream_id: str) -> None:
        """The session no longer follows ``stream_id``: a resume will not restore it."""
        self._end_seqs.pop(stream_id, None)
        if self._id is not None:
            self._table.unsubscribe(self._id, stream_id)

    def end_sent(self, stream_id: str, seq: int) -> None:
        """The stream's ``end`` (seq ``seq``) is on its way: once acked, forget the stream."""
        self._end_seqs[stream_id] = seq

    def ack(self, stream_id: str, seq: int) -> bool:
        """Record that the client holds ``stream_id`` up to ``seq``; ``False``
        if the session does not follow that stream (nothing recorded)."""
        sid = self._id
        if sid is None or not self._table.follows(sid, stream_id):
            return False
        self._table.ack(sid, stream_id, seq)
        end = self._end_seqs.get(stream_id)
        if end is not None and seq >= end:
            # The client holds the terminal: nothing left to resume.
            self.forget(stream_id)
        return True
