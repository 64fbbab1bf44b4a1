"""The edge context: what every route module and the WebSocket endpoint share.

One :class:`EdgeContext` per app holds the flow, the hub, the settings and the
edge's own state (metrics, per-principal limits, WebSocket sessions, relays,
the run starter), and the checks every request goes through:

* :meth:`EdgeContext.principal` authenticates a request, counts it against
  its principal's rate (its own limits, if its key or token carries some;
  with auth off, the client address's, read through trusted proxies by
  :meth:`EdgeContext.client_address`) and checks its scope;
* :meth:`EdgeContext.owned` answers a stream the principal may see (another
  tenant's reads as missing);
* :meth:`EdgeContext.open_connection` counts a streaming response against
  the principal's connection limit.

Beside it, the two pieces of request plumbing every route module uses:
:func:`read_body` (the body, within :data:`MAX_BODY`) and
:class:`PumpResponse` (a streaming response handed to a
:class:`~icefloe.transport.streaming.StreamPump`).

The route modules (:mod:`~icefloe.transport.routes_streams`,
:mod:`~icefloe.transport.routes_topics`, :mod:`~icefloe.transport.routes_ops`)
and :mod:`~icefloe.transport.websocket` take this object and nothing else of
the app; :func:`~icefloe.transport.app.create_app` builds it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from icefloe.core.conntable import ConnectionLimits  # connection limits (issue 15, items 4-5)
from icefloe.core.messages import Headers
from icefloe.core.wire_errors import ErrorCode
from icefloe.hub import Hub, HubLimits
from icefloe.runtime.flow import Flow
from icefloe.runtime.stream_types import StreamStatistics
from icefloe.transport.auth import (
    Authenticator,
    AuthError,
    NoAuth,
    Principal,
    Scope,
    request_token,
)
from icefloe.transport.drain import Drain  # lifecycle (issue 12)
from icefloe.transport.errors import HttpError
from icefloe.transport.forwarded import TrustedProxies
from icefloe.transport.idempotency import Started
from icefloe.transport.limits import EdgeLimits, PrincipalLimiter, PrincipalLimits
from icefloe.transport.metrics import EdgeMetrics
from icefloe.transport.publish_budget import DEFAULT_SHARE, PublishBudget
from icefloe.transport.relays import StreamRelays
from icefloe.transport.runs import RunStarter
from icefloe.transport.streaming import PumpSettings, StreamPump
from icefloe.transport.types import Receive, Send
from icefloe.transport.types import Scope as AsgiScope
from icefloe.transport.ws_keeper import session_table
from icefloe.transport.ws_settings import WsSettings

if TYPE_CHECKING:
    from icefloe.transport.backplane_edge import EdgeBackplane
    from icefloe.transport.topic_journal import TopicJournal
    from icefloe.transport.topic_log import TopicLog
    from icefloe.transport.websocket import WsConnection

__all__ = [
    "LOOPBACK_HOSTS",
    "MAX_BODY",
    "EdgeContext",
    "EdgeSettings",
    "PumpResponse",
    "host_allowed",
    "read_body",
]

#: largest request body accepted, bytes
MAX_BODY = 1024 * 1024

#: the names a loopback server is reached by, beside its bound address
#: (``icefloe serve``/``demo`` allow them by default, any port)
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def _split_host(text: str) -> tuple[str, str | None]:
    """``name[:port]`` (name lowercased, an IPv6 address in brackets) as (name, port)."""
    text = text.strip().lower()
    if text.startswith("["):
        name, _, rest = text.partition("]")
        name += "]"
        port = rest[1:] if rest.startswith(":") else None
    elif text.count(":") > 1:  # a bare IPv6 address (a bound address like ::1)
        name, port = f"[{text}]", None
    else:
        name, sep, port_text = text.partition(":")
        port = port_text if sep else None
    return name.rstrip("."), port or None


def host_allowed(host: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a request's ``Host`` header names this server.

    ``allowed`` holds ``name`` (any port), ``name:port`` (that port) or ``*``
    (any host); empty allows every host (an app made by ``create_app`` with
    no setting). A missing ``Host`` is refused when a list is set: every
    browser sends one, and so does every HTTP/1.1 client.
    """
    if not allowed or "*" in allowed:
        return True
    if not host:
        return False
    name, port = _split_host(host)
    for entry in allowed:
        want_name, want_port = _split_host(entry)
        if name == want_name and (want_port is None or want_port == port):
            return True
    return False


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
    #: proxies whose ``Forwarded`` / ``X-Forwarded-For`` name the client address
    #: (addresses, CIDR networks or ``*``; empty: the peer is the client)
    forwarded_allow_ips: tuple[str, ...] = ()
    #: browser origins allowed by CORS (empty: CORS off)
    allow_origins: tuple[str, ...] = ()
    #: ``Host`` headers served, against DNS rebinding: ``name`` (any port),
    #: ``name:port`` or ``*``; others get 400 (HTTP and WebSocket). Empty:
    #: every host (``create_app`` alone); ``icefloe serve``/``demo`` set the
    #: bound address and :data:`LOOPBACK_HOSTS`, plus ``--allowed-host``.
    allowed_hosts: tuple[str, ...] = ()
    #: seconds an idempotency key is remembered
    idempotency_ttl_s: float = 600.0
    #: idempotency keys remembered at most
    idempotency_max: int = 100_000
    #: seconds a running stream may go without any reader before it is
    #: cancelled, so runs nobody reads do not hold node workers (None: never)
    unread_timeout_s: float | None = 60.0
    #: the WebSocket edge: window, frame limit, sessions
    ws: WsSettings = field(default_factory=WsSettings)
    # -- connection limits before authentication (issue 15, items 4-5) --
    #: header size and count, header and keep-alive timeouts, connections per
    #: address and in all; enforced at the socket by the protocol
    #: ``server_options`` gives uvicorn (docs/security.md, "Connections and headers")
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)
    # -- end of connection limits --
    #: the fraction of one core each tenant's hub publishes may take, on
    #: average (None: no limit; docs/security.md, "Hub subscriptions and filters")
    publish_share: float | None = DEFAULT_SHARE
    #: the limits of the hub ``create_app`` makes when given none (tenant
    #: budgets, idle topics: docs/security.md, "Hub budgets")
    hub_limits: HubLimits = field(default_factory=HubLimits)
    # -- backplane (issue 12) --
    #: ``redis://host:port/db[?prefix=P]``: share streams with the other
    #: gateways on this engine (None: this process alone; docs/deploy.md)
    backplane: str | None = None
    #: queue starts for ``icefloe worker`` processes instead of running them
    #: here (``--no-runs``; needs ``backplane``; docs/deploy.md, "Workers")
    no_runs: bool = False
    #: ``host:port`` this gateway is reached at, listed by ``GET /v1/cluster``
    advertise: str | None = None
    #: served by uvicorn: SIGTERM drains for at most this many seconds, then
    #: stops (None: uvicorn's own SIGTERM, an immediate stop; docs/deploy.md)
    drain_timeout_s: float | None = None
    # -- end of backplane --
    # -- hub topic history in the store (issue 11) --
    #: a durable store URL (``sqlite:``, ``redis:``, ``postgresql:``) keeping
    #: the hub's topic history across restarts (None: memory only; with a
    #: backplane, the engine numbers and keeps topics instead; docs/reliability.md)
    topic_store: str | None = None
    # -- end of hub topic history --

    def __post_init__(self) -> None:
        if self.no_runs and self.backplane is None:
            raise ValueError("no_runs needs a backplane: the workers take starts from it")
        if not isinstance(self.history, int) or self.history < 0:
            raise ValueError(f"history must be an int >= 0, got {self.history!r}")
        if not isinstance(self.stream_window, int) or self.stream_window < 1:
            raise ValueError(f"stream_window must be an int >= 1, got {self.stream_window!r}")
        if self.drain_timeout_s is not None and not self.drain_timeout_s >= 0:
            raise ValueError(f"drain_timeout_s must be >= 0 or None, got {self.drain_timeout_s!r}")
        if self.unread_timeout_s is not None and not self.unread_timeout_s > 0:
            raise ValueError(f"unread_timeout_s must be > 0 or None, got {self.unread_timeout_s!r}")
        TrustedProxies(self.forwarded_allow_ips)  # refuse a bad entry now, not per request
        for entry in self.allowed_hosts:
            if not isinstance(entry, str) or not entry.strip():
                raise ValueError(f"allowed_hosts entries must be host names, got {entry!r}")


