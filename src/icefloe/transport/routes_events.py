"""``GET /v1/events``: one SSE connection following several streams and topic patterns.

``?stream=ID`` (repeated) and ``?topic=PATTERN`` (repeated), at most
:data:`~icefloe.transport.multiplex.MAX_SOURCES` in all, in the order the
client gives them. Every event carries what it belongs to: ``chunk`` /
``end`` events are the stream's chunks (``data.stream_id``), ``event``
events are topic events (``data.topic``), and ``error`` ends one source
(``data.stream_id`` or ``data.topic``) while the others go on. Each ``id``
is a :class:`~icefloe.transport.multiplex.Cursor`, so ``Last-Event-ID`` (or
``?from=``, for a first connection that resumes) restarts every source
exactly after the last event the client saw.

The rules of the single-source routes hold per source: ``streams:read`` for
streams, ``topics:read`` for topics; another tenant's stream is ``404`` as
an unknown one; a stream that ended abnormally answers its terminal; a
stream whose history no longer holds the resume point gets its own
``error history_gone`` in the body. Once every source has ended the
response ends; a reconnect then answers ``204``. SSE only.
"""

from __future__ import annotations

import enum
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from icefloe.backplane.reader import RemoteReader
from icefloe.core.topics import Pattern, TopicError
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import ClosedResourceError, EndOfStream, StreamError, StreamNotFound
from icefloe.hub import HubSubscription
from icefloe.runtime.stream_types import StreamPhase
from icefloe.runtime.subscription import Subscription
from icefloe.transport.auth import Principal, Scope
from icefloe.transport.edge import EdgeContext, PumpResponse
from icefloe.transport.encoding import WireFormat
from icefloe.transport.errors import HttpError
from icefloe.transport.multiplex import DONE, MAX_SOURCES, Cursor, MergedReader, Source
from icefloe.transport.streaming import StreamPump

__all__ = ["EventRoutes"]

#: query parameters this route reads; any other is a ``bad_request``
#: (``access_token`` is the credential of clients that cannot set headers: EventSource)
_PARAMS = frozenset({"stream", "topic", "from", "access_token"})
_ABNORMAL = frozenset({StreamPhase.FAILED.label, StreamPhase.CANCELLED.label})
#: events each topic subscription holds for this connection (drop_oldest)
TOPIC_BUFFER = 256


class _NotRemote(enum.Enum):
    """Not a stream of another gateway: the local rules answer."""

    TOKEN = 0


_NOT_REMOTE: Final = _NotRemote.TOKEN


def _bad(message: str) -> HttpError:
    return HttpError(ErrorCode.BAD_REQUEST, message)


def parse_sources(request: Request) -> list[Source]:
    """The streams and topics asked for, in query order.

    :raises HttpError: ``bad_request`` for an unknown parameter, none or too
        many sources, a duplicate, or an invalid pattern.
    """
    sources: list[Source] = []
    for key, value in request.query_params.multi_items():
        if key not in _PARAMS:
            raise _bad(f"unknown query parameter {key[:40]!r} (use stream, topic, from)")
        if key == "stream":
            if not 1 <= len(value) <= 128 or not value.isprintable():
                raise _bad("stream must be a stream id of 1..128 printable characters")
            sources.append(Source("stream", value))
        elif key == "topic":
            try:
                exact = Pattern(value).is_exact
            except TopicError as exc:
                raise _bad(f"topic: {exc}") from None
            sources.append(Source("topic", value, exact))
    if not sources:
        raise _bad("give at least one stream= or topic=")
    if len(sources) > MAX_SOURCES:
        raise _bad(f"at most {MAX_SOURCES} stream= and topic= parameters in all")
    if len(set(sources)) != len(sources):
        raise _bad("a stream or topic is given twice")
    return sources


