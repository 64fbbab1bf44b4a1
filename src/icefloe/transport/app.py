"""The ASGI app: ``create_app(flow, ...)`` serves the HTTP contract of DESIGN.md.

Every stream started here keeps ``history`` chunks so that a reader can
resume with ``Last-Event-ID`` / ``?from_seq=``; every request is
authenticated, checked for its scope and tenant, and rate limited per
principal; every error is ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from icefloe.core.congestion import CongestionState
from icefloe.core.messages import Headers, Message, StreamChunk, new_id
from icefloe.core.sessions import SessionTable
from icefloe.exceptions import EndOfStream, ErrorCode, InvalidState, StreamError, WouldBlock
from icefloe.hub import Hub
from icefloe.runtime.flow import Flow
from icefloe.runtime.stream_types import StreamStatistics
from icefloe.runtime.subscription import Subscription
from icefloe.transport.auth import (
    Authenticator,
    AuthError,
    NoAuth,
    Principal,
    Scope,
    token_from_headers,
)
from icefloe.transport.encoding import WireFormat, ndjson_chunk, parse_resume_point, sse_chunk
from icefloe.transport.errors import HttpError, error_response
from icefloe.transport.idempotency import ExpiringMap, Started
from icefloe.transport.limits import EdgeLimits, PrincipalLimiter
from icefloe.transport.logfilter import install_protocol_log_filter
from icefloe.transport.metrics import EdgeMetrics
from icefloe.transport.openapi import OPENAPI
from icefloe.transport.relays import StreamRelays, check_relay_topic
from icefloe.transport.shared import EncodedLog
from icefloe.transport.streaming import PumpSettings, StreamPump
from icefloe.transport.topics import (
    ndjson_event,
    publish_topic,
    read_topic,
    sse_event,
    take_events,
)
from icefloe.transport.websocket import WsConnection, WsSettings, serve_websocket

__all__ = ["EdgeSettings", "create_app"]

_STATIC = Path(__file__).parent / "static"
#: largest request body accepted, bytes
MAX_BODY = 1024 * 1024
#: longest long-poll wait, seconds
MAX_POLL_WAIT_S = 30.0
#: most chunks one long-poll answer carries
MAX_POLL_CHUNKS = 1000


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    """How the HTTP edge behaves; every field is a documented limit."""

    #: streaming-response limits (heartbeat, send timeout, retry hint)
    pump: PumpSettings = field(default_factory=PumpSettings)
    #: chunks each stream keeps for resumption
    history: int = 1024
    #: chunks a run started here may produce ahead of its fastest reader
    #: (``Flow.start(window=)``): bigger writes for lagging and fan-out readers
    stream_window: int = 256
    #: who may do what
    authenticator: Authenticator = field(default_factory=NoAuth)
    #: per-principal request rate and connection limits
    edge_limits: EdgeLimits = field(default_factory=EdgeLimits)
    #: browser origins allowed by CORS (empty: CORS off)
    allow_origins: tuple[str, ...] = ()
    #: seconds an idempotency key is remembered
    idempotency_ttl_s: float = 600.0
    #: idempotency keys remembered at most
    idempotency_max: int = 100_000
    #: seconds a running stream may go without any reader before it is
    #: cancelled, so runs nobody reads do not hold node workers (None: never)
    unread_timeout_s: float | None = 60.0
    #: the WebSocket edge: window, frame limit, sessions
    ws: WsSettings = field(default_factory=WsSettings)

    def __post_init__(self) -> None:
        if not isinstance(self.history, int) or self.history < 0:
            raise ValueError(f"history must be an int >= 0, got {self.history!r}")
        if not isinstance(self.stream_window, int) or self.stream_window < 1:
            raise ValueError(f"stream_window must be an int >= 1, got {self.stream_window!r}")
        if self.unread_timeout_s is not None and not self.unread_timeout_s > 0:
            raise ValueError(f"unread_timeout_s must be > 0 or None, got {self.unread_timeout_s!r}")


class _HeadersIn(msgspec.Struct, forbid_unknown_fields=True):
    tenant: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    topic: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    priority: Annotated[int, msgspec.Meta(ge=-1000, le=1000)] = 0


class _StartIn(msgspec.Struct, forbid_unknown_fields=True):
    headers: _HeadersIn
    payload: Any = None
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


_decode_start = msgspec.json.Decoder(_StartIn).decode


class _Edge:
    """The handlers, sharing one flow and its edge state."""

    def __init__(self, flow: Flow, settings: EdgeSettings, hub: Hub) -> None:
        self.flow = flow
        self.hub = hub
        self.settings = settings
        self.metrics = EdgeMetrics(flow, hub)
        self.limiter = PrincipalLimiter(settings.edge_limits)
        # A network client never holds its stream back by more than the
        # history it could resume from (see Subscription lag limits).
        self.lag_limit = max(settings.history, 1)
        self.idempotency: ExpiringMap[Started] = ExpiringMap(
            settings.idempotency_ttl_s, settings.idempotency_max, time.monotonic
        )
        self.sessions = SessionTable(
            settings.ws.session_ttl_s, settings.ws.max_sessions, time.monotonic
        )
        # The live connection of each attached WebSocket session.
        self._ws_live: dict[str, WsConnection] = {}
        # Encode once: each stream's events per wire format, shared by its pumps.
        self._logs: dict[tuple[str, WireFormat], EncodedLog] = {}
        # Streams started with headers.topic, relayed into the hub while they run.
        self.relays = StreamRelays(flow, hub)
        # POST time per stream (perf_counter), for time to first token.
        self._posted_at: ExpiringMap[float] = ExpiringMap(
            60.0, settings.idempotency_max, time.monotonic
        )

    # -- plumbing ----------------------------------------------------------------

    def principal(self, request: HTTPConnection, scope: Scope | None) -> Principal:
        """Authenticate, count the request against the principal's rate, check ``scope``.

        ``scope`` None checks authentication only (the WebSocket handshake:
        each op checks its own scope).
        """
        authenticator = self.settings.authenticator
        if isinstance(authenticator, NoAuth):
            # Auth off: no credentials to parse; limits apply per client address.
            principal = authenticator.authenticate(None)
            client = request.client
            key = f"addr\x00{client.host if client else '?'}"
        else:
            try:
                token = token_from_headers(
                    request.headers.get("authorization"), request.query_params.get("access_token")
                )
                principal = authenticator.authenticate(token)
            except AuthError as exc:
                # Failed attempts count against the client address, so guessing
                # credentials is rate limited like any other request.
                client = request.client
                retry = self.limiter.check_request(f"addr\x00{client.host if client else '?'}")
                if retry is not None:
                    self.metrics.requests_limited.inc()
                    raise HttpError(
                        429, "rate_limited", "too many requests", {"Retry-After": str(int(retry))}
                    ) from None
                headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
                raise HttpError(exc.status, exc.code, str(exc), headers) from None
            key = f"{principal.tenant}\x00{principal.subject}"
        request.state.limit_key = key
        retry = self.limiter.check_request(key)
        if retry is not None:
            self.metrics.requests_limited.inc()
            raise HttpError(
                429, "rate_limited", "too many requests", {"Retry-After": str(int(retry))}
            )
        if scope is not None and not principal.has(scope):
            raise HttpError(403, "forbidden", f"missing scope {scope.value}")
        return principal

    def owned(self, principal: Principal, stream_id: str) -> StreamStatistics:
        """The stream's statistics if it exists and the principal may see it.

        Another tenant's stream answers 404, as if it did not exist.
        """
        stats = self.flow.lookup(stream_id)
        if stats is None or not principal.can_access_tenant(stats.tenant):
            raise HttpError(404, "not_found", "no such stream")
        return stats

    # -- endpoints -----------------------------------------------------------------

    async def start(self, request: Request) -> Response:
        principal = self.principal(request, Scope.STREAMS_START)
        body = await _read_body(request)
        try:
            start = _decode_start(body)
        except msgspec.DecodeError as exc:
            raise HttpError(400, "bad_request", f"invalid body: {exc}") from None
        except (RecursionError, UnicodeDecodeError):
            # msgspec raises these for absurd nesting and invalid UTF-8 in strings.
            raise HttpError(400, "bad_request", "invalid body: not valid JSON") from None
        h = start.headers
        started, new = await self.start_run(
            principal,
            start.payload,
            Headers(tenant=h.tenant, topic=h.topic, priority=h.priority),
            start.idempotency_key,
        )
        return self._created(started, status=201 if new else 200)

    async def start_run(
        self, principal: Principal, payload: Any, headers: Headers, idempotency_key: str | None
    ) -> tuple[Started, bool]:
        """Start a run for ``principal`` (HTTP POST and WebSocket ``start``).

        Returns the stream and whether it is new (False: the idempotency key
        named an earlier one).

        :raises HttpError: 400 bad headers or key, 403 foreign tenant, 503 overloaded.
        """
        tenant = headers.tenant
        if not tenant or len(tenant) > 200:
            raise HttpError(400, "bad_request", "headers.tenant must be 1-200 characters")
        if not principal.can_access_tenant(tenant):
            raise HttpError(403, "forbidden", "tenant not allowed for this principal")
        if headers.topic is not None:
            check_relay_topic(principal, headers.topic)
        key = idempotency_key
        if key is not None:
            if not 0 < len(key) <= 200:
                raise HttpError(400, "bad_request", "idempotency_key must be 1-200 characters")
            seen = self.idempotency.get(f"{tenant}\x00{key}")
            if seen is not None:
                return seen, False
        message = Message(payload=payload, headers=headers, trace_id=new_id())
        started = Started(message.trace_id, message.trace_id)
        if key is not None:
            # Recorded before the await, so a concurrent retry finds it.
            self.idempotency.put(f"{tenant}\x00{key}", started)
        self._posted_at.put(started.stream_id, time.perf_counter())
        try:
            await self.flow.start(
                message, history=self.settings.history, window=self.settings.stream_window
            )
        except StreamError as exc:
            self._forget(tenant, key)
            # A tenant over its own budget is told 429; a flow over its limits, 503.
            status = 429 if exc.code is ErrorCode.LIMIT_EXCEEDED else 503
            raise HttpError(status, exc.code.value, exc.message, {"Retry-After": "1"}) from None
        except InvalidState as exc:
            self._forget(tenant, key)
            raise HttpError(503, "unavailable", str(exc), {"Retry-After": "1"}) from None
        if headers.topic is not None:
            self.relays.start(started.stream_id, headers.topic, tenant)
        if self.settings.unread_timeout_s is not None:
            self._watch_unread(started.stream_id, time.monotonic())
        return started, True

    def _watch_unread(self, stream_id: str, last_read: float) -> None:
        """Cancel the stream once it has had no reader for ``unread_timeout_s``.

        Checked on a timer, never per chunk: a reader that reconnects within
        the window (Last-Event-ID) keeps the run alive.
        """
        timeout = self.settings.unread_timeout_s
        assert timeout is not None
        stats = self.flow.lookup(stream_id)
        if stats is None or stats.state != "running":
            return
        now = time.monotonic()
        if self.relays.is_read(stream_id, stats.subscribers):
            last_read = now
        elif now - last_read >= timeout:
            self.flow.cancel(stream_id)
            self.metrics.unread_cancelled.inc()
            return
        asyncio.get_running_loop().call_later(
            timeout - (now - last_read), self._watch_unread, stream_id, last_read
        )

    def _forget(self, tenant: str, key: str | None) -> None:
        if key is not None:
            self.idempotency.pop(f"{tenant}\x00{key}")

    def _created(self, started: Started, status: int) -> Response:
        return JSONResponse(
            {"stream_id": started.stream_id, "trace_id": started.trace_id},
            status_code=status,
            headers={"Location": f"/v1/streams/{started.stream_id}"},
        )

    async def list_streams(self, request: Request) -> Response:
        principal = self.principal(request, Scope.STREAMS_READ)
        streams = [
            _stats_json(s) for s in self.flow.streams() if principal.can_access_tenant(s.tenant)
        ]
        return JSONResponse({"streams": streams})

    async def status(self, request: Request) -> Response:
        principal = self.principal(request, Scope.STREAMS_READ)
        sid = request.path_params["stream_id"]
        try:
            stats = self.owned(principal, sid)
        except HttpError:
            gone = self.flow.finished(sid)
            if gone is None or not principal.can_access_tenant(gone.tenant):
                raise
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

    async def cancel(self, request: Request) -> Response:
        principal = self.principal(request, Scope.STREAMS_CANCEL)
        sid = request.path_params["stream_id"]
        stats = self.owned(principal, sid)
        if stats.state == "running":
            self.flow.cancel(sid)
        return JSONResponse(_stats_json(self.flow.lookup(sid) or stats))

    def _reader(self, request: Request, principal: Principal) -> Subscription | Response:
        """Attach a reader at the resume point, or the response that replaces it."""
        sid = request.path_params["stream_id"]
        try:
            from_seq = parse_resume_point(
                request.query_params.get("from_seq"), request.headers.get("last-event-id")
            )
        except ValueError as exc:
            raise HttpError(400, "bad_request", str(exc)) from None
        stats = self.flow.brief(sid)  # O(1): a thousand tabs may reconnect at once
        if stats is None:
            gone = self.flow.finished(sid)
            if gone is None or not principal.can_access_tenant(gone.tenant):
                raise HttpError(404, "not_found", "no such stream")
            if from_seq >= gone.next_seq:
                return Response(status_code=204)
            raise HttpError(410, "history_gone", "the stream ended and its history is gone")
        if not principal.can_access_tenant(stats.tenant):
            raise HttpError(404, "not_found", "no such stream")
        if stats.state != "running" and from_seq > stats.last_seq:
            return Response(status_code=204)  # the terminal was delivered: stop reconnecting
        try:
            return self.flow.subscribe(sid, from_seq, lag_limit=self.lag_limit)
        except StreamError as exc:
            if stats.state in ("cancelled", "failed"):
                # Its chunks were discarded by the cancel: the terminal is the news.
                return self.flow.subscribe(sid, None, lag_limit=self.lag_limit)
            raise HttpError(410, exc.code.value, exc.message) from None
        except ValueError as exc:
            raise HttpError(400, "bad_request", str(exc)) from None
        except KeyError:
            raise HttpError(404, "not_found", "no such stream") from None

    def _open_connection(
        self, request: Request, release: Callable[[], None]
    ) -> Callable[[str], None]:
        """Count a streaming response against the principal's connection limit.

        Returns what to call with the outcome when it ends.

        :raises HttpError: 429 over the limit (``release`` is called first).
        """
        key: str = request.state.limit_key
        retry = self.limiter.open_connection(key)
        if retry is not None:
            release()
            self.metrics.requests_limited.inc()
            raise HttpError(
                429, "too_many_connections", "connection limit", {"Retry-After": str(int(retry))}
            )
        self.metrics.connections.inc()

        def ended(outcome: str) -> None:
            self.limiter.close_connection(key)
            self.metrics.connections.dec()
            self.metrics.disconnects.labels(outcome).inc()

        return ended

    async def read(self, request: Request) -> Response:
        principal = self.principal(request, Scope.STREAMS_READ)
        reader = self._reader(request, principal)
        if isinstance(reader, Response):
            return reader
        connection_ended = self._open_connection(request, reader.close)
        fmt = WireFormat.negotiate(request.headers.get("accept"))
        gzip = "gzip" in request.headers.get("accept-encoding", "").lower()
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
            connection_ended(outcome)

        pump = StreamPump(
            reader,
            fmt,
            self.settings.pump,
            gzip=gzip,
            log=log,
            on_chunks=self._sent,
            on_end=ended,
        )
        return _AsgiResponse(pump)

    def _sent(self, first: StreamChunk, count: int, size: int) -> None:
        m = self.metrics
        m.chunks_sent += count
        m.bytes_sent += size
        m.chunk_latency.observe(max(0.0, (time.time_ns() - first.ts) / 1e9))
        if first.seq == 0:
            posted = self._posted_at.pop(first.stream_id)
            if posted is not None:
                m.time_to_first_token.observe(time.perf_counter() - posted)

    async def poll(self, request: Request) -> Response:
        principal = self.principal(request, Scope.STREAMS_READ)
        q = request.query_params
        try:
            raw_after = q.get("after_seq", "-1").strip()
            after = -1 if raw_after == "-1" else parse_resume_point(raw_after, None)
            wait_s = float(q.get("wait_s", "0"))
        except ValueError:
            raise HttpError(
                400, "bad_request", "after_seq must be -1 or a non-negative integer"
            ) from None
        if not 0 <= wait_s <= MAX_POLL_WAIT_S:
            raise HttpError(400, "bad_request", f"wait_s must be 0..{MAX_POLL_WAIT_S:g} seconds")
        sid = request.path_params["stream_id"]
        self.owned(principal, sid)
        try:
            reader = self.flow.subscribe(sid, after + 1, lag_limit=self.lag_limit)
        except StreamError as exc:
            raise HttpError(410, exc.code.value, exc.message) from None
        except (KeyError, ValueError):
            raise HttpError(404, "not_found", "no such stream or seq") from None
        try:
            return JSONResponse(await _poll(reader, wait_s))
        finally:
            reader.close()

    # -- WebSocket and topics --------------------------------------------------------

    async def websocket(self, scope: Any, receive: Any, send: Any) -> None:
        await serve_websocket(self, scope, receive, send)

    def ws_attach(self, session_id: str, conn: WsConnection) -> None:
        """``conn`` now holds the session; an older connection holding it is cut."""
        old = self._ws_live.get(session_id)
        self._ws_live[session_id] = conn
        if old is not None and old is not conn:
            old.take_over()

    def ws_detach(self, session_id: str, conn: WsConnection) -> None:
        if self._ws_live.get(session_id) is conn:
            del self._ws_live[session_id]

    async def publish(self, request: Request) -> Response:
        return await publish_topic(self, request, await _read_body(request))

    async def read_topic(self, request: Request) -> Response:
        sub, fmt = read_topic(self, request)
        ended = self._open_connection(request, sub.close)
        gzip = "gzip" in request.headers.get("accept-encoding", "").lower()
        encode = sse_event if fmt is WireFormat.SSE else ndjson_event
        pump = StreamPump(
            sub, fmt, self.settings.pump, gzip=gzip, take=take_events(encode), on_end=ended
        )
        return _AsgiResponse(pump)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if not self.flow.running:
            return error_response(503, "unavailable", "the flow is not running")
        if self.flow.congestion is CongestionState.OVERLOADED:
            # Tell load balancers to send new work elsewhere until load falls.
            return error_response(
                503, "overloaded", "the server is overloaded", {"Retry-After": "1"}
            )
        return JSONResponse({"status": "ready", **self._load_report()})

    def _load_report(self) -> dict[str, Any]:
        """The congestion state, its changes so far and how long it has held."""
        report: dict[str, Any] = {"load": self.flow.congestion.value, "transitions": 0}
        watch = self.flow.load
        if watch is not None:
            congestion = watch.statistics().congestion
            report["transitions"] = congestion.transitions
            if congestion.last_transition_at is not None:
                # LoadWatch samples with the loop's clock.
                held = asyncio.get_running_loop().time() - congestion.last_transition_at
                report["load_for_s"] = round(max(held, 0.0), 3)
        return report

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(OPENAPI)

    async def inspector(self, request: Request) -> Response:
        page = _STATIC / "inspector.html"
        if not page.exists():
            return HTMLResponse("<!doctype html><title>icefloe</title><p>icefloe</p>")
        return HTMLResponse(page.read_text(encoding="utf-8"))


async def _poll(reader: Subscription, wait_s: float) -> list[Any]:
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


def _stats_json(s: StreamStatistics) -> dict[str, Any]:
    return {
        "stream_id": s.stream_id,
        "tenant": s.tenant,
        "state": s.state,
        "last_seq": s.last_seq,
        "subscribers": s.subscribers,
        "code": s.code,
    }


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise HttpError(413, "too_large", f"request bodies are limited to {MAX_BODY} bytes")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY:
            raise HttpError(413, "too_large", f"request bodies are limited to {MAX_BODY} bytes")
    return bytes(body)


class _RawAsgi:
    """A raw ASGI callable for a route (Starlette wraps plain functions as handlers)."""

    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)


class _AsgiResponse(Response):
    """A starlette Response that hands the connection to a raw ASGI app."""

    def __init__(self, app: StreamPump) -> None:
        self._app = app
        self.background = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)


#: scope key holding the server's own ``send``, for streaming bodies
RAW_SEND = "icefloe.send"


class _EdgeApp(Starlette):
    """Starlette, plus the server's ``send`` kept in the scope.

    Streaming responses write their bodies with it, past the exception
    middlewares' ``send`` wrappers: those only watch for the response start
    (which still goes through them), and at a thousand clients a coroutine
    layer per write is a measurable share of the CPU.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        scope[RAW_SEND] = send
        await super().__call__(scope, receive, send)


