"""How ``icefloe serve``'s flags become settings: limits, hosts and the store.

Each function takes the parsed values of one concern's flags and returns
the :class:`~icefloe.transport.edge.EdgeSettings` (or sets up the flow)
they describe, refusing a bad value with a :class:`typer.BadParameter`
that names its flag. docs/security.md has every limit, its default and
what a client sees at it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from icefloe.core import conntable

if TYPE_CHECKING:
    from icefloe.gateway import Gateway
    from icefloe.runtime.flow import Flow
    from icefloe.transport.app import EdgeSettings

__all__ = [
    "SocketFlags",
    "allowed_hosts",
    "edge_limits",
    "hub_budgets",
    "hub_subscriber_caps",
    "off_or",
    "raise_fd_limit",
    "socket_limits",
    "tenant_limits",
    "use_store",
]

err = Console(stderr=True, highlight=False)


# -- edge limits behind a proxy (issue 16, docs/security.md) ----------------------


def off_or(text: str, convert: type[int] | type[float], flag: str) -> int | float | None:
    """A limit flag's value: ``None`` for ``0`` or ``off``, else a number > 0."""
    if text.strip().lower() in ("off", "0", "0.0", "none"):
        return None
    try:
        value = convert(text)
    except ValueError:
        raise typer.BadParameter(
            f"expected a number or 'off', got {text!r}", param_hint=flag
        ) from None
    if not (value > 0 and math.isfinite(value)):
        raise typer.BadParameter(f"expected a number > 0 or 'off', got {text!r}", param_hint=flag)
    return value


def edge_limits(
    settings: EdgeSettings,
    max_connections: str,
    requests_per_s: str,
    request_burst: int,
    forwarded_allow_ips: str,
) -> EdgeSettings:
    from icefloe.transport.forwarded import TrustedProxies
    from icefloe.transport.limits import EdgeLimits

    cap = off_or(max_connections, int, "--max-connections")
    rate = off_or(requests_per_s, float, "--requests-per-s")
    limits = dataclasses.replace(
        settings.edge_limits,
        max_connections=None if cap is None else int(cap),
        requests_per_s=rate,
        request_burst=request_burst,
    )
    entries = tuple(part.strip() for part in forwarded_allow_ips.split(",") if part.strip())
    try:
        TrustedProxies(entries)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--forwarded-allow-ips") from None
    assert isinstance(limits, EdgeLimits)
    return dataclasses.replace(settings, edge_limits=limits, forwarded_allow_ips=entries)


# -- admission (issue 15, item 3) ------------------------------------------------------


def tenant_limits(
    settings: EdgeSettings, requests_per_s: str, request_burst: int, max_connections: str
) -> EdgeSettings:
    """The ``--tenant-*`` flags: the tenant layer over the per-principal limits."""
    rate = off_or(requests_per_s, float, "--tenant-requests-per-s")
    cap = off_or(max_connections, int, "--tenant-max-connections")
    limits = dataclasses.replace(
        settings.edge_limits,
        tenant_requests_per_s=rate,
        tenant_request_burst=request_burst,
        tenant_max_connections=None if cap is None else int(cap),
    )
    return dataclasses.replace(settings, edge_limits=limits)


# -- end of admission --------------------------------------------------------------------