class EventRoutes:
    """The handler of ``/v1/events``, over one :class:`EdgeContext`."""

    def __init__(self, edge: EdgeContext) -> None:
        self.edge = edge

    async def read(self, request: Request) -> Response:
        """``GET /v1/events``: the merged sources as SSE."""
        edge = self.edge
        sources = parse_sources(request)
        kinds = {s.kind for s in sources}
        # One authentication and one count against the rate, then each scope.
        principal = edge.principal(request, None)
        for kind, scope in (("stream", Scope.STREAMS_READ), ("topic", Scope.TOPICS_READ)):
            if kind in kinds and not principal.has(scope):
                raise HttpError(ErrorCode.FORBIDDEN, f"missing scope {scope.value}")
        raw = request.query_params.get("from") or request.headers.get("last-event-id")
        try:
            cursor = Cursor.parse(sources, raw) if raw else Cursor(sources)
        except ValueError as exc:
            raise _bad(str(exc)) from None
        merged = MergedReader(cursor)
        try:
            for index, source in enumerate(sources):
                if not cursor.done(index):
                    await self._attach(merged, principal, index, source)
        except BaseException:
            merged.close()
            raise
        if merged.end_reason() is not None:
            return Response(status_code=204)  # every source ended: stop reconnecting
        connection_ended = edge.open_connection(request, merged.close)
        stream_ids = merged.stream_ids

        def ended(outcome: str) -> None:
            for sid in stream_ids:
                edge.runs.mark_read(sid)
            connection_ended(outcome)

        gzip = "gzip" in request.headers.get("accept-encoding", "").lower()
        pump = StreamPump(
            merged, WireFormat.SSE, edge.settings.pump, gzip=gzip, take=merged.take, on_end=ended
        )
        return PumpResponse(pump)

    async def _attach(
        self, merged: MergedReader, principal: Principal, index: int, src: Source
    ) -> None:
        position = merged.cursor.position(index)
        if src.kind == "topic":
            merged.add(index, src, self._topic(principal, src, position))
            return
        # -- backplane (issue 12): a stream another gateway produces --
        remote = await self._remote(principal, src.name, position or 0)
        reader: Subscription | RemoteReader | StreamError | None
        if remote is _NOT_REMOTE:
            reader = self._stream(principal, src.name, position or 0)
        else:
            reader = remote
        if isinstance(reader, StreamError):
            merged.fail(index, src, reader)
        elif reader is not None:
            merged.add(index, src, reader)
        else:
            merged.cursor.entries[index] = DONE

    async def _remote(
        self, principal: Principal, sid: str, from_seq: int
    ) -> RemoteReader | StreamError | _NotRemote | None:
        """As :meth:`_stream`, for a stream another gateway produces;
        ``_NOT_REMOTE``: answer as without a backplane (local, or no such stream)."""
        edge = self.edge
        flow = edge.flow
        local = flow.brief(sid) is not None or flow.finished(sid) is not None
        if edge.backplane is None or local:
            return _NOT_REMOTE
        try:
            reader = await edge.backplane.follow_stream(principal, sid, from_seq)
        except EndOfStream:
            return None
        except ValueError:
            raise _bad(f"the resume point of stream {sid[:128]!r} is past its end") from None
        except StreamError as exc:
            return exc
        return _NOT_REMOTE if reader is None else reader

    def _stream(
        self, principal: Principal, sid: str, from_seq: int
    ) -> Subscription | StreamError | None:
        """A reader of ``sid`` at ``from_seq``, its in-band error, or None: nothing is left."""
        flow = self.edge.flow
        stats = flow.brief(sid)
        if stats is None:
            gone = flow.finished(sid)
            if gone is None or not principal.can_access_tenant(gone.tenant):
                raise HttpError(ErrorCode.NOT_FOUND, f"no such stream: {sid[:128]!r}")
            if from_seq >= gone.next_seq:
                return None
            return StreamError(ErrorCode.HISTORY_GONE, "the stream ended and its history is gone")
        if not principal.can_access_tenant(stats.tenant):
            raise HttpError(ErrorCode.NOT_FOUND, f"no such stream: {sid[:128]!r}")
        lag_limit = self.edge.lag_limit
        try:
            return flow.subscribe(sid, from_seq, lag_limit=lag_limit)
        except StreamError as exc:
            if stats.state in _ABNORMAL:
                return flow.subscribe(sid, None, lag_limit=lag_limit)
            return exc
        except ValueError:
            raise _bad(f"the resume point of stream {sid[:128]!r} is past its end") from None
        except StreamNotFound:
            raise HttpError(ErrorCode.NOT_FOUND, f"no such stream: {sid[:128]!r}") from None

    def _topic(self, principal: Principal, src: Source, offset: int | None) -> HubSubscription:
        hub = self.edge.hub
        start = offset if src.exact else None
        try:
            try:
                return hub.subscribe(
                    src.name, tenant=principal.tenant, buffer=TOPIC_BUFFER, from_offset=start
                )
            except StreamError as exc:
                if exc.code is not ErrorCode.HISTORY_GONE:
                    raise
                # Offsets are consecutive: the reader sees the gap in the next event's.
                return hub.subscribe(src.name, tenant=principal.tenant, buffer=TOPIC_BUFFER)
        except (TopicError, ValueError) as exc:
            raise _bad(f"topic {src.name[:200]!r}: {exc}") from None
        except StreamError as exc:
            raise HttpError(exc.code, exc.message) from None
        except ClosedResourceError:
            raise HttpError(ErrorCode.UNAVAILABLE, "the hub is closed") from None
