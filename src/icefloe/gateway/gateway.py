"""The gateway: the routes of one bridge config, run inside the served process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

from icefloe.gateway.config import BridgeConfig
from icefloe.gateway.kinds import Served
from icefloe.gateway.route import Route, RouteStatus, require_served

__all__ = ["LAG_EVERY_S", "Gateway"]

#: how often the running routes' sources are asked for their lag (``/metrics``)
LAG_EVERY_S: Final = 1.0


class Gateway:
    """Holds the routes of ``config``; :meth:`running` runs them.

    Served by ``icefloe serve --bridge`` (``create_app(..., gateway=)``) the
    routes share the edge's flow and hub, and ``/v1/routes`` manages them.
    """

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self._routes = {
            name: Route(
                name,
                route,
                backoff_s=config.restart_backoff_s,
                backoff_cap_s=config.restart_backoff_cap_s,
            )
            for name, route in config.routes.items()
        }
        self._served: Served | None = None

    def __repr__(self) -> str:
        return f"Gateway(routes={sorted(self._routes)})"

    def route(self, name: str) -> Route | None:
        return self._routes.get(name)

    def routes(self) -> list[Route]:
        """The routes, by name."""
        return [self._routes[name] for name in sorted(self._routes)]

    def statuses(self) -> list[RouteStatus]:
        return [route.status() for route in self.routes()]

    def start(self, name: str) -> Route | None:
        """Start route ``name`` (None: no such route).

        :raises InvalidState: the gateway is not running.
        """
        route = self._routes.get(name)
        if route is not None:
            route.start(require_served(self._served))
        return route

    async def _watch_lag(self) -> None:
        while True:
            for route in self.routes():
                await route.refresh_lag()
            await asyncio.sleep(LAG_EVERY_S)  # a periodic refresh, not synchronisation

    @contextlib.asynccontextmanager
    async def running(self, served: Served) -> AsyncIterator[None]:
        """Run the ``autostart`` routes against ``served``; stop every route on leaving."""
        self._served = served
        watch = asyncio.get_running_loop().create_task(self._watch_lag(), name="icefloe-route-lag")
        try:
            for route in self.routes():
                if route.config.autostart:
                    route.start(served)
            yield
        finally:
            self._served = None
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            for route in self.routes():
                await route.stop("the gateway stopped")