def raise_fd_limit() -> None:
    """Lift the soft open-files limit to the hard one: every streaming reader
    holds a socket, and a 1024 soft limit would cap a server near 1,000 readers."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))


# -- end of edge limits ----------------------------------------------------------------


# -- Host allow-list against DNS rebinding (issue 15, item 7) --------------------------


def allowed_hosts(settings: EdgeSettings, host: str, extra: list[str]) -> EdgeSettings:
    """The bound address and the loopback names (any port), plus ``extra``."""
    from icefloe.transport.edge import LOOPBACK_HOSTS

    if host in ("0.0.0.0", "::", "") and not extra:
        err.print(
            f"[yellow]bound to {host or 'every interface'}[/yellow]: only requests naming "
            "this address or localhost in their Host header are served; "
            "add --allowed-host NAME for the names clients use (or * for any)"
        )
    bound = (host,) if host else ()
    return dataclasses.replace(settings, allowed_hosts=(*bound, *LOOPBACK_HOSTS, *extra))


# -- end of Host allow-list ------------------------------------------------------------


# -- hub subscriber caps (issue 15, item 2) ---------------------------------------


def hub_subscriber_caps(
    settings: EdgeSettings, per_tenant: str, filter_cost: str, topic_subs: int
) -> EdgeSettings:
    """The hub limits of ``--max-subscribers-per-tenant`` and
    ``--max-filter-cost-per-tenant``, and the connection cap of ``--max-topic-subs``."""
    cap = off_or(per_tenant, int, "--max-subscribers-per-tenant")
    cost = off_or(filter_cost, int, "--max-filter-cost-per-tenant")
    try:
        limits = dataclasses.replace(
            settings.hub_limits,
            max_subscribers_per_tenant=None if cap is None else int(cap),
            max_filter_cost_per_tenant=None if cost is None else int(cost),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--max-subscribers-per-tenant") from None
    ws = dataclasses.replace(settings.ws, max_topic_subs=topic_subs)
    return dataclasses.replace(settings, hub_limits=limits, ws=ws)


# -- end of hub subscriber caps ---------------------------------------------------


# -- socket limits (issue 15, items 4-5) ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SocketFlags:
    """The connection and header flags of ``serve`` (docs/security.md)."""

    max_header_bytes: int
    max_headers: int
    header_timeout: float
    keep_alive_timeout: float
    max_connections_per_address: str
    max_open_connections: int | None


def socket_limits(settings: EdgeSettings, flags: SocketFlags) -> EdgeSettings:
    per_address = off_or(flags.max_connections_per_address, int, "--max-connections-per-address")
    limits = conntable.ConnectionLimits(
        max_header_bytes=flags.max_header_bytes,
        max_headers=flags.max_headers,
        header_timeout_s=flags.header_timeout,
        keep_alive_timeout_s=flags.keep_alive_timeout,
        max_per_address=None if per_address is None else int(per_address),
        max_open=flags.max_open_connections,
    )
    return dataclasses.replace(settings, connections=limits)


# -- end of socket limits --------------------------------------------------------------


# -- hub budgets (issue 15, item 1) -----------------------------------------------------


def hub_budgets(
    settings: EdgeSettings, bytes_per_tenant: str, topics_per_tenant: str, topic_idle: float
) -> EdgeSettings:
    """The hub's tenant budgets and idle-topic eviction (docs/security.md, "Hub budgets")."""
    size = off_or(bytes_per_tenant, int, "--hub-bytes-per-tenant")
    topics = off_or(topics_per_tenant, int, "--hub-topics-per-tenant")
    try:
        limits = dataclasses.replace(
            settings.hub_limits,
            max_bytes_per_tenant=None if size is None else int(size),
            max_topics_per_tenant=None if topics is None else int(topics),
            topic_idle_s=topic_idle,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return dataclasses.replace(settings, hub_limits=limits)


# -- end of hub budgets ----------------------------------------------------------------
# -- the store of durable runs (issue 11, docs/reliability.md) --------------------------


def use_store(flow: Flow, url: str) -> None:
    """Give ``flow`` the store ``--store`` names (a flow built with one keeps its own)."""
    from icefloe.store import open_store
    from icefloe.store.memory import MemoryStore
    from icefloe.store.resilient import ResilientStore

    if flow.store is not None:
        if url != "memory://":
            raise typer.BadParameter("the flow was created with a store", param_hint="--store")
        return
    try:
        store = open_store(url)
    except (ValueError, ImportError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--store") from None
    # Timeouts, retries with a budget and a circuit breaker for a store that can fail.
    flow.use_store(store if isinstance(store, MemoryStore) else ResilientStore(store))


# -- end of the store ----------------------------------------------------------------------


# -- bridge routes (issue 13, gateways; docs/bridge.md) -------------------------------------
def load_gateway(path: Path, *, standalone: bool = False) -> Gateway:
    """The gateway of the bridge config at ``path``; a bad config exits 2 with its error.

    ``standalone`` (``icefloe bridge``): no edge is served, so the built-in
    ``hub`` and ``streams`` endpoints are refused.
    """
    from icefloe.gateway import ConfigError, Gateway, load_config

    try:
        config = load_config(path)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if standalone:
        for name, route in config.routes.items():
            for role, table in (("source", route.source), ("sink", route.sink)):
                if table.get("kind") in ("hub", "streams"):
                    err.print(
                        f"[red]route {name!r}: {role}.kind: {table['kind']!r} needs the served "
                        "edge: run it with icefloe serve --bridge[/red]"
                    )
                    raise typer.Exit(2)
    return Gateway(config)


async def run_bridge(gateway: Gateway, *, report_every_s: float = 10.0) -> None:
    """Run ``gateway``'s routes alone until SIGTERM/SIGINT, printing their status now and then.

    A signal stops the routes in order (their acks flushed, clients closed).
    """
    import asyncio
    import signal

    from icefloe.gateway import Served

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # no edge: load_gateway(standalone=True) refused the hub and streams kinds
    async with gateway.running(Served(None, None)):
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), report_every_s)
                break
            for s in gateway.statuses():
                err.print(
                    f"route {s.name}: {s.state.value} in={s.records_in} out={s.records_out} "
                    f"dead={s.dead_letters} failures={s.failures} {s.reason}"
                )


# -- end of bridge routes -------------------------------------------------------------------
