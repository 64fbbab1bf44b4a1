"""The ASGI app: ``create_app(flow, ...)`` serves docs/wire-protocol.md and docs/websocket.md.

This module wires the parts together: one
:class:`~icefloe.transport.edge.EdgeContext` (shared state and per-request
checks), the route modules over it (:mod:`~icefloe.transport.routes_streams`,
:mod:`~icefloe.transport.routes_topics`, :mod:`~icefloe.transport.routes_ops`,
:mod:`~icefloe.transport.routes_chat`),
the WebSocket endpoint, CORS, and the error handlers that turn every failure
into ``{"error": {"code", "message"}}`` with the status of its code
(:mod:`icefloe.core.wire_errors`).

``EdgeSettings.allowed_hosts`` (set by ``icefloe serve``/``demo`` to the
bound address and the loopback names) refuses requests whose ``Host`` header
names another server with 400: DNS rebinding. ``create_app`` with no setting
serves every ``Host``, as a mounted app whose parent checks it would.

CORS is on exactly when ``EdgeSettings.allow_origins`` is not empty (the
``--allow-origin`` flag): those origins may call every route from a page's
script, send ``Authorization``, ``Content-Type`` and ``Last-Event-ID``, and
read ``Location`` and ``Retry-After``; with a
:class:`~icefloe.transport.auth.CookieAuthenticator` they may also send the
cookie (``credentials: "include"``, ``withCredentials``).

Served on its own (``icefloe serve``, or uvicorn on the app) the app's
lifespan runs the flow. Mounted in a parent app, whose server never runs a
mounted app's lifespan, the parent runs it: ``FastAPI(lifespan=lifespan(edge))``
or ``async with running(edge):`` inside the parent's own lifespan
(docs/embedding.md).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import TYPE_CHECKING, Any, Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from icefloe.core.wire_errors import ErrorCode
from icefloe.hub import Hub
from icefloe.runtime.flow import Flow
from icefloe.transport.auth import (
    Authenticator,
    AuthError,
    CookieAuthenticator,
    KeyFetching,
    prepare,
    request_token,
)
from icefloe.transport.cluster import ClusterCollector, ClusterView, RunStats  # issue 12
from icefloe.transport.drain import DRAIN_SCOPE_KEY, Drain  # lifecycle (issue 12)
from icefloe.transport.edge import EdgeContext, EdgeSettings
from icefloe.transport.errors import HttpError, error_response
from icefloe.transport.logfilter import install_protocol_log_filter
from icefloe.transport.routes_chat import ChatRoutes
from icefloe.transport.routes_cluster import ClusterRoutes  # issue 12
from icefloe.transport.routes_events import EventRoutes
from icefloe.transport.routes_ops import OpsRoutes
from icefloe.transport.routes_streams import StreamRoutes
from icefloe.transport.routes_topics import TopicRoutes
from icefloe.transport.types import RAW_SEND, ASGIApp, Receive, Scope, Send
from icefloe.transport.websocket import serve_websocket

if TYPE_CHECKING:  # the connector is imported only when a push source is given
    from icefloe.connectors.pubsub_push import PushSource
    from icefloe.gateway import Gateway

__all__ = [
    "CORS_ALLOW_HEADERS",
    "CORS_EXPOSE_HEADERS",
    "NOT_RUNNING_HINT",
    "RAW_SEND",
    "EdgeApp",
    "EdgeSettings",
    "create_app",
    "lifespan",
    "running",
    "server_options",
]

#: request headers a cross-origin script may send (CORS)
CORS_ALLOW_HEADERS: Final = ("authorization", "content-type", "last-event-id")
#: response headers a cross-origin script may read, beside the CORS-safelisted
#: ones: where a started stream is, and when to retry a 429 or 503
CORS_EXPOSE_HEADERS: Final = ("Location", "Retry-After")

#: the 503 a request gets while the flow does not run (most often: the app
#: is mounted and nothing ran its lifespan)
NOT_RUNNING_HINT: Final = (
    "the flow is not running: an app mounted in another app does not run its own "
    "lifespan; give the parent app icefloe.transport.lifespan(edge_app) as its "
    "lifespan, or enter icefloe.transport.running(edge_app) in the parent's lifespan "
    "(see docs/embedding.md)"
)

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


class _FetchAuthKeys:
    """Lets the authenticator fetch keys (a JWKS) before a request is authenticated.

    The routes authenticate synchronously on the event loop; this awaits the
    fetch first (in a worker thread, see
    :class:`~icefloe.transport.principals.KeyFetching`), so a slow identity
    provider delays only the requests that need its keys.
    """

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self._app = app
        self._authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            conn = HTTPConnection(scope)
            try:
                token = request_token(
                    self._authenticator,
                    scope.get("method"),
                    conn.headers,
                    conn.query_params.get("access_token"),
                )
            except AuthError:
                token = None  # the route refuses it, with the reason
            await prepare(self._authenticator, token)
        await self._app(scope, receive, send)


class _HostCheck:
    """Answers 400 ``bad_request`` to an HTTP request whose ``Host`` is not in
    ``EdgeSettings.allowed_hosts`` (DNS rebinding: a page on another site whose
    name resolves to this server). The WebSocket endpoint checks it itself, so
    that its refusal goes through the handshake's denial response."""

    def __init__(self, app: ASGIApp, edge: EdgeContext) -> None:
        self._app = app
        self._edge = edge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            denial = self._edge.host_denial(HTTPConnection(scope))
            if denial is not None:
                await denial.response()(scope, receive, send)
                return
        await self._app(scope, receive, send)


