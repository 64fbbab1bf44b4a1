"""WebSocket sessions that outlive their connection, so a client can resume.

``hello`` opens a session for the connection's tenant. Per stream the client
reads, the session remembers the last seq the client acknowledged (``ack``),
or ``from_seq - 1`` until it acknowledges one. When the connection closes, the
session is *detached* and kept for ``ttl_s`` seconds; within them, ``hello
{session_id, resume: true}`` from the same tenant *attaches* it to the new
connection, which restores its subscriptions and resends each stream from
its last ack + 1. Past them the session is gone and the resume is refused
with :exc:`SessionExpired` (the server then opens a fresh session).

:class:`SessionTable` is pure bookkeeping with an injected clock: no
timers, no I/O. The endpoint calls :meth:`~SessionTable.expire` now and
then (or not: an expired session is also refused when resumed, and is swept
whenever a session is opened).

Resuming a session that is still attached (the client reconnected before
the server noticed the old socket die) *takes it over*: the answer says so,
and the endpoint should close the old connection. Each attachment gets a new
number; a detach carrying a stale number is ignored, so the old connection
closing late cannot detach the session from the new one.
"""

from __future__ import annotations

import enum
import math
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import ClassVar, Literal, NamedTuple

from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import IcefloeError

__all__ = [
    "SESSION_ID_BYTES",
    "SessionError",
    "SessionExpired",
    "SessionInfo",
    "SessionState",
    "SessionTable",
    "SessionTableStatistics",
    "TooManySessions",
    "TooManyStreams",
]

#: random bytes in a session id (144 bits; 24 URL-safe characters)
SESSION_ID_BYTES = 18


class SessionState(enum.IntEnum):
    """Where a session stands."""

    #: a connection holds it
    ATTACHED = 1
    #: its connection closed; it expires ``ttl_s`` after the detach unless resumed
    DETACHED = 2


class SessionError(IcefloeError):
    """A session operation the endpoint must answer with an ``error`` op.

    ``code`` is the wire code of that error.
    """

    code: ClassVar[ErrorCode]


class SessionExpired(SessionError):
    """No session to resume: unknown, expired, or another tenant's.

    The three cases read the same to the client (its message does not say
    which), so a session's existence does not leak across tenants;
    ``reason`` tells them apart for logs and metrics.
    """

    code = ErrorCode.SESSION_EXPIRED

    def __init__(self, session_id: str, reason: Literal["unknown", "expired", "tenant"]) -> None:
        self.session_id = session_id
        self.reason = reason
        super().__init__("no such session: it is unknown or has expired")


class TooManySessions(SessionError):
    """The table holds ``max_sessions`` sessions and every one is attached."""

    code = ErrorCode.OVERLOADED

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # No count: how many sessions the server holds is every tenant's load.
        super().__init__("no WebSocket session is free on this server; retry later")


class TooManyStreams(SessionError):
    """A session already follows ``max_streams_per_session`` streams."""

    code = ErrorCode.LIMIT_EXCEEDED

    def __init__(self, session_id: str, limit: int) -> None:
        self.session_id = session_id
        self.limit = limit
        super().__init__(f"a session follows at most {limit} streams")


class SessionInfo(NamedTuple):
    """A snapshot of one session."""

    #: the session's id
    session_id: str
    #: the tenant that opened it; only this tenant can resume it
    tenant: str
    #: attached to a connection, or detached and waiting for a resume
    state: SessionState
    #: a copy of stream_id -> last acknowledged seq (``from_seq - 1`` before any ack)
    subscriptions: dict[str, int]
    #: increments on every attach (1 after ``open``); pass it to ``detach``
    attachment: int
    #: the resume found the session attached to another connection: close that one
    taken_over: bool


class SessionTableStatistics(NamedTuple):
    """A snapshot of a :class:`SessionTable`."""

    #: sessions held, attached and detached
    sessions: int
    #: sessions held by a connection
    attached: int
    #: sessions waiting for a resume
    detached: int
    #: (session, stream) pairs followed
    subscriptions: int
    #: the most sessions held at once
    max_sessions: int
    #: the most streams one session follows
    max_streams_per_session: int
    #: how long a detached session is kept, in seconds
    ttl_s: float
    #: sessions opened
    opened: int
    #: successful resumes (take-overs included)
    resumed: int
    #: resumes of a session still attached to another connection
    taken_over: int
    #: resumes refused: unknown, expired or another tenant's session
    refused: int
    #: detached sessions dropped because their ttl passed
    expired: int
    #: detached sessions dropped early to make room for a new one
    evicted: int


