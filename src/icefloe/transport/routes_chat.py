"""The AI SDK chat routes: ``POST /v1/chat``, ``GET`` / ``DELETE /v1/chat/{id}/stream``.

``useChat`` (the Vercel AI SDK) posts a chat's messages and reads the reply
as a UI message stream; docs/ai-sdk.md is the contract. A post starts a run
of the served flow (payload: the request body) and answers its stream as
parts (:class:`~icefloe.core.uimessage.UiMessageMapper`), written by the
edge's own :class:`~icefloe.transport.streaming.StreamPump`: heartbeats, the
send timeout and the connection limit apply as for ``GET /v1/streams/{id}``.

A chat has at most one active run, found by (tenant, chat id) in a
:class:`ChatTable`. A resume replays the run's stream from seq 0 (the
reloaded page has none of it), so it needs the whole reply within the
edge's ``history``. A dropped connection leaves the run going (until the
unread timeout); ``DELETE`` cancels it.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Annotated, Any, Final, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from icefloe.backplane.reader import RemoteReader
from icefloe.core.messages import Headers
from icefloe.core.uimessage import (
    DONE_EVENT,
    UI_MESSAGE_STREAM_HEADER,
    UiMessageMapper,
    encode_parts,
)
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import EndOfStream, IcefloeError, StreamError, StreamNotFound
from icefloe.runtime.stream_types import StreamPhase
from icefloe.runtime.subscription import Subscription
from icefloe.transport.auth import Principal, Scope
from icefloe.transport.chat_remote import remote_reply, remote_stop, remote_supersede
from icefloe.transport.edge import EdgeContext, read_body
from icefloe.transport.encoding import WireFormat
from icefloe.transport.errors import HttpError
from icefloe.transport.shared import Taken
from icefloe.transport.streaming import StreamPump
from icefloe.transport.types import Receive, Send
from icefloe.transport.types import Scope as AsgiScope

__all__ = ["AUTH_OFF_TENANT", "MAX_ACTIVE_CHATS", "ChatRoutes", "ChatTable"]

#: chats with an active run, across tenants, at most
MAX_ACTIVE_CHATS: Final = 100_000
#: the tenant of chats when authentication is off and the body names none
AUTH_OFF_TENANT: Final = "default"

_RUNNING = StreamPhase.RUNNING.label
_HEADER = tuple(s.encode() for s in UI_MESSAGE_STREAM_HEADER)


class _ChatIn(msgspec.Struct):
    """The fields of the body this edge reads; others are the node's (``body`` option)."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    messages: list[dict[str, Any]]
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: str | None = None
    tenant: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


class ChatTable:
    """The active run of each chat, by (tenant, chat id); at most ``limit`` chats.

    Entries of runs that ended are dropped when looked up, and swept when
    the table is full; a post that still finds it full is refused
    (``overloaded``), never an older chat forgotten while it runs.
    """

    def __init__(self, is_running: Callable[[str], bool], limit: int = MAX_ACTIVE_CHATS) -> None:
        self._is_running = is_running
        self._limit = limit
        self._runs: dict[tuple[str, str], str] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def active(self, tenant: str, chat_id: str) -> str | None:
        """The stream id of the chat's running run, or None."""
        key = (tenant, chat_id)
        sid = self._runs.get(key)
        if sid is not None and not self._is_running(sid):
            del self._runs[key]
            return None
        return sid

    def room(self) -> bool:
        """Whether one more chat fits (sweeping ended runs when full)."""
        if len(self._runs) >= self._limit:
            self._runs = {k: v for k, v in self._runs.items() if self._is_running(v)}
        return len(self._runs) < self._limit

    def put(self, tenant: str, chat_id: str, stream_id: str) -> None:
        self._runs[(tenant, chat_id)] = stream_id

    def drop(self, tenant: str, chat_id: str) -> None:
        self._runs.pop((tenant, chat_id), None)