class EdgeApp(Starlette):
    """The app :func:`create_app` returns: Starlette, plus the server's ``send``
    kept in the scope, and :meth:`running` for a parent app's lifespan.

    Streaming responses write their bodies with the raw ``send``, past the
    exception middlewares' ``send`` wrappers: those only watch for the
    response start (which still goes through them), and at a thousand
    clients a coroutine layer per write is a measurable share of the CPU.
    """

    def __init__(self, run: Callable[[], AbstractAsyncContextManager[None]], **kwargs: Any) -> None:
        # ``run`` is the lifespan body, shared by the server (the app served on
        # its own) and by a parent app (mounted; see running()).
        self._run = run
        #: the app's drain (issue 12), put in every scope for the streaming responses
        self.drain: Drain | None = None
        super().__init__(lifespan=lambda _app: run(), **kwargs)

    def running(self) -> AbstractAsyncContextManager[None]:
        """This app's lifespan as a context manager: the flow runs inside it
        (started here unless it already runs), and on leaving the stream
        relays stop, the hub :func:`create_app` made is closed, and a flow
        started here stops."""
        return self._run()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[RAW_SEND] = send
        scope[DRAIN_SCOPE_KEY] = self.drain
        await super().__call__(scope, receive, send)


@contextlib.asynccontextmanager
async def running(*apps: EdgeApp) -> AsyncIterator[None]:
    """Run the lifespans of ``apps`` (each from :func:`create_app`), in order,
    and end them in reverse: for the lifespan of a parent app they are
    mounted in."""
    async with AsyncExitStack() as stack:
        for app in apps:
            await stack.enter_async_context(app.running())
        yield