def server_options(settings: EdgeSettings) -> dict[str, Any]:
    """The uvicorn ``Config`` options that enforce ``settings`` at the socket.

    The WebSocket frame limit (1009 above it), keepalive pings every
    heartbeat and a dead peer cut after one more heartbeat without a pong,
    and permessage-deflate when the client offers it.
    """
    beat = settings.pump.heartbeat_s
    return {
        "ws_max_size": settings.ws.max_frame,
        "ws_ping_interval": beat,
        "ws_ping_timeout": beat,
        "ws_per_message_deflate": True,
    }


def create_app(
    flow: Flow, settings: EdgeSettings | None = None, *, hub: Hub | None = None
) -> Starlette:
    """The ASGI app serving ``flow`` (and ``hub``: a fresh one when None) over HTTP
    and WebSocket; see docs/wire-protocol.md and docs/websocket.md."""
    owned_hub = hub is None
    install_protocol_log_filter()
    edge = _Edge(flow, settings or EdgeSettings(), hub or Hub())

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HttpError)
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    async def on_starlette_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    async def on_any_error(request: Request, exc: Exception) -> Response:
        return error_response(500, "internal", "internal error")

    routes = [
        Route("/", edge.inspector, methods=["GET"]),
        Route("/healthz", edge.healthz, methods=["GET"]),
        Route("/readyz", edge.readyz, methods=["GET"]),
        Route("/metrics", edge.metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", edge.openapi, methods=["GET"]),
        Route("/v1/streams", edge.start, methods=["POST"]),
        Route("/v1/streams", edge.list_streams, methods=["GET"]),
        Route("/v1/streams/{stream_id}", edge.read, methods=["GET"]),
        Route("/v1/streams/{stream_id}", edge.cancel, methods=["DELETE"]),
        Route("/v1/streams/{stream_id}/status", edge.status, methods=["GET"]),
        Route("/v1/streams/{stream_id}/poll", edge.poll, methods=["GET"]),
        Route("/v1/topics/{topic}", edge.publish, methods=["POST"]),
        Route("/v1/topics/{pattern}", edge.read_topic, methods=["GET"]),
        WebSocketRoute("/v1/ws", _RawAsgi(edge.websocket)),
    ]
    middleware = []
    if edge.settings.allow_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(edge.settings.allow_origins),
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["authorization", "content-type", "last-event-id"],
            )
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Run the flow in the server's loop when the caller has not.
        owned = not flow.running
        if owned:
            flow.run()
        try:
            yield
        finally:
            await edge.relays.aclose()
            if owned_hub:
                await edge.hub.aclose()
            if owned:
                await flow.stop()

    app = _EdgeApp(
        lifespan=lifespan,
        routes=routes,
        middleware=middleware,
        exception_handlers={
            HttpError: on_http_error,
            StarletteHTTPException: on_starlette_error,
            Exception: on_any_error,
        },
    )
    app.state.edge = edge
    return app