class _UiReader:
    """A stream reader seen through a :class:`UiMessageMapper`: what the pump reads.

    Its :meth:`take` encodes the held chunks as parts (the opening ones
    first), and a terminal as the closing parts; its end is always an
    :class:`EndOfStream`, since the closing parts already told the client.
    """

    def __init__(self, sub: Subscription | RemoteReader) -> None:
        self.sub = sub
        self.mapper = UiMessageMapper(sub.stream_id)
        self._begun = False
        self._over = False

    def held(self) -> int:
        return self.sub.held()

    async def wait(self) -> None:
        await self.sub.wait()

    def interrupt(self) -> None:
        self.sub.interrupt()

    def end_reason(self) -> IcefloeError | None:
        return EndOfStream("the UI message stream ended") if self._over else None

    def close(self) -> None:
        self.sub.close()

    def take(self, max_bytes: int) -> Taken | None:
        """The next bytes of the message: held chunks' parts, or the closing parts."""
        if self._over:
            return None
        out = [] if self._begun else [encode_parts(self.mapper.begin())]
        self._begun = True
        sub = self.sub
        first = None
        count = 0
        size = 0
        closing: list[dict[str, Any]] = []
        try:
            while sub.held() and (count == 0 or size < max_bytes):
                chunk = sub.peek(0)
                data = encode_parts(
                    self.mapper.chunk(chunk.text, chunk.data, chunk.meta, done=chunk.done)
                )
                sub.skip(1)
                if first is None:
                    first = chunk
                count += 1
                size += len(data)
                out.append(data)
            if not sub.held():
                end = sub.end_reason()
                if isinstance(end, StreamError):
                    closing = self.mapper.end(end.code, end.message)
                if end is not None:
                    self._over = True
        except StreamError as exc:  # history_gone: this reader was overrun
            closing = self.mapper.end(exc.code, exc.message)
            self._over = True
        if self._over:
            out += [encode_parts(closing), DONE_EVENT]
        data = b"".join(out)
        if not data:
            return None
        return Taken(data, count, first)


def _take(reader: _UiReader, max_bytes: int) -> Taken | None:
    """The pump's ``take``: the reader maps and encodes its own parts."""
    return reader.take(max_bytes)


class _UiStreamResponse(Response):
    """A pump's response with the UI message stream header added to its start."""

    def __init__(self, pump: StreamPump) -> None:
        # Response.__init__ is skipped on purpose: the pump writes the headers.
        self._pump = pump
        self.background = None

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        async def send_marked(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], _HEADER]}
            await send(message)

        await self._pump(scope, receive, send_marked)


