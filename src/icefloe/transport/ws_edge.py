"""What the WebSocket endpoint needs of the HTTP edge: :class:`WsEdge`.

The endpoint (:mod:`icefloe.transport.websocket` and its ``ws_*`` parts) is
handed the edge that ``create_app`` builds; it sees it through this protocol
only, so the edge's class stays its own business and the endpoint names every
service it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from icefloe.core.messages import Headers
    from icefloe.core.sessions import SessionTable
    from icefloe.hub import Hub
    from icefloe.runtime.flow import Flow
    from icefloe.transport.auth import Principal, Scope
    from icefloe.transport.backplane_edge import EdgeBackplane
    from icefloe.transport.drain import Drain
    from icefloe.transport.errors import HttpError
    from icefloe.transport.idempotency import Started
    from icefloe.transport.limits import PrincipalLimiter
    from icefloe.transport.metrics import EdgeMetrics
    from icefloe.transport.publish_budget import PublishBudget
    from icefloe.transport.topic_log import TopicLog
    from icefloe.transport.websocket import WsConnection
    from icefloe.transport.ws_settings import WsSettings

__all__ = ["WsEdge", "WsEdgeSettings"]


class WsEdgeSettings(Protocol):
    """The edge settings the WebSocket endpoint reads."""

    @property
    def allow_origins(self) -> tuple[str, ...]:
        """Browser origins allowed (empty: the server's own only)."""
        ...

    @property
    def ws(self) -> WsSettings:
        """The WebSocket limits."""
        ...


class WsEdge(Protocol):
    """The services of the HTTP edge a WebSocket connection uses."""

    @property
    def flow(self) -> Flow:
        """The flow whose streams the connections follow."""
        ...

    @property
    def hub(self) -> Hub:
        """The hub of ``publish`` and ``sub_topic``."""
        ...

    @property
    def settings(self) -> WsEdgeSettings:
        """Origins allowed and the WebSocket limits."""
        ...

    @property
    def metrics(self) -> EdgeMetrics:
        """Where connections and refusals are counted."""
        ...

    @property
    def publish_budget(self) -> PublishBudget:
        """Each tenant's loop time for hub publishes."""
        ...

    @property
    def limiter(self) -> PrincipalLimiter:
        """Per-principal connection limits."""
        ...

    @property
    def sessions(self) -> SessionTable:
        """Every WebSocket session of the server."""
        ...

    # -- backplane (issue 12) --
    @property
    def backplane(self) -> EdgeBackplane | None:
        """Streams and hub events shared with other gateways (None: none)."""
        ...

    @property
    def drain(self) -> Drain:
        """The gateway's drain (SIGTERM): connections enlist to be handed off."""
        ...

    @property
    def topic_log(self) -> TopicLog | None:
        """What numbers and keeps hub events published here (issues 11, 12; None: the hub)."""
        ...

    def host_denial(self, request: HTTPConnection) -> HttpError | None:
        """``bad_request`` for a ``Host`` not in ``allowed_hosts`` (DNS rebinding)."""
        ...

    def forwarded_proto(self, request: HTTPConnection) -> str | None:
        """The scheme a trusted proxy says the client used, if any."""
        ...

    def principal(self, request: HTTPConnection, scope: Scope | None) -> Principal:
        """Authenticate the handshake (``scope`` None: each op checks its own)."""
        ...

    async def start_run(
        self, principal: Principal, payload: Any, headers: Headers, idempotency_key: str | None
    ) -> tuple[Started, bool]:
        """Start a run for ``principal`` (the ``start`` op)."""
        ...

    def ws_attach(self, session_id: str, conn: WsConnection) -> None:
        """``conn`` now holds the session; an older connection holding it is cut."""
        ...

    def ws_detach(self, session_id: str, conn: WsConnection) -> None:
        """``conn`` no longer holds the session."""
        ...
