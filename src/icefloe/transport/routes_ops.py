"""The operations routes: ``/healthz``, ``/readyz``, ``/metrics``,
``/openapi.json``, the inspector page at ``/`` and the browser client at
``/static/icefloe.js`` (with ``icefloe.d.ts``).

The probes, the API description and the inspector need no credentials: they
say whether the server lives and takes work, and what its API is. With
authentication on, ``/metrics`` needs the ``metrics`` scope (or ``admin``):
its series name tenants and carry every tenant's load, which a client of one
tenant must not read (docs/security.md, "Metrics and logs").
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from icefloe.core.congestion import CongestionState
from icefloe.core.wire_errors import ErrorCode
from icefloe.store.resilient import ResilientStore
from icefloe.transport.auth import NoAuth, Scope
from icefloe.transport.edge import EdgeContext
from icefloe.transport.errors import error_response
from icefloe.transport.openapi import OPENAPI

__all__ = ["OpsRoutes"]

_STATIC = Path(__file__).parent / "static"
#: the files ``GET /static/{name}`` serves, with their media types (nothing else)
STATIC_FILES = {
    "icefloe.js": "text/javascript; charset=utf-8",
    "icefloe.d.ts": "application/typescript; charset=utf-8",
}


class OpsRoutes:
    """Liveness, readiness, metrics, the API description and the inspector."""

    def __init__(self, edge: EdgeContext) -> None:
        self.edge = edge

    async def healthz(self, request: Request) -> Response:
        """Liveness: the process answers."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """Readiness: 503 until the flow runs, while it is overloaded, while
        its backplane (``--backplane``) does not answer, and from SIGTERM on
        (``draining``: the server hands its clients off and stops).

        A store outage keeps it 200 (``at_most_once`` runs go on, and a
        balancer that took every replica of a shared store out would stop
        them too) and says why durable starts are refused: ``store``.
        """
        flow = self.edge.flow
        if self.edge.drain.draining:  # lifecycle (issue 12): first, it never ends
            return error_response(ErrorCode.UNAVAILABLE, "draining", {"Retry-After": "1"})
        if not flow.running:
            return error_response(ErrorCode.UNAVAILABLE, "the flow is not running")
        backplane = self.edge.backplane  # -- backplane (issue 12) --
        if backplane is not None and not backplane.engine.healthy:
            return error_response(ErrorCode.UNAVAILABLE, "the backplane is unreachable")
        if flow.congestion is CongestionState.OVERLOADED:
            # Tell load balancers to send new work elsewhere until load falls.
            return error_response(
                ErrorCode.OVERLOADED, "the server is overloaded", {"Retry-After": "1"}
            )
        return JSONResponse({"status": "ready", **self._load_report(), **self._store_report()})

    def _store_report(self) -> dict[str, Any]:
        """``store``: ``{"available": bool, "reason"?}`` for a flow with a
        resilient store (its breaker open: why durable runs are refused)."""
        store = self.edge.flow.store
        if not isinstance(store, ResilientStore):
            return {}
        reason = store.unavailable_reason()
        if reason is None:
            return {"store": {"available": True}}
        return {"store": {"available": False, "reason": reason}}

    def _load_report(self) -> dict[str, Any]:
        """The congestion state, its changes so far and how long it has held."""
        flow = self.edge.flow
        report: dict[str, Any] = {"load": flow.congestion.value, "transitions": 0}
        watch = flow.load
        if watch is not None:
            congestion = watch.statistics().congestion
            report["transitions"] = congestion.transitions
            if congestion.last_transition_at is not None:
                # LoadWatch samples with the loop's clock.
                held = asyncio.get_running_loop().time() - congestion.last_transition_at
                report["load_for_s"] = round(max(held, 0.0), 3)
        return report

    async def metrics(self, request: Request) -> Response:
        """Prometheus text; with auth on, for principals with the ``metrics`` scope."""
        if not isinstance(self.edge.settings.authenticator, NoAuth):
            self.edge.principal(request, Scope.METRICS)  # raises 401, 403 or 429
        return Response(self.edge.metrics.render(), media_type="text/plain; version=0.0.4")

    async def openapi(self, request: Request) -> Response:
        """This API in OpenAPI 3.1."""
        return JSONResponse(OPENAPI)

    async def inspector(self, request: Request) -> Response:
        """The inspector page (a stub when the static file is not installed)."""
        page = _STATIC / "inspector.html"
        if not page.exists():
            return HTMLResponse("<!doctype html><title>icefloe</title><p>icefloe</p>")
        return HTMLResponse(page.read_text(encoding="utf-8"))

    async def static(self, request: Request) -> Response:
        """``GET /static/{name}``: the browser client and its TypeScript types."""
        name = request.path_params["name"]
        media = STATIC_FILES.get(name)
        path = _STATIC / name
        if media is None or not path.exists():
            return error_response(ErrorCode.NOT_FOUND, "no such file")
        # A short cache: the module changes with the server it talks to.
        headers = {"cache-control": "public, max-age=300"}
        return Response(path.read_bytes(), media_type=media, headers=headers)
