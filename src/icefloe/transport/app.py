"""The ASGI app: ``create_app(flow, ...)`` serves the HTTP contract of DESIGN.md.

This module wires the parts together: one
:class:`~icefloe.transport.edge.EdgeContext` (shared state and per-request
checks), the route modules over it (:mod:`~icefloe.transport.routes_streams`,
:mod:`~icefloe.transport.routes_topics`, :mod:`~icefloe.transport.routes_ops`),
the WebSocket endpoint, CORS, and the error handlers that turn every failure
into ``{"error": {"code", "message"}}`` with the status of its code
(:mod:`icefloe.core.wire_errors`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Any, Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from icefloe.core.wire_errors import ErrorCode
from icefloe.hub import Hub
from icefloe.runtime.flow import Flow
from icefloe.transport.edge import EdgeContext, EdgeSettings
from icefloe.transport.errors import HttpError, error_response
from icefloe.transport.logfilter import install_protocol_log_filter
from icefloe.transport.routes_ops import OpsRoutes
from icefloe.transport.routes_streams import StreamRoutes
from icefloe.transport.routes_topics import TopicRoutes
from icefloe.transport.types import RAW_SEND, ASGIApp, Receive, Scope, Send
from icefloe.transport.websocket import serve_websocket

__all__ = ["RAW_SEND", "EdgeSettings", "create_app", "server_options"]

#: the code of an error Starlette raises itself (an unknown route or method)
_STARLETTE_CODES: Final = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
}


class _RawAsgi:
    """A raw ASGI callable for a route (Starlette wraps plain functions as handlers)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


class _EdgeApp(Starlette):
    """Starlette, plus the server's ``send`` kept in the scope.

    Streaming responses write their bodies with it, past the exception
    middlewares' ``send`` wrappers: those only watch for the response start
    (which still goes through them), and at a thousand clients a coroutine
    layer per write is a measurable share of the CPU.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[RAW_SEND] = send
        await super().__call__(scope, receive, send)


def server_options(settings: EdgeSettings) -> dict[str, Any]:
    """The uvicorn ``Config`` options that enforce ``settings`` at the socket.

    The WebSocket frame limit (1009 above it), keepalive pings every
    heartbeat and a dead peer cut after one more heartbeat without a pong,
    and permessage-deflate when the client offers it; uvicorn's proxy
    headers off, since the edge applies ``forwarded_allow_ips`` itself.
    """
    beat = settings.pump.heartbeat_s
    return {
        "ws_max_size": settings.ws.max_frame,
        "ws_ping_interval": beat,
        "ws_ping_timeout": beat,
        "ws_per_message_deflate": True,
        # The edge reads Forwarded/X-Forwarded-For itself, from the proxies in
        # settings.forwarded_allow_ips only; uvicorn's own rewrite (on for
        # 127.0.0.1 by default) would let a local client forge its address.
        "proxy_headers": False,
    }


def create_app(
    flow: Flow, settings: EdgeSettings | None = None, *, hub: Hub | None = None
) -> Starlette:
    """The ASGI app serving ``flow`` (and ``hub``: a fresh one when None) over HTTP
    and WebSocket; see docs/wire-protocol.md and docs/websocket.md."""
    owned_hub = hub is None
    install_protocol_log_filter()
    edge = EdgeContext(flow, settings or EdgeSettings(), hub or Hub())
    streams = StreamRoutes(edge)
    topics = TopicRoutes(edge)
    ops = OpsRoutes(edge)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HttpError)
        return exc.response()

    async def on_starlette_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _STARLETTE_CODES.get(exc.status_code, ErrorCode.BAD_REQUEST)
        return error_response(code, str(exc.detail), exc.headers)

    async def on_any_error(request: Request, exc: Exception) -> Response:
        return error_response(ErrorCode.INTERNAL, "internal error")

    routes = [
        Route("/", ops.inspector, methods=["GET"]),
        Route("/healthz", ops.healthz, methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route("/metrics", ops.metrics, methods=["GET"]),
        Route("/openapi.json", ops.openapi, methods=["GET"]),
        Route("/v1/streams", streams.start, methods=["POST"]),
        Route("/v1/streams", streams.list_streams, methods=["GET"]),
        Route("/v1/streams/{stream_id}", streams.read, methods=["GET"]),
        Route("/v1/streams/{stream_id}", streams.cancel, methods=["DELETE"]),
        Route("/v1/streams/{stream_id}/status", streams.status, methods=["GET"]),
        Route("/v1/streams/{stream_id}/poll", streams.poll, methods=["GET"]),
        Route("/v1/topics/{topic}", topics.publish, methods=["POST"]),
        Route("/v1/topics/{pattern}", topics.read, methods=["GET"]),
        WebSocketRoute("/v1/ws", _RawAsgi(functools.partial(serve_websocket, edge))),
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
