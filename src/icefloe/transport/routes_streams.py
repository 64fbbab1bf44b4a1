"""The stream routes: ``/v1/streams`` (start, list) and ``/v1/streams/{id}``
(read as SSE or NDJSON, long-poll, status, cancel).

Every stream started here keeps ``history`` chunks so that a reader can
resume with ``Last-Event-ID`` / ``?from_seq=``; docs/wire-protocol.md is the
contract.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from icefloe.backplane.reader import RemoteReader
from icefloe.core.messages import Headers
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import EndOfStream, StreamError, StreamNotFound, WouldBlock
from icefloe.runtime.stream_types import StreamPhase, StreamStatistics
from icefloe.runtime.subscription import Subscription
from icefloe.store.protocol import Store, StoreUnavailable
from icefloe.store.types import RunState
from icefloe.transport.auth import Principal, Scope
from icefloe.transport.edge import EdgeContext, PumpResponse, read_body
from icefloe.transport.encoding import (
    WireFormat,
    ndjson_chunk,
    parse_resume_point,
    sse_chunk,
    terminal_seq,
)
from icefloe.transport.errors import HttpError
from icefloe.transport.idempotency import Started
from icefloe.transport.shared import EncodedLog
from icefloe.transport.stored_reader import StoredReader, open_stored_reader, stored_take
from icefloe.transport.streaming import StreamPump

__all__ = ["MAX_POLL_CHUNKS", "MAX_POLL_WAIT_S", "StreamRoutes"]

#: longest long-poll wait, seconds
MAX_POLL_WAIT_S = 30.0
#: most chunks one long-poll answer carries
MAX_POLL_CHUNKS = 1000


def _store_down() -> HttpError:
    """The answer when the store does not answer (a fresh error each time)."""
    return HttpError(ErrorCode.UNAVAILABLE, "the stream store is unavailable", {"Retry-After": "1"})


#: states of a stream that ended without its ``done`` chunk
_ABNORMAL = frozenset({StreamPhase.FAILED.label, StreamPhase.CANCELLED.label})
_RUNNING = StreamPhase.RUNNING.label


class _HeadersIn(msgspec.Struct, forbid_unknown_fields=True):
    tenant: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    topic: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    priority: Annotated[int, msgspec.Meta(ge=-1000, le=1000)] = 0


class _StartIn(msgspec.Struct, forbid_unknown_fields=True):
    headers: _HeadersIn
    payload: Any = None
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


_decode_start = msgspec.json.Decoder(_StartIn).decode


class StreamRoutes:
    """The handlers of ``/v1/streams``, over one :class:`EdgeContext`."""

    def __init__(self, edge: EdgeContext) -> None:
        self.edge = edge
        # Encode once: each stream's events per wire format, shared by its pumps.
        self._logs: dict[tuple[str, WireFormat], EncodedLog] = {}

    async def start(self, request: Request) -> Response:
        """``POST /v1/streams``."""
        principal = self.edge.principal(request, Scope.STREAMS_START)
        body = await read_body(request)
        try:
            start = _decode_start(body)
        except msgspec.DecodeError as exc:
            raise HttpError(ErrorCode.BAD_REQUEST, f"invalid body: {exc}") from None
        except (RecursionError, UnicodeDecodeError):
            # msgspec raises these for absurd nesting and invalid UTF-8 in strings.
            raise HttpError(ErrorCode.BAD_REQUEST, "invalid body: not valid JSON") from None
        h = start.headers
        started, new = await self.edge.start_run(
            principal,
            start.payload,
            Headers(tenant=h.tenant, topic=h.topic, priority=h.priority),
            start.idempotency_key,
        )
        return _created(started, 201 if new else 200, request.scope.get("root_path", ""))

    async def list_streams(self, request: Request) -> Response:
        """``GET /v1/streams``: the caller's tenant's streams."""
        principal = self.edge.principal(request, Scope.STREAMS_READ)
        streams = [
            _stats_json(s)
            for s in self.edge.flow.streams()
            if principal.can_access_tenant(s.tenant)
        ]
        if self.edge.backplane is not None:  # -- backplane (issue 12) --
            streams += await self.edge.backplane.streams(principal)
        return JSONResponse({"streams": streams})

    async def status(self, request: Request) -> Response:
        """``GET /v1/streams/{id}/status``, remembered after the stream left."""
        principal = self.edge.principal(request, Scope.STREAMS_READ)
        sid = request.path_params["stream_id"]
        try:
            stats = self.edge.owned(principal, sid)
        except HttpError:
            if self.edge.backplane is not None:  # -- backplane (issue 12) --
                remote = await self.edge.backplane.status(principal, sid)
                if remote is not None:
                    return JSONResponse(remote)
            gone = self.edge.flow.finished(sid)
            if gone is None or not principal.can_access_tenant(gone.tenant):
                stored = await self._stored_status(principal, sid)
                if stored is None:
                    raise
                return JSONResponse(stored)
            return JSONResponse(
                {
                    "stream_id": sid,
                    "tenant": gone.tenant,
                    "state": gone.state,
                    "last_seq": gone.next_seq - 1,
                    "subscribers": 0,
                    "code": gone.code,
                }
            )
        return JSONResponse(_stats_json(stats))

    async def _stored_status(self, principal: Principal, sid: str) -> dict[str, Any] | None:
        """The status of a stream only the store knows (issue 11), or None."""
        store = self.edge.flow.store
        if store is None:
            return None
        run = await _stored_run(store, sid)
        if run is None or not principal.can_access_tenant(run.run.tenant):
            return None
        terminal = run.terminal
        return {
            "stream_id": sid,
            "tenant": run.run.tenant,
            "state": _RUNNING if terminal is None else terminal.phase,
            "last_seq": run.last_seq,
            "subscribers": 0,
            "code": None if terminal is None else terminal.code,
        }

    async def cancel(self, request: Request) -> Response:
        """``DELETE /v1/streams/{id}``: answers the status."""
        principal = self.edge.principal(request, Scope.STREAMS_CANCEL)
        sid = request.path_params["stream_id"]
        if self.edge.backplane is not None:  # -- backplane (issue 12) --
            remote = await self.edge.backplane.cancel(principal, sid)
            if remote is not None:
                return JSONResponse(remote)
        stats = self.edge.owned(principal, sid)
        if stats.state == _RUNNING:
            self.edge.flow.cancel(sid)
        return JSONResponse(_stats_json(self.edge.flow.lookup(sid) or stats))

    async def read(self, request: Request) -> Response:
        """``GET /v1/streams/{id}``: SSE or NDJSON from the resume point."""
        edge = self.edge
        principal = edge.principal(request, Scope.STREAMS_READ)
        # -- backplane (issue 12): a stream another gateway produces --
        remote = None if edge.backplane is None else await edge.backplane.reader(request, principal)
        reader = await self._reader(request, principal) if remote is None else remote
        if isinstance(reader, Response):
            return reader
        connection_ended = edge.open_connection(request, reader.close)
        fmt = WireFormat.negotiate(request.headers.get("accept"))
        gzip = "gzip" in request.headers.get("accept-encoding", "").lower()
        if isinstance(reader, StoredReader):
            return self._stored_pump(reader, fmt, gzip, connection_ended)
        log_key = (reader.stream_id, fmt)
        log = self._logs.get(log_key)
        if log is None:
            log = self._logs[log_key] = EncodedLog(
                sse_chunk if fmt is WireFormat.SSE else ndjson_chunk
            )
        log.users += 1

        def ended(outcome: str) -> None:
            log.users -= 1
            if not log.users:
                del self._logs[log_key]
            # A reader that reconnects soon keeps the run: it read until now.
            edge.runs.mark_read(reader.stream_id)
            connection_ended(outcome)

        pump = StreamPump(
            reader,
            fmt,
            edge.settings.pump,
            gzip=gzip,
            log=log,
            terminal_seq=lambda exc: terminal_seq(exc.code, reader.next_seq),
            on_chunks=edge.metrics.chunks_written,
            on_end=ended,
        )
        return PumpResponse(pump)

    def _stored_pump(
        self,
        reader: StoredReader,
        fmt: WireFormat,
        gzip: bool,
        connection_ended: Callable[[str], None],
    ) -> Response:
        edge = self.edge

        def ended(outcome: str) -> None:
            edge.runs.mark_read(reader.stream_id)
            connection_ended(outcome)

        encode = sse_chunk if fmt is WireFormat.SSE else ndjson_chunk
        pump = StreamPump(
            reader,
            fmt,
            edge.settings.pump,
            gzip=gzip,
            take=stored_take(encode),
            terminal_seq=lambda exc: terminal_seq(exc.code, reader.next_seq),
            on_chunks=edge.metrics.chunks_written,
            on_end=ended,
        )
        return PumpResponse(pump)

    async def _from_store(
        self, principal: Principal, sid: str, from_seq: int, missing: HttpError
    ) -> StoredReader | Response:
        """A reader of the stored stream (issue 11); raises ``missing`` when the
        flow has no store or the store does not know the stream."""
        try:
            reader = await open_stored_reader(
                self.edge.flow, principal.can_access_tenant, sid, from_seq, self.edge.lag_limit
            )
        except LookupError:
            raise missing from None
        except StoreUnavailable:
            raise _store_down() from None
        if reader is None:
            return Response(status_code=204)  # the terminal was delivered: stop reconnecting
        return reader

    async def _reader(
        self, request: Request, principal: Principal
    ) -> Subscription | StoredReader | Response:
        """Attach a reader at the resume point, or the response that replaces it."""
        flow = self.edge.flow
        sid = request.path_params["stream_id"]
        try:
            from_seq = parse_resume_point(
                request.query_params.get("from_seq"), request.headers.get("last-event-id")
            )
        except ValueError as exc:
            raise HttpError(ErrorCode.BAD_REQUEST, str(exc)) from None
        stats = flow.brief(sid)  # O(1): a thousand tabs may reconnect at once
        not_found = HttpError(ErrorCode.NOT_FOUND, "no such stream")
        if stats is None:
            gone = flow.finished(sid)
            if gone is None or not principal.can_access_tenant(gone.tenant):
                return await self._from_store(principal, sid, from_seq, not_found)
            if from_seq >= gone.next_seq:
                return Response(status_code=204)
            history_gone = HttpError(
                ErrorCode.HISTORY_GONE, "the stream ended and its history is gone"
            )
            return await self._from_store(principal, sid, from_seq, history_gone)
        if not principal.can_access_tenant(stats.tenant):
            raise not_found
        if stats.state != _RUNNING and from_seq > stats.last_seq:
            return Response(status_code=204)  # the terminal was delivered: stop reconnecting
        try:
            return self._attach(sid, from_seq, stats.state)
        except HttpError as exc:
            if exc.code is not ErrorCode.HISTORY_GONE:
                raise
            # Older than the log holds: the store may have it (issue 11).
            return await self._from_store(principal, sid, from_seq, exc)
        except ValueError as exc:
            raise HttpError(ErrorCode.BAD_REQUEST, str(exc)) from None
        except StreamNotFound:
            raise HttpError(ErrorCode.NOT_FOUND, "no such stream") from None

    def _attach(self, sid: str, from_seq: int, state: str) -> Subscription:
        """A reader of ``sid`` at ``from_seq``; the stream was in ``state`` just now.

        A stream that ended abnormally answers its terminal wherever the
        reader asks to start: a cancel discards the chunks, so the terminal
        is the news (SSE, NDJSON and long-poll alike).

        :raises HttpError: ``history_gone`` (a running or done stream no
            longer holds ``from_seq``).
        :raises ValueError: ``from_seq`` past the stream's next seq.
        :raises KeyError: no such stream.
        """
        flow = self.edge.flow
        lag_limit = self.edge.lag_limit
        try:
            return flow.subscribe(sid, from_seq, lag_limit=lag_limit)
        except StreamError as exc:
            if state in _ABNORMAL:
                return flow.subscribe(sid, None, lag_limit=lag_limit)
            raise HttpError(exc.code, exc.message) from None

    async def poll(self, request: Request) -> Response:
        """``GET /v1/streams/{id}/poll``: the chunks after ``after_seq``, as JSON."""
        principal = self.edge.principal(request, Scope.STREAMS_READ)
        q = request.query_params
        try:
            raw_after = q.get("after_seq", "-1").strip()
            after = -1 if raw_after == "-1" else parse_resume_point(raw_after, None)
        except ValueError:
            raise HttpError(
                ErrorCode.BAD_REQUEST, "after_seq must be -1 or a non-negative integer"
            ) from None
        wait_range = f"wait_s must be 0..{MAX_POLL_WAIT_S:g} seconds"
        bad_wait = HttpError(ErrorCode.BAD_REQUEST, wait_range)
        try:
            wait_s = float(q.get("wait_s", "0"))
        except ValueError:
            raise bad_wait from None
        if not 0 <= wait_s <= MAX_POLL_WAIT_S:
            raise bad_wait
        sid = request.path_params["stream_id"]
        # -- backplane (issue 12): a stream another gateway produces --
        reader: Subscription | StoredReader | RemoteReader | None = None
        if self.edge.backplane is not None:
            reader = await self.edge.backplane.poll_reader(principal, sid, after + 1)
        if reader is None:
            try:
                stats = self.edge.owned(principal, sid)
                reader = self._attach(sid, after + 1, stats.state)
            except (KeyError, ValueError):
                raise HttpError(ErrorCode.NOT_FOUND, "no such stream or seq") from None
            except HttpError as exc:
                if exc.code not in (ErrorCode.NOT_FOUND, ErrorCode.HISTORY_GONE):
                    raise
                stored = await self._from_store(principal, sid, after + 1, exc)
                if isinstance(stored, Response):
                    return JSONResponse([])  # ended, and everything after after_seq was read
                await stored.prime()
                reader = stored
        try:
            return JSONResponse(await _poll(reader, wait_s))
        finally:
            reader.close()
            # A poll detaches between requests: a recent one counts as reading.
            self.edge.runs.mark_read(sid)


async def _stored_run(store: Store, sid: str) -> RunState | None:
    try:
        return await store.get_run(sid)
    except StoreUnavailable:
        raise _store_down() from None


async def _poll(reader: Subscription | StoredReader | RemoteReader, wait_s: float) -> list[Any]:
    """Chunks available now, waiting up to ``wait_s`` for the first one."""
    chunks: list[Any] = []
    deadline = asyncio.get_running_loop().time() + wait_s
    while len(chunks) < MAX_POLL_CHUNKS:
        try:
            chunks.append(msgspec.to_builtins(reader.receive_nowait()))
            continue
        except WouldBlock:
            pass
        except EndOfStream:
            break
        except StreamError as exc:
            chunks.append({"error": {"code": exc.code.value, "message": exc.message}})
            break
        remaining = deadline - asyncio.get_running_loop().time()
        if chunks or remaining <= 0:
            break
        try:
            async with asyncio.timeout(remaining):
                await reader.wait()
        except TimeoutError:
            break
    return chunks


def _created(started: Started, status: int, root_path: str) -> Response:
    # Under the mount point or a proxy's --root-path, where the client reaches it.
    return JSONResponse(
        {"stream_id": started.stream_id, "trace_id": started.trace_id},
        status_code=status,
        headers={"Location": f"{root_path}/v1/streams/{started.stream_id}"},
    )


def _stats_json(s: StreamStatistics) -> dict[str, Any]:
    return {
        "stream_id": s.stream_id,
        "tenant": s.tenant,
        "state": s.state,
        "last_seq": s.last_seq,
        "subscribers": s.subscribers,
        "code": s.code,
    }