class _Session:
    __slots__ = ("attachment", "expires_at", "streams", "tenant")

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        # stream_id -> last acknowledged seq (-1: none)
        self.streams: dict[str, int] = {}
        # None while attached; the clock time it expires at once detached
        self.expires_at: float | None = None
        self.attachment = 1


def _check_limit(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _check_seq(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")


class SessionTable:
    """Every WebSocket session of a server, attached or waiting for a resume.

    :param ttl_s: how long a detached session is kept for a resume, in
        seconds; finite and > 0.
    :param max_sessions: the most sessions held, in sessions; >= 1. Opening
        one more first drops the detached session closest to expiry (counted
        in ``evicted``); if every session is attached it raises
        :exc:`TooManySessions`.
    :param clock: returns monotonic seconds, e.g. ``time.monotonic``. The
        ``now`` arguments must come from the same clock and never go back.
    :param max_streams_per_session: the most streams one session follows,
        in streams; >= 1. Beyond it :meth:`subscribe` raises
        :exc:`TooManyStreams`.
    :raises ValueError: if a limit is out of range.
    """

    __slots__ = (
        "_clock",
        "_detached",
        "_evicted",
        "_expired",
        "_max_sessions",
        "_max_streams",
        "_opened",
        "_readers",
        "_refused",
        "_resumed",
        "_sessions",
        "_subscriptions",
        "_taken_over",
        "_ttl",
    )

    def __init__(
        self,
        ttl_s: float,
        max_sessions: int,
        clock: Callable[[], float],
        *,
        max_streams_per_session: int = 1024,
    ) -> None:
        if not (isinstance(ttl_s, int | float) and math.isfinite(ttl_s) and ttl_s > 0):
            raise ValueError(f"ttl_s must be a finite number > 0, got {ttl_s!r}")
        _check_limit("max_sessions", max_sessions)
        _check_limit("max_streams_per_session", max_streams_per_session)
        self._ttl = float(ttl_s)
        self._max_sessions = max_sessions
        self._max_streams = max_streams_per_session
        self._clock = clock
        self._sessions: dict[str, _Session] = {}
        # Detached session ids in detach order: with a constant ttl and a
        # clock that does not go back, the front is the first to expire.
        self._detached: OrderedDict[str, None] = OrderedDict()
        # stream_id -> ids of the sessions following it, for forget()
        self._readers: dict[str, set[str]] = {}
        self._subscriptions = 0
        self._opened = 0
        self._resumed = 0
        self._taken_over = 0
        self._refused = 0
        self._expired = 0
        self._evicted = 0

    def __repr__(self) -> str:
        return (
            f"SessionTable(sessions={len(self._sessions)}, detached={len(self._detached)}, "
            f"max_sessions={self._max_sessions}, ttl_s={self._ttl})"
        )

    def __len__(self) -> int:
        """Sessions held, attached and detached (expired ones not yet swept included)."""
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    # -- lifecycle ---------------------------------------------------------------

    def open(self, tenant: str) -> str:
        """Open a fresh session for ``tenant``, attached; return its id.

        The id carries 144 random bits (:mod:`secrets`).

        :raises TooManySessions: if ``max_sessions`` are held and all attached.
        """
        self._sweep(self._clock())
        if len(self._sessions) >= self._max_sessions:
            if not self._detached:
                raise TooManySessions(self._max_sessions)
            oldest = next(iter(self._detached))
            self._drop(oldest)
            self._evicted += 1
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        while session_id in self._sessions:  # pragma: no cover - 2**-144
            session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        self._sessions[session_id] = _Session(tenant)
        self._opened += 1
        return session_id

    def resume(self, session_id: str, tenant: str) -> SessionInfo:
        """Attach the session to a new connection and return it.

        Resend each stream of :attr:`SessionInfo.subscriptions` from its last
        ack + 1. If :attr:`SessionInfo.taken_over`, the session was attached
        to another connection, which should now be closed.

        ``tenant`` may be any owner key (e.g. tenant and subject together)
        as long as :meth:`open` was given the same kind.

        :raises SessionExpired: if the session is unknown, expired, or was
            opened by another tenant; a foreign attempt changes nothing.
        """
        session = self._sessions.get(session_id)
        if session is None:
            self._refused += 1
            raise SessionExpired(session_id, "unknown")
        if session.tenant != tenant:
            self._refused += 1
            raise SessionExpired(session_id, "tenant")
        expires_at = session.expires_at
        if expires_at is None:
            taken_over = True
            self._taken_over += 1
        elif expires_at <= self._clock():
            self._drop(session_id)
            self._expired += 1
            self._refused += 1
            raise SessionExpired(session_id, "expired")
        else:
            taken_over = False
            session.expires_at = None
            del self._detached[session_id]
        session.attachment += 1
        self._resumed += 1
        return self._info(session_id, session, taken_over)

    def restore(self, session_id: str, tenant: str, subscriptions: Mapping[str, int]) -> bool:
        """Take back a session kept outside the table (a store, after a
        restart): detached, resumable for ``ttl_s`` from now.

        ``subscriptions`` maps stream ids to their last acknowledged seq
        (``-1``: none); past ``max_streams_per_session`` the rest are left
        out. Returns False when the id is held already, or every session is
        attached (else the detached session closest to expiry makes room, as
        in :meth:`open`).

        :raises ValueError: a seq that is not an int >= -1.
        """
        for seq in subscriptions.values():
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < -1:
                raise ValueError(f"a restored seq must be an int >= -1, got {seq!r}")
        now = self._clock()
        self._sweep(now)
        if session_id in self._sessions:
            return False
        if len(self._sessions) >= self._max_sessions:
            if not self._detached:
                return False
            self._drop(next(iter(self._detached)))
            self._evicted += 1
        session = _Session(tenant)
        for stream_id, seq in list(subscriptions.items())[: self._max_streams]:
            session.streams[stream_id] = seq
            self._readers.setdefault(stream_id, set()).add(session_id)
            self._subscriptions += 1
        # now + ttl is the latest expiry of all: the detached order holds.
        session.expires_at = now + self._ttl
        self._sessions[session_id] = session
        self._detached[session_id] = None
        return True

    def detach(
        self, session_id: str, now: float | None = None, *, attachment: int | None = None
    ) -> bool:
        """The session's connection closed: keep it ``ttl_s`` seconds from ``now``.

        Safe to call from any connection-close path: it returns ``False`` and
        changes nothing if the session is gone, already detached, or (given
        ``attachment``) now attached to a newer connection.

        :param now: the clock's time (default: read it).
        :param attachment: the :attr:`SessionInfo.attachment` the closing
            connection holds; ``None`` skips the check.
        """
        session = self._sessions.get(session_id)
        if session is None or session.expires_at is not None:
            return False
        if attachment is not None and attachment != session.attachment:
            return False
        session.expires_at = (self._clock() if now is None else now) + self._ttl
        self._detached[session_id] = None
        return True

    def discard(self, session_id: str) -> bool:
        """Drop a session now, attached or not; ``False`` if there was none."""
        if session_id not in self._sessions:
            return False
        self._drop(session_id)
        return True

    def expire(self, now: float | None = None) -> list[str]:
        """Drop the detached sessions whose ttl has passed; return their ids.

        :param now: the clock's time (default: read it).
        """
        return self._sweep(self._clock() if now is None else now)

    # -- subscriptions ------------------------------------------------------------

    def subscribe(self, session_id: str, stream_id: str, from_seq: int = 0) -> bool:
        """The session follows ``stream_id`` from ``from_seq`` on; whether that
        changed it (``False``: it followed the stream from that seq already).

        Its resume point becomes ``from_seq - 1`` as if acknowledged, even if
        it already followed the stream: the client asked for that seq.

        :raises SessionExpired: if the session is not held (reason ``unknown``).
        :raises TooManyStreams: if it is a new stream and the session already
            follows ``max_streams_per_session``.
        :raises ValueError: if ``from_seq`` is not an int >= 0.
        """
        _check_seq("from_seq", from_seq)
        session = self._get(session_id)
        streams = session.streams
        if stream_id not in streams:
            if len(streams) >= self._max_streams:
                raise TooManyStreams(session_id, self._max_streams)
            self._readers.setdefault(stream_id, set()).add(session_id)
            self._subscriptions += 1
        elif streams[stream_id] == from_seq - 1:
            return False
        streams[stream_id] = from_seq - 1
        return True

    def unsubscribe(self, session_id: str, stream_id: str) -> bool:
        """The session stops following ``stream_id``; ``False`` if it did not."""
        session = self._sessions.get(session_id)
        if session is None or session.streams.pop(stream_id, None) is None:
            return False
        self._unindex(session_id, stream_id)
        return True

    def ack(self, session_id: str, stream_id: str, seq: int) -> bool:
        """Record that the client holds ``stream_id`` up to ``seq``.

        Acks only move forward: one at or below the recorded seq is ignored,
        as is an ack for a stream the session does not follow (e.g. one
        :meth:`forget` dropped while the ack was in flight). Returns whether
        the resume point moved.

        :raises SessionExpired: if the session is not held (reason ``unknown``).
        :raises ValueError: if ``seq`` is not an int >= 0.
        """
        _check_seq("seq", seq)
        streams = self._get(session_id).streams
        last = streams.get(stream_id)
        if last is None or seq <= last:
            return False
        streams[stream_id] = seq
        return True

    def forget(self, stream_id: str) -> int:
        """No session follows ``stream_id`` any more; return how many did.

        Call it when the stream can no longer be resumed (it left the
        registry, or its history is gone).
        """
        readers = self._readers.pop(stream_id, ())
        for session_id in readers:
            del self._sessions[session_id].streams[stream_id]
        self._subscriptions -= len(readers)
        return len(readers)

    # -- inspection ----------------------------------------------------------------

    def follows(self, session_id: str, stream_id: str) -> bool:
        """Whether the session follows ``stream_id`` (O(1), unlike :meth:`info`).

        :raises SessionExpired: if the session is not held (reason ``unknown``).
        """
        return stream_id in self._get(session_id).streams

    def has_room(self, session_id: str) -> bool:
        """Whether :meth:`subscribe` of one more stream would pass the bound.

        :raises SessionExpired: if the session is not held (reason ``unknown``).
        """
        return len(self._get(session_id).streams) < self._max_streams

    def info(self, session_id: str) -> SessionInfo:
        """A snapshot of the session (``taken_over`` is ``False``).

        :raises SessionExpired: if the session is not held (reason ``unknown``).
        """
        return self._info(session_id, self._get(session_id), False)

    def statistics(self) -> SessionTableStatistics:
        """A snapshot of the table's size, limits and counters."""
        detached = len(self._detached)
        return SessionTableStatistics(
            sessions=len(self._sessions),
            attached=len(self._sessions) - detached,
            detached=detached,
            subscriptions=self._subscriptions,
            max_sessions=self._max_sessions,
            max_streams_per_session=self._max_streams,
            ttl_s=self._ttl,
            opened=self._opened,
            resumed=self._resumed,
            taken_over=self._taken_over,
            refused=self._refused,
            expired=self._expired,
            evicted=self._evicted,
        )

    # -- internals -------------------------------------------------------------------

    def _get(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise SessionExpired(session_id, "unknown")
        return session

    @staticmethod
    def _info(session_id: str, session: _Session, taken_over: bool) -> SessionInfo:
        return SessionInfo(
            session_id=session_id,
            tenant=session.tenant,
            state=SessionState.ATTACHED if session.expires_at is None else SessionState.DETACHED,
            subscriptions=dict(session.streams),
            attachment=session.attachment,
            taken_over=taken_over,
        )

    def _sweep(self, now: float) -> list[str]:
        gone: list[str] = []
        detached = self._detached
        sessions = self._sessions
        while detached:
            session_id = next(iter(detached))
            expires_at = sessions[session_id].expires_at
            assert expires_at is not None
            if expires_at > now:
                break
            self._drop(session_id)
            gone.append(session_id)
        self._expired += len(gone)
        return gone

    def _drop(self, session_id: str) -> None:
        session = self._sessions.pop(session_id)
        self._detached.pop(session_id, None)
        for stream_id in session.streams:
            self._unindex(session_id, stream_id)

    def _unindex(self, session_id: str, stream_id: str) -> None:
        readers = self._readers[stream_id]
        readers.discard(session_id)
        if not readers:
            del self._readers[stream_id]
        self._subscriptions -= 1