class EdgeContext:
    """One app's shared state, and the checks every request goes through."""

    def __init__(self, flow: Flow, settings: EdgeSettings, hub: Hub) -> None:
        self.flow = flow
        self.hub = hub
        self.settings = settings
        self.metrics = EdgeMetrics(flow, hub, max_posted=settings.idempotency_max)
        self.limiter = PrincipalLimiter(settings.edge_limits)
        #: each tenant's loop time spent on hub publishes
        self.publish_budget = PublishBudget(settings.publish_share)
        self.proxies = TrustedProxies(settings.forwarded_allow_ips)
        #: chunks a network reader may hold its stream back at most: never more
        #: than the history it could resume from (see Subscription lag limits)
        self.lag_limit = max(settings.history, 1)
        # Kept in the flow's store when it has one (issue 11: resumes survive restarts).
        self.sessions = session_table(
            flow, settings.ws.session_ttl_s, settings.ws.max_sessions, time.monotonic
        )
        #: streams started with ``headers.topic``, relayed into the hub while they run
        self.relays = StreamRelays(flow, hub)
        self.runs = RunStarter(
            flow,
            self.relays,
            self.metrics,
            history=settings.history,
            window=settings.stream_window,
            unread_timeout_s=settings.unread_timeout_s,
            idempotency_ttl_s=settings.idempotency_ttl_s,
            idempotency_max=settings.idempotency_max,
        )
        # -- backplane (issue 12) --
        #: streams shared with other gateways (None: no --backplane)
        self.backplane: EdgeBackplane | None = None
        if settings.backplane is not None:
            from icefloe.transport.backplane_edge import EdgeBackplane

            self.backplane = EdgeBackplane(
                flow,
                hub,
                settings.backplane,
                history=settings.history,
                window=self.lag_limit,
                no_runs=settings.no_runs,
                idempotency_ttl_s=settings.idempotency_ttl_s,
            )
            self.runs.readers_elsewhere = self.backplane.readers_elsewhere
            if settings.no_runs:  # workers run the starts (issue 12)
                self.runs.queue_start = self.backplane.enqueue
                flow.recover_at_start = False  # the workers settle the store's runs
            if self.backplane.redis is not None:
                # Sessions, idempotency keys and tenant caps shared through
                # Redis; on NATS they stay per gateway (docs/deploy.md).
                self.runs.claims = self.backplane.claims
                self.runs.admission = self.backplane
                # WebSocket sessions in the backplane's Redis: they resume on any gateway.
                self.sessions = session_table(
                    flow,
                    settings.ws.session_ttl_s,
                    settings.ws.max_sessions,
                    time.monotonic,
                    keeper=self.backplane,
                )
                self.backplane.on_session_taken(self._ws_taken_elsewhere)
        # -- end of backplane --
        # -- lifecycle (issue 12): SIGTERM drains; with a backplane the
        # clients can resume on another gateway at once --
        self.drain = Drain(hand_off_at_once=settings.backplane is not None)
        # -- topics numbered by a log (issues 11, 12: transport/topic_log.py) --
        #: where edge publishes go when not straight into the hub
        self.topic_log: TopicLog | None = self.backplane
        self.topic_journal: TopicJournal | None = None
        if self.backplane is None and settings.topic_store is not None:
            from icefloe.store.topics import open_topic_store
            from icefloe.transport.topic_journal import TopicJournal

            store = open_topic_store(settings.topic_store)
            if store is not None:
                self.topic_log = self.topic_journal = TopicJournal(hub, store)
        if self.topic_log is not None:
            self.relays.publish = self.topic_log.publish
        # -- end of topics numbered by a log --
        # The live connection of each attached WebSocket session.
        self._ws_live: dict[str, WsConnection] = {}

    def principal(self, request: HTTPConnection, scope: Scope | None) -> Principal:
        """Authenticate, count the request against the principal's rate, check ``scope``.

        ``scope`` None checks authentication only (the WebSocket handshake:
        each op checks its own scope).

        :raises HttpError: ``unauthorized``, ``forbidden`` or ``rate_limited``.
        """
        authenticator = self.settings.authenticator
        if isinstance(authenticator, NoAuth):
            # Auth off: no credentials to parse; limits apply per client address.
            principal = authenticator.authenticate(None)
            key = self._address_key(request)
            tenant: str | None = None  # no tenants: no tenant layer
        else:
            try:
                token = request_token(
                    authenticator,
                    request.scope.get("method"),
                    request.headers,
                    request.query_params.get("access_token"),
                )
                principal = authenticator.authenticate(token)
            except AuthError as exc:
                # Failed attempts count against the client address, so guessing
                # credentials is rate limited like any other request.
                self._check_rate(self._address_key(request), None)
                challenge = exc.code is ErrorCode.UNAUTHORIZED
                headers = {"WWW-Authenticate": "Bearer"} if challenge else None
                raise HttpError(exc.code, str(exc), headers) from None
            key = f"{principal.tenant}\x00{principal.subject}"
            tenant = principal.tenant
        request.state.limit_key = key
        request.state.limits = principal.limits
        # open_connection (HTTP here, the WebSocket handshake through the
        # limiter) uses the limits (and tenant) of the principal's last
        # request: this one.
        self._check_rate(key, principal.limits, tenant)
        if scope is not None and not principal.has(scope):
            raise HttpError(ErrorCode.FORBIDDEN, f"missing scope {scope.value}")
        return principal

    def host_denial(self, request: HTTPConnection) -> HttpError | None:
        """``bad_request`` when the ``Host`` header is not in ``allowed_hosts``:
        a page on another site whose name resolves to this server (DNS
        rebinding) must not reach it."""
        if host_allowed(request.headers.get("host"), self.settings.allowed_hosts):
            return None
        return HttpError(ErrorCode.BAD_REQUEST, "host not allowed")

    def forwarded_proto(self, request: HTTPConnection) -> str | None:
        """The scheme a trusted proxy says the client used (``X-Forwarded-Proto``,
        or ``proto=`` of the first ``Forwarded`` element); None from any other peer."""
        client = request.client
        if client is None or not self.proxies or not self.proxies.trusts(client.host):
            return None
        proto = request.headers.get("x-forwarded-proto")
        if proto is not None:
            return proto.split(",", 1)[0].strip()
        for pair in request.headers.get("forwarded", "").split(",", 1)[0].split(";"):
            name, _, value = pair.partition("=")
            if name.strip().lower() == "proto":
                return value.strip().strip('"')
        return None

    def client_address(self, request: HTTPConnection) -> str | None:
        """The client's address: the peer's, or the one a trusted proxy forwards for."""
        client = request.client
        return self.proxies.client_host(
            client.host if client else None,
            request.headers.get("forwarded"),
            request.headers.get("x-forwarded-for"),
        )

    def _address_key(self, request: HTTPConnection) -> str:
        return f"addr\x00{self.client_address(request) or '?'}"

    def _check_rate(
        self, key: str, limits: PrincipalLimits | None, tenant: str | None = None
    ) -> None:
        retry = self.limiter.check_request(key, limits, tenant=tenant)
        if retry is not None:
            self.metrics.requests_limited.inc()
            raise HttpError(
                ErrorCode.RATE_LIMITED, "too many requests", {"Retry-After": str(int(retry))}
            )

    def owned(self, principal: Principal, stream_id: str) -> StreamStatistics:
        """The stream's statistics if it exists and the principal may see it.

        Another tenant's stream answers ``not_found``, as if it did not exist.
        """
        stats = self.flow.lookup(stream_id)
        if stats is None or not principal.can_access_tenant(stats.tenant):
            raise HttpError(ErrorCode.NOT_FOUND, "no such stream")
        return stats

    def open_connection(
        self, request: HTTPConnection, release: Callable[[], None]
    ) -> Callable[[str], None]:
        """Count a streaming response against the principal's connection limit.

        Returns what to call with the outcome when it ends.

        :raises HttpError: ``limit_exceeded`` over the limit (``release`` is
            called first).
        """
        key: str = request.state.limit_key
        retry = self.limiter.open_connection(key, request.state.limits)
        if retry is not None:
            release()
            self.metrics.requests_limited.inc()
            raise HttpError(
                ErrorCode.LIMIT_EXCEEDED, "connection limit", {"Retry-After": str(int(retry))}
            )
        self.metrics.connections.inc()

        def ended(outcome: str) -> None:
            self.limiter.close_connection(key)
            self.metrics.connections.dec()
            self.metrics.disconnects.labels(outcome).inc()

        return ended

    async def start_run(
        self, principal: Principal, payload: Any, headers: Headers, idempotency_key: str | None
    ) -> tuple[Started, bool]:
        """Start a run for ``principal`` (HTTP POST and WebSocket ``start``);
        see :meth:`RunStarter.start`."""
        if self.drain.draining:  # lifecycle (issue 12)
            raise HttpError(
                ErrorCode.UNAVAILABLE,
                "draining: this gateway is shutting down, start the run on another",
                {"Retry-After": "1"},
            )
        started, new = await self.runs.start(principal, payload, headers, idempotency_key)
        if new and self.backplane is not None:  # -- backplane (issue 12) --
            self.backplane.started(started.stream_id, headers.tenant)
        return started, new

    def ws_attach(self, session_id: str, conn: WsConnection) -> None:
        """``conn`` now holds the session; an older connection holding it is cut."""
        old = self._ws_live.get(session_id)
        self._ws_live[session_id] = conn
        if old is not None and old is not conn:
            old.take_over()

    def _ws_taken_elsewhere(self, session_id: str) -> None:
        """Another gateway resumes the session: its connection here ends (4000)
        and parks it, writing its last acks for the other gateway to read."""
        conn = self._ws_live.get(session_id)
        if conn is not None:
            conn.resumed_elsewhere()

    def ws_detach(self, session_id: str, conn: WsConnection) -> None:
        """``conn`` no longer holds the session (a newer one may)."""
        if self._ws_live.get(session_id) is conn:
            del self._ws_live[session_id]


async def read_body(request: Request) -> bytes:
    """The request body, at most :data:`MAX_BODY` bytes.

    :raises HttpError: ``too_large`` past the limit (declared or read).
    """
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise HttpError(ErrorCode.TOO_LARGE, f"request bodies are limited to {MAX_BODY} bytes")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY:
            raise HttpError(ErrorCode.TOO_LARGE, f"request bodies are limited to {MAX_BODY} bytes")
    return bytes(body)


class PumpResponse(Response):
    """A Starlette response that hands the connection to a :class:`StreamPump`."""

    def __init__(self, pump: StreamPump) -> None:
        # Response.__init__ is skipped on purpose: the pump writes the headers.
        self._pump = pump
        self.background = None

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        await self._pump(scope, receive, send)
