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
        # The flag, not only the cancellation, ends the loop: a client library
        # that swallows a cancellation inside a lag query (seen with redis-py)
        # must not keep the watcher, and so the gateway's exit, alive.
        while self._served is not None:
            for route in self.routes():
                await route.refresh_lag()
            await asyncio.sleep(LAG_EVERY_S)  # a periodic refresh, not synchronisation

    @contextlib.asynccontextmanager
    async def _with_store(self, served: Served) -> AsyncIterator[Served]:
        """``served`` with the store sources keep their positions in: the config's
        ``store`` (opened here, closed on leaving), else the served flow's."""
        if self.config.store is None:
            flow = served.flow
            if served.store is None and flow is not None and flow.store is not None:
                served = served._replace(store=flow.store)
            yield served
            return
        from icefloe.store import MemoryStore, open_store
        from icefloe.store.resilient import ResilientStore

        store = open_store(self.config.store)
        if not isinstance(store, MemoryStore):
            store = ResilientStore(store)  # timeouts, retries, a breaker
        await store.open()
        try:
            yield served._replace(store=store)
        finally:
            await store.close()

    @contextlib.asynccontextmanager
    async def running(self, served: Served) -> AsyncIterator[None]:
        """Run the ``autostart`` routes against ``served``; stop every route on leaving.

        :raises StoreUnavailable: the config's ``store`` could not be opened.
        """
        async with self._with_store(served) as with_store, self._routes_running(with_store):
            yield

    @contextlib.asynccontextmanager
    async def _routes_running(self, served: Served) -> AsyncIterator[None]:
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