class ChatRoutes:
    """The handlers of ``/v1/chat``, over one :class:`EdgeContext`."""

    def __init__(self, edge: EdgeContext) -> None:
        self.edge = edge
        self.chats = ChatTable(self._running)

    def _running(self, stream_id: str) -> bool:
        brief = self.edge.flow.brief(stream_id)
        return brief is not None and brief.state == _RUNNING

    async def post(self, request: Request) -> Response:
        """``POST /v1/chat``: start a run for the chat and stream its reply."""
        edge = self.edge
        principal = edge.principal(request, Scope.STREAMS_START)
        payload, chat = _decode_chat(await read_body(request))
        tenant = chat.tenant or _own_tenant(principal)
        if not principal.can_access_tenant(tenant):
            raise HttpError(ErrorCode.FORBIDDEN, "tenant not allowed for this principal")
        previous = self.chats.active(tenant, chat.id)
        if previous is None and not self.chats.room():
            raise HttpError(
                ErrorCode.OVERLOADED, "too many active chats; retry later", {"Retry-After": "1"}
            )
        started, _ = await edge.start_run(principal, payload, Headers(tenant=tenant), None)
        if previous is not None:
            # A new message supersedes the chat's reply in progress.
            edge.flow.cancel(previous)
        self.chats.put(tenant, chat.id, started.stream_id)
        if edge.backplane is not None:  # -- backplane (issue 12) --
            await remote_supersede(edge.backplane, principal, tenant, chat.id, started.stream_id)
        return self._respond(request, started.stream_id)

    async def resume(self, request: Request) -> Response:
        """``GET /v1/chat/{id}/stream``: the active reply from its start, or 204."""
        principal = self.edge.principal(request, Scope.STREAMS_READ)
        tenant, chat_id = self._chat(request, principal)
        sid = self.chats.active(tenant, chat_id)
        if sid is None:
            if self.edge.backplane is not None:  # -- backplane (issue 12) --
                remote = await remote_reply(self.edge.backplane, principal, tenant, chat_id)
                if remote is not None:
                    return self._pump(request, remote)
            return Response(status_code=204)
        return self._respond(request, sid)

    async def stop(self, request: Request) -> Response:
        """``DELETE /v1/chat/{id}/stream``: cancel the active reply; 204 when none."""
        principal = self.edge.principal(request, Scope.STREAMS_CANCEL)
        tenant, chat_id = self._chat(request, principal)
        sid = self.chats.active(tenant, chat_id)
        self.chats.drop(tenant, chat_id)
        if sid is None:
            if self.edge.backplane is not None:  # -- backplane (issue 12) --
                stopped = await remote_stop(self.edge.backplane, principal, tenant, chat_id)
                if stopped is not None:
                    state = StreamPhase.CANCELLED.label
                    return JSONResponse({"chat_id": chat_id, "stream_id": stopped, "state": state})
            return Response(status_code=204)
        self.edge.flow.cancel(sid)
        brief = self.edge.flow.brief(sid)
        state = brief.state if brief is not None else StreamPhase.CANCELLED.label
        return JSONResponse({"chat_id": chat_id, "stream_id": sid, "state": state})

    def _chat(self, request: Request, principal: Principal) -> tuple[str, str]:
        """(tenant, chat id) of a request; another tenant's chat reads as missing."""
        tenant = request.query_params.get("tenant") or _own_tenant(principal)
        if not principal.can_access_tenant(tenant):
            raise HttpError(ErrorCode.NOT_FOUND, "no such chat")
        return tenant, request.path_params["chat_id"]

    def _respond(self, request: Request, stream_id: str) -> Response:
        """The stream ``stream_id`` from seq 0 as a UI message stream response."""
        edge = self.edge
        try:
            sub = edge.flow.subscribe(stream_id, 0, lag_limit=edge.lag_limit)
        except StreamError as exc:
            if not self._running(stream_id):
                return Response(status_code=204)  # stopped since the lookup: its parts are gone
            raise HttpError(
                exc.code, f"the reply can no longer be replayed: {exc.message}"
            ) from None
        except StreamNotFound:
            return Response(status_code=204)  # ended and left between the lookup and now
        return self._pump(request, sub)

    def _pump(self, request: Request, sub: Subscription | RemoteReader) -> Response:
        """The reader's stream as a UI message stream response."""
        edge = self.edge
        stream_id = sub.stream_id
        reader = _UiReader(sub)
        connection_ended = edge.open_connection(request, reader.close)

        def ended(outcome: str) -> None:
            # A page that reloads soon keeps the run: it read until now.
            edge.runs.mark_read(stream_id)
            connection_ended(outcome)

        pump = StreamPump(
            reader,
            WireFormat.SSE,
            edge.settings.pump,
            take=_take,
            on_chunks=edge.metrics.chunks_written,
            on_end=ended,
        )
        return _UiStreamResponse(pump)


def _own_tenant(principal: Principal) -> str:
    """The principal's tenant; with authentication off, :data:`AUTH_OFF_TENANT`."""
    if principal.tenant == Principal.unrestricted().tenant:
        return AUTH_OFF_TENANT
    return principal.tenant


def _decode_chat(body: bytes) -> tuple[dict[str, Any], _ChatIn]:
    """The body as the node's payload, and the fields the edge reads from it.

    :raises HttpError: ``bad_request`` naming the field at fault.
    """
    try:
        payload = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise HttpError(ErrorCode.BAD_REQUEST, f"invalid body: {exc}") from None
    except (RecursionError, UnicodeDecodeError):
        raise HttpError(ErrorCode.BAD_REQUEST, "invalid body: not valid JSON") from None
    if not isinstance(payload, dict):
        raise HttpError(ErrorCode.BAD_REQUEST, "invalid body: expected a JSON object")
    try:
        chat = msgspec.convert(payload, _ChatIn)
    except msgspec.ValidationError as exc:
        raise HttpError(ErrorCode.BAD_REQUEST, f"invalid body: {exc}") from None
    return payload, chat
