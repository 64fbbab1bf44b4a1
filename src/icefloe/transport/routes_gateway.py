"""Gateway management over HTTP: ``/v1/routes`` and the routes' ``/metrics`` series.

``GET /v1/routes`` lists the bridge's routes with their status;
``POST /v1/routes/{name}/start`` and ``/stop`` start and stop one. All three
need the ``admin`` scope when authentication is on: a route moves every
tenant's records, and its errors may name brokers. Unknown route: 404
``not_found``. Per-route series join ``/metrics`` (:class:`GatewayCollector`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as HttpRoute

from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import InvalidState
from icefloe.gateway import Gateway, Route, RouteStatus
from icefloe.transport.auth import Scope
from icefloe.transport.edge import EdgeContext
from icefloe.transport.errors import HttpError

__all__ = ["GatewayCollector", "GatewayRoutes", "route_json"]


def route_json(status: RouteStatus) -> dict[str, Any]:
    """The JSON of one route in ``GET /v1/routes``."""
    return {
        "name": status.name,
        "state": status.state.value,
        "reason": status.reason,
        "source": status.source,
        "sink": status.sink,
        "records_in": status.records_in,
        "records_out": status.records_out,
        "dead_letters": status.dead_letters,
        "filtered": status.filtered,
        "failures": status.failures,
        "lag": status.lag,
        "last_error": status.last_error,
    }


class GatewayRoutes:
    """The ``/v1/routes`` handlers."""

    def __init__(self, edge: EdgeContext, gateway: Gateway) -> None:
        self.edge = edge
        self.gateway = gateway

    def http_routes(self) -> list[HttpRoute]:
        return [
            HttpRoute("/v1/routes", self.list_routes, methods=["GET"]),
            HttpRoute("/v1/routes/{name}/start", self.start, methods=["POST"]),
            HttpRoute("/v1/routes/{name}/stop", self.stop, methods=["POST"]),
        ]

    async def list_routes(self, request: Request) -> Response:
        self.edge.principal(request, Scope.ADMIN)
        for route in self.gateway.routes():
            await route.refresh_lag()
        return JSONResponse({"routes": [route_json(s) for s in self.gateway.statuses()]})

    def _route(self, request: Request) -> Route:
        self.edge.principal(request, Scope.ADMIN)
        name = request.path_params["name"]
        route = self.gateway.route(name)
        if route is None:
            raise HttpError(ErrorCode.NOT_FOUND, f"no route named {name!r}")
        return route

    async def start(self, request: Request) -> Response:
        route = self._route(request)
        try:
            self.gateway.start(route.name)
        except InvalidState as exc:  # mounted, and the parent never ran the lifespan
            raise HttpError(ErrorCode.UNAVAILABLE, str(exc)) from None
        return JSONResponse(route_json(route.status()))

    async def stop(self, request: Request) -> Response:
        route = self._route(request)
        await route.stop()
        return JSONResponse(route_json(route.status()))


class GatewayCollector(Collector):
    """Per-route series: records in/out, dead letters, failures, lag, state."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        statuses = self._gateway.statuses()
        counters = (
            (
                "icefloe_route_records_in",
                "Records a bridge route took from its source",
                "records_in",
            ),
            ("icefloe_route_records_out", "Chunks a bridge route's sink confirmed", "records_out"),
            ("icefloe_route_dead_letters", "Poison records of a bridge route", "dead_letters"),
            ("icefloe_route_failures", "Times a bridge route failed", "failures"),
        )
        for metric, text, field in counters:
            family = CounterMetricFamily(metric, text, labels=["route"])
            for s in statuses:
                family.add_metric([s.name], getattr(s, field))
            yield family
        lag = GaugeMetricFamily(
            "icefloe_route_lag", "Records waiting at a bridge route's source", labels=["route"]
        )
        up = GaugeMetricFamily(
            "icefloe_route_running", "1 while a bridge route runs, else 0", labels=["route"]
        )
        for s in statuses:
            if s.lag is not None:
                lag.add_metric([s.name], s.lag)
            up.add_metric([s.name], 1 if s.state.value == "running" else 0)
        yield lag
        yield up