def lifespan(*apps: EdgeApp) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A lifespan for the parent app ``apps`` are mounted in::

        edge = create_app(flow)
        app = FastAPI(lifespan=lifespan(edge))
        app.mount("/icefloe", edge)

    A parent with a lifespan of its own enters :func:`running` in it instead.
    """
    return lambda _parent: running(*apps)


def server_options(settings: EdgeSettings) -> dict[str, Any]:
    """The uvicorn ``Config`` options that enforce ``settings`` at the socket.

    The WebSocket frame limit (1009 above it), keepalive pings every
    heartbeat and a dead peer cut after one more heartbeat without a pong,
    and permessage-deflate when the client offers it; uvicorn's proxy
    headers off, since the edge applies ``forwarded_allow_ips`` itself; and
    ``settings.connections`` (header limits, header and keep-alive timeouts,
    connection caps) through ``http=``: a protocol factory that counts each
    server's connections apart, so one dict may configure several servers.
    """
    beat = settings.pump.heartbeat_s
    # -- connection limits before authentication (issue 15, items 4-5) --
    from icefloe.transport.http_protocol import HttpProtocolFactory

    limits = settings.connections
    guarded = {
        # uvicorn's httptools protocol with header limits, header and idle
        # timeouts and connection caps (icefloe.transport.http_protocol).
        "http": HttpProtocolFactory(limits, settings.forwarded_allow_ips),
        # uvicorn's own idle timer after a response, kept equal to ours
        "timeout_keep_alive": limits.keep_alive_timeout_s,
    }
    # -- end of connection limits --
    return {
        **guarded,
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
    flow: Flow,
    settings: EdgeSettings | None = None,
    *,
    hub: Hub | None = None,
    pubsub_push: PushSource | None = None,
    gateway: Gateway | None = None,
    run_stats: RunStats | None = None,
) -> EdgeApp:
    """The ASGI app serving ``flow`` (and ``hub``: a fresh one when None) over HTTP
    and WebSocket; see docs/wire-protocol.md and docs/websocket.md.

    ``pubsub_push`` serves ``POST /v1/pubsub/push`` into that source
    (docs/connectors-pubsub.md). ``gateway`` runs its bridge routes in the
    app's lifespan, with this flow and hub, and serves ``/v1/routes``
    (docs/bridge.md). ``run_stats`` gives ``GET /v1/cluster`` and ``/metrics``
    the run queue's figures (docs/deploy.md, "Cluster view").

    Mounted in another app, it needs the parent to run its lifespan
    (:func:`lifespan`, :func:`running`); until the flow runs, requests that
    start work answer 503 with :data:`NOT_RUNNING_HINT`."""
    owned_hub = hub is None
    # whether the lifespan ever ran (a stopped flow's 503 needs no hint)
    entered = False
    install_protocol_log_filter()
    settings = settings or EdgeSettings()
    edge = EdgeContext(flow, settings, hub or Hub(settings.hub_limits))
    streams = StreamRoutes(edge)
    topics = TopicRoutes(edge)
    ops = OpsRoutes(edge)
    chat = ChatRoutes(edge)
    # -- cluster view (issue 12) --
    cluster = ClusterView(flow, edge.drain, address=settings.advertise, run_stats=run_stats)
    edge.metrics.registry.register(ClusterCollector(cluster))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HttpError)
        if exc.code is ErrorCode.UNAVAILABLE and not flow.running and not entered:
            # Never ran: most likely mounted without the parent running its lifespan.
            return error_response(exc.code, NOT_RUNNING_HINT, exc.headers)
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
        Route("/v1/cluster", ClusterRoutes(edge, cluster).get, methods=["GET"]),  # issue 12
        Route("/openapi.json", ops.openapi, methods=["GET"]),
        Route("/v1/streams", streams.start, methods=["POST"]),
        Route("/v1/streams", streams.list_streams, methods=["GET"]),
        Route("/v1/streams/{stream_id}", streams.read, methods=["GET"]),
        Route("/v1/streams/{stream_id}", streams.cancel, methods=["DELETE"]),
        Route("/v1/streams/{stream_id}/status", streams.status, methods=["GET"]),
        Route("/v1/streams/{stream_id}/poll", streams.poll, methods=["GET"]),
        Route("/v1/chat", chat.post, methods=["POST"]),
        Route("/v1/chat/{chat_id}/stream", chat.resume, methods=["GET"]),
        Route("/v1/chat/{chat_id}/stream", chat.stop, methods=["DELETE"]),
        Route("/v1/topics/{topic}", topics.publish, methods=["POST"]),
        Route("/v1/topics/{pattern}", topics.read, methods=["GET"]),
        Route("/v1/events", EventRoutes(edge).read, methods=["GET"]),
        Route("/static/{name}", ops.static, methods=["GET"]),
        WebSocketRoute("/v1/ws", _RawAsgi(functools.partial(serve_websocket, edge))),
    ]
    # -- Pub/Sub push endpoint (issue 13, connectors) --
    if pubsub_push is not None:
        from icefloe.connectors.pubsub_push import PUSH_PATH

        routes.append(Route(PUSH_PATH, pubsub_push.endpoint, methods=["POST"]))
    # -- end Pub/Sub push endpoint --
    # -- bridge routes (issue 13, gateways) --
    if gateway is not None:
        from icefloe.transport.routes_gateway import GatewayCollector, GatewayRoutes

        routes.extend(GatewayRoutes(edge, gateway).http_routes())
        edge.metrics.registry.register(GatewayCollector(gateway))
    # -- end bridge routes --
    middleware = []
    authenticator = edge.settings.authenticator
    # Host allow-list (--allowed-host): first, before CORS answers a preflight.
    if edge.settings.allowed_hosts:
        middleware.append(Middleware(_HostCheck, edge=edge))
    # CORS (--allow-origin): on only when origins are configured.
    if edge.settings.allow_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(edge.settings.allow_origins),
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=list(CORS_ALLOW_HEADERS),
                expose_headers=list(CORS_EXPOSE_HEADERS),
                # The cookie is sent cross-origin only if CORS allows credentials;
                # never for "*", which would let any site read with it.
                allow_credentials=isinstance(authenticator, CookieAuthenticator)
                and "*" not in edge.settings.allow_origins,
            )
        )
    # Keys (a JWKS) are fetched here, off the loop, before a route authenticates.
    if isinstance(authenticator, KeyFetching) and authenticator.fetches_keys:
        middleware.append(Middleware(_FetchAuthKeys, authenticator=authenticator))

    @contextlib.asynccontextmanager
    async def run_edge() -> AsyncIterator[None]:
        nonlocal entered
        entered = True
        # Run the flow in the server's loop when the caller has not.
        owned = not flow.running
        if owned:
            flow.run()
        stack = contextlib.ExitStack()  # what the lifespan installed, undone first
        try:
            if edge.backplane is not None:  # -- backplane (issue 12) --
                await edge.backplane.open()
            await cluster.open(edge.backplane)  # heartbeat (issue 12)
            if settings.drain_timeout_s is not None:  # lifecycle (issue 12)
                from icefloe.transport.drain_signal import SigtermDrain

                sigterm = SigtermDrain(edge, settings.drain_timeout_s)
                sigterm.install()
                stack.callback(sigterm.uninstall)
            if edge.topic_journal is not None:  # hub topic history in the store (issue 11)
                await edge.topic_journal.open()
            if gateway is None:
                yield
            else:  # bridge routes (issue 13): they share this flow and hub
                from icefloe.gateway import Served

                async with gateway.running(Served(flow, edge.hub)):
                    yield
        finally:
            stack.close()
            await cluster.aclose()
            if edge.topic_journal is not None:  # hub topic history in the store (issue 11)
                await edge.topic_journal.aclose()
            if edge.backplane is not None:  # -- backplane (issue 12) --
                await edge.backplane.aclose()
            await edge.relays.aclose()
            if owned_hub:
                await edge.hub.aclose()
            if owned:
                await flow.stop()

    app = EdgeApp(
        run_edge,
        routes=routes,
        middleware=middleware,
        exception_handlers={
            HttpError: on_http_error,
            StarletteHTTPException: on_starlette_error,
            Exception: on_any_error,
        },
    )
    app.state.edge = edge
    app.drain = edge.drain
    return app
