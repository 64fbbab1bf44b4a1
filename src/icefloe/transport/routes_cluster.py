"""``GET /v1/cluster``: the gateways and workers alive, their load, the runs.

With authentication on it needs the ``metrics`` scope (or ``admin``), as
``/metrics`` does: it lists every process's address and load. The backplane
unreachable (or the run queue's figures failing): ``503 unavailable``.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from icefloe.core.wire_errors import ErrorCode
from icefloe.transport.auth import NoAuth, Scope
from icefloe.transport.cluster import ClusterView
from icefloe.transport.edge import EdgeContext
from icefloe.transport.errors import HttpError

__all__ = ["ClusterRoutes"]

log = logging.getLogger("icefloe.cluster")


class ClusterRoutes:
    """The handler of ``/v1/cluster``."""

    def __init__(self, edge: EdgeContext, view: ClusterView) -> None:
        self.edge = edge
        self.view = view

    async def get(self, request: Request) -> Response:
        """The processes alive with their figures, the totals and the runs."""
        if not isinstance(self.edge.settings.authenticator, NoAuth):
            self.edge.principal(request, Scope.METRICS)  # raises 401, 403 or 429
        try:
            report = await self.view.report()
        except Exception as exc:
            # Most often the engine is away (readyz says so too), or the run
            # queue's provider failed: logged here, never sent to the client.
            log.warning("GET /v1/cluster failed: %r", exc)
            raise HttpError(ErrorCode.UNAVAILABLE, "the cluster view is unavailable") from None
        return JSONResponse(report)
