"""``icefloe``: the command line.

``icefloe serve module:flow`` serves a flow over HTTP; ``icefloe demo`` serves
the built-in simulated LLM with the inspector page; ``icefloe tail URL``
prints a stream live and resumes after a disconnect; ``icefloe --version``.
``serve``'s signature lives here (typer reads it); the other commands live in
their own modules (``demo``, ``bridge``, ``tail_command``, ``worker``), each
adding itself to :data:`app` with ``register``.

The console script is :func:`icefloe.cli.main` (re-exported here as ``main``
for scripts installed before it moved), which turns a missing ``server``
extra into one line naming it.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from icefloe._version import __version__
from icefloe.cli import bridge as bridge_command
from icefloe.cli import demo as demo_command
from icefloe.cli import main, serve_settings, tail_command
from icefloe.cli import serve_options as options
from icefloe.cli import worker as worker_command  # icefloe worker (issue 12)
from icefloe.cli.serve_settings import Host, JwtFlags, Port
from icefloe.core import conntable  # socket limits (issue 15, items 4-5)

if TYPE_CHECKING:
    from icefloe.gateway import Gateway
    from icefloe.runtime.flow import Flow
    from icefloe.transport.app import EdgeSettings

__all__ = ["app", "main"]

app = typer.Typer(
    name="icefloe",
    help="Real-time token streaming for agent and LLM flows.",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True, highlight=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"icefloe {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Real-time token streaming for agent and LLM flows."""


Heartbeat = Annotated[float, typer.Option(min=0.1, help="Seconds between SSE pings.")]
SendTimeout = Annotated[
    float, typer.Option(min=0.1, help="Seconds a write may take before a client is cut.")
]
History = Annotated[int, typer.Option(min=0, help="Chunks each stream keeps for resumption.")]


@app.command()
def serve(
    target: Annotated[str, typer.Argument(help="module:attribute naming a Flow (or a factory).")],
    host: Host = "127.0.0.1",
    port: Port = 8765,
    heartbeat: Heartbeat = 15.0,
    send_timeout: SendTimeout = 10.0,
    history: History = 1024,
    api_keys: Annotated[
        Path | None, typer.Option(help="JSON file of API keys: {key: {tenant, scopes}}.")
    ] = None,
    # -- the HS256 secret off the command line (issue 15, item 9) --
    jwt_secret: Annotated[
        str | None,
        typer.Option(
            envvar="ICEFLOE_JWT_SECRET",
            show_envvar=True,
            help="HS256 secret for JWTs. On the command line it is visible to other users "
            "(ps, /proc/PID/cmdline): prefer the environment variable or --jwt-secret-file.",
        ),
    ] = None,
    jwt_secret_file: Annotated[
        Path | None,
        typer.Option(help="File holding the HS256 secret (a trailing newline is dropped)."),
    ] = None,
    # -- end of the HS256 secret --
    jwt_public_key: Annotated[
        Path | None, typer.Option(help="PEM public key for RS256/ES256 JWTs.")
    ] = None,
    # -- authentication: identity-provider JWTs and the cookie (issue 16, items 5-7) --
    jwt_jwks_url: Annotated[
        str | None,
        typer.Option(help="Identity provider's JWKS URL; tokens pick their key by 'kid'."),
    ] = None,
    jwt_audience: Annotated[
        list[str] | None,
        typer.Option(help="Accepted 'aud' (repeatable); without it, tokens with 'aud' are 401."),
    ] = None,
    jwt_issuer: Annotated[str | None, typer.Option(help="Required 'iss' of JWTs.")] = None,
    jwt_algorithm: Annotated[
        list[str] | None,
        typer.Option(
            help="Allowed JWT algorithm (repeatable; default: the key's, RS256 for JWKS)."
        ),
    ] = None,
    jwt_tenant_claim: Annotated[
        str, typer.Option(help="JWT claim (or dotted path) naming the tenant.")
    ] = "tenant",
    jwt_scopes_claim: Annotated[
        list[str] | None,
        typer.Option(
            help="JWT claim (or dotted path) holding scopes, a space-separated string or a "
            "list (repeatable; default: scope and scopes)."
        ),
    ] = None,
    jwt_require_claim: Annotated[
        list[str] | None,
        typer.Option(help="NAME=VALUE a JWT claim must equal, e.g. token_use=access (repeatable)."),
    ] = None,
    auth_cookie: Annotated[
        str | None,
        typer.Option(
            help="Also read the token from this cookie, for GET and for WebSocket "
            "handshakes from an allowed Origin (never for POST/DELETE)."
        ),
    ] = None,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option(
            help="Browser origin allowed to call the API from its scripts (repeatable); "
            "turns CORS on."
        ),
    ] = None,
    # -- end of authentication --
    insecure: Annotated[
        bool, typer.Option(help="Allow a non-loopback bind without authentication.")
    ] = False,
    unread_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a run may go unread before it is cancelled.")
    ] = 60.0,
    window: Annotated[
        int, typer.Option(min=1, max=2**31 - 1, help="Initial WebSocket credit per stream.")
    ] = 256,
    max_frame: Annotated[
        int, typer.Option(min=1024, help="Largest WebSocket message accepted, bytes (over: 1009).")
    ] = 1024 * 1024,
    session_ttl: Annotated[
        float, typer.Option(min=0.1, help="Seconds a WebSocket session can be resumed.")
    ] = 30.0,
    connection_bytes_per_s: Annotated[
        float | None,
        typer.Option(
            min=1024, help="Bandwidth cap of each streaming connection (SSE, NDJSON, WebSocket)."
        ),
    ] = None,
    # -- edge limits behind a proxy (issue 16, docs/security.md) ----------------
    max_connections: Annotated[
        str, typer.Option(help="Open streaming connections per principal (0/off: no limit).")
    ] = "4096",
    requests_per_s: Annotated[
        str, typer.Option(help="Requests per second per principal (0/off: no limit).")
    ] = "1000",
    request_burst: Annotated[
        int, typer.Option(min=1, help="Requests a principal may make at once after idling.")
    ] = 2000,
    forwarded_allow_ips: Annotated[
        str,
        typer.Option(
            envvar="FORWARDED_ALLOW_IPS",
            help="Proxies trusted for Forwarded/X-Forwarded-For: comma list of IPs, CIDRs or *.",
        ),
    ] = "",
    # -- end of edge limits --------------------------------------------------------
    # -- Host allow-list against DNS rebinding (issue 15, item 7) ----------------
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="Host header served beside the bound address and localhost: NAME (any "
            "port), NAME:PORT, or * for any (repeatable).",
        ),
    ] = None,
    # -- end of Host allow-list --------------------------------------------------
    # -- hub subscriber caps (issue 15, item 2) --
    max_subscribers_per_tenant: Annotated[
        str,
        typer.Option(
            help="Hub topic subscribers per tenant, below the hub's 10,000 (0/off: no limit)."
        ),
    ] = "1000",
    max_filter_cost_per_tenant: Annotated[
        str,
        typer.Option(
            help="Summed cost of a tenant's distinct topic filters, bounding the matching "
            "work of a publish (0/off: no limit)."
        ),
    ] = "40000",
    max_topic_subs: Annotated[
        int, typer.Option(min=1, help="Topic subscriptions one WebSocket connection may hold.")
    ] = 100,
    tenant_publish_share: Annotated[
        str,
        typer.Option(
            help="Fraction of one core a tenant's hub publishes may take on average "
            "(0/off: no limit)."
        ),
    ] = "0.25",
    # -- end of hub subscriber caps --
    # -- socket limits (issue 15, items 4-5) --------------------------------------
    max_header_bytes: Annotated[
        int,
        typer.Option(min=256, help="Request line + headers of one request, bytes (over: 431)."),
    ] = conntable.DEFAULT_MAX_HEADER_BYTES,
    max_headers: Annotated[
        int, typer.Option(min=1, help="Header fields of one request (over: 431).")
    ] = conntable.DEFAULT_MAX_HEADERS,
    header_timeout: Annotated[
        float,
        typer.Option(
            min=0.1, max=3600, help="Seconds for a request head to arrive, from its first byte."
        ),
    ] = conntable.DEFAULT_HEADER_TIMEOUT_S,
    keep_alive_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            max=3600,
            help="Seconds a connection may stay open with no request in progress "
            "(silent after connecting, or idle between requests).",
        ),
    ] = conntable.DEFAULT_KEEP_ALIVE_TIMEOUT_S,
    max_connections_per_address: Annotated[
        str,
        typer.Option(
            help="Open connections from one client address, before authentication "
            "(0/off: no limit; trusted proxies are exempt)."
        ),
    ] = str(conntable.DEFAULT_MAX_PER_ADDRESS),
    max_open_connections: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Open connections in all (default: the open-files limit minus a reserve).",
        ),
    ] = None,
    # -- end of socket limits -----------------------------------------------------
    # -- admission (issue 15, item 3) --
    tenant_requests_per_s: Annotated[
        str,
        typer.Option(help="Requests per second of all of one tenant's principals (0/off: none)."),
    ] = "4000",
    tenant_request_burst: Annotated[
        int, typer.Option(min=1, help="Requests one tenant may make at once after idling.")
    ] = 8000,
    tenant_max_connections: Annotated[
        str,
        typer.Option(
            help="Open streaming connections of one tenant, all principals (0/off: none)."
        ),
    ] = "16384",
    max_streams_per_tenant: Annotated[
        str | None,
        typer.Option(
            help="Running streams of one tenant (off: no cap; default: the flow's, 2500 "
            "unless its Limits say otherwise)."
        ),
    ] = None,
    # -- end of admission --
    # -- hub budgets (issue 15, item 1) --
    hub_bytes_per_tenant: Annotated[
        str,
        typer.Option(help="Bytes one tenant may hold in the hub (0/off: no limit)."),
    ] = str(32 * 1024 * 1024),
    hub_topics_per_tenant: Annotated[
        str,
        typer.Option(help="Hub topics one tenant may hold (0/off: no limit)."),
    ] = "1000",
    hub_topic_idle: Annotated[
        float,
        typer.Option(min=0, help="Seconds without a publish after which a hub topic is evicted."),
    ] = 300.0,
    # -- end of hub budgets --
    # -- the store of durable runs (issue 11, docs/reliability.md) ---------------
    store: Annotated[
        str,
        typer.Option(
            help="Where at_least_once/exactly_once runs and idempotency keys are kept "
            "(and hub topic history, unless --backplane): "
            "memory://, sqlite:///path.db, redis://host:port/db, postgresql://user@host/db.",
        ),
    ] = "memory://",
    # -- end of the store ----------------------------------------------------------
    bridge: Annotated[  # bridge routes in this process (issue 13, docs/bridge.md)
        Path | None, typer.Option(help="Bridge config (TOML): run its routes in this process.")
    ] = None,
    # -- backplane (issue 12) --
    backplane: Annotated[
        str | None,
        typer.Option(
            help="redis://HOST:PORT/DB[?prefix=P] or nats://HOST:PORT[?prefix=P] (JetStream): "
            "share streams with the other gateways on this Redis or NATS (docs/deploy.md)."
        ),
    ] = None,
    no_runs: Annotated[
        bool,
        typer.Option(
            "--no-runs",
            help="Queue starts for `icefloe worker` processes instead of running them "
            "(needs --backplane; docs/deploy.md, Workers).",
        ),
    ] = False,
    drain_timeout: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds SIGTERM waits for this process's runs to end while its clients "
            "move to other gateways (docs/deploy.md, 'Draining').",
        ),
    ] = 25.0,
    # -- end of backplane --
) -> None:
    """Serve a flow over HTTP (SSE, NDJSON, long-poll) and WebSocket, with the inspector at /."""
    flow = _load_flow(target)
    # -- authentication (issue 16, items 5-7) --
    jwt_flags = JwtFlags(
        secret=serve_settings.jwt_secret(jwt_secret, jwt_secret_file),
        public_key=jwt_public_key,
        jwks_url=jwt_jwks_url,
        audience=tuple(jwt_audience or ()),
        issuer=jwt_issuer,
        algorithms=tuple(jwt_algorithm or ()),
        tenant_claim=jwt_tenant_claim,
        scopes_claims=tuple(jwt_scopes_claim or ()),
        required_claims=tuple(jwt_require_claim or ()),
    )
    authenticator = serve_settings.authenticator(
        api_keys, jwt_flags, auth_cookie, allow_origin or []
    )
    if authenticator is None and not serve_settings.is_loopback(host) and not insecure:
        err.print(
            f"[red]refusing to bind {host} without authentication[/red]: "
            "pass --api-keys or --jwt-secret/--jwt-public-key/--jwt-jwks-url, or --insecure"
        )
        raise typer.Exit(2)
    # -- end of authentication --
    settings = serve_settings.edge_settings(
        heartbeat, send_timeout, history, authenticator, allow_origin or []
    )
    from icefloe.transport.websocket import WsSettings

    ws = WsSettings(
        window=window,
        max_frame=max_frame,
        session_ttl_s=session_ttl,
        bytes_per_s=connection_bytes_per_s,
    )
    pump = dataclasses.replace(settings.pump, bytes_per_s=connection_bytes_per_s)
    settings = dataclasses.replace(settings, unread_timeout_s=unread_timeout, ws=ws, pump=pump)
    # -- edge limits behind a proxy (issue 16) --
    settings = options.edge_limits(
        settings, max_connections, requests_per_s, request_burst, forwarded_allow_ips
    )
    options.raise_fd_limit()
    # -- end of edge limits --
    settings = options.allowed_hosts(settings, host, allowed_host or [])  # Host allow-list (item 7)
    # -- hub subscriber caps (issue 15, item 2) --
    settings = options.hub_subscriber_caps(
        settings, max_subscribers_per_tenant, max_filter_cost_per_tenant, max_topic_subs
    )
    share = options.off_or(tenant_publish_share, float, "--tenant-publish-share")
    settings = dataclasses.replace(settings, publish_share=share)
    # -- end of hub subscriber caps --
    # -- socket limits (issue 15, items 4-5) --
    settings = options.socket_limits(
        settings,
        options.SocketFlags(
            max_header_bytes,
            max_headers,
            header_timeout,
            keep_alive_timeout,
            max_connections_per_address,
            max_open_connections,
        ),
    )
    # -- end of socket limits --
    # -- admission (issue 15, item 3) --
    settings = options.tenant_limits(
        settings, tenant_requests_per_s, tenant_request_burst, tenant_max_connections
    )
    if max_streams_per_tenant is not None:
        cap = options.off_or(max_streams_per_tenant, int, "--max-streams-per-tenant")
        flow.set_stream_caps(max_streams_per_tenant=None if cap is None else int(cap))
    # -- end of admission --
    settings = options.hub_budgets(  # hub budgets (issue 15, item 1)
        settings, hub_bytes_per_tenant, hub_topics_per_tenant, hub_topic_idle
    )
    options.use_store(flow, store)  # the store of durable runs (issue 11)
    if backplane is None:  # and of hub topic history (memory:// keeps none)
        settings = dataclasses.replace(settings, topic_store=store)
    gateway = None if bridge is None else options.load_gateway(bridge)  # (issue 13)
    settings = serve_settings.backplane_settings(settings, backplane, no_runs)  # issue 12
    # lifecycle (issue 12): SIGTERM drains; /v1/cluster lists this address
    settings = dataclasses.replace(
        settings, drain_timeout_s=drain_timeout, advertise=f"{host}:{port}"
    )
    _run_server(flow, settings, host, port, gateway)


def _load_flow(target: str) -> Flow:
    from icefloe.runtime.flow import Flow

    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise typer.BadParameter("expected module:attribute", param_hint="TARGET")
    sys.path.insert(0, str(Path.cwd()))
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise typer.BadParameter(f"cannot load {target}: {exc}", param_hint="TARGET") from None
    flow = obj() if callable(obj) and not isinstance(obj, Flow) else obj
    if not isinstance(flow, Flow):
        raise typer.BadParameter(f"{target} is not a Flow", param_hint="TARGET")
    return flow


def _run_server(
    flow: Flow, settings: EdgeSettings, host: str, port: int, gateway: Gateway | None = None
) -> None:
    import uvicorn

    from icefloe.transport.app import create_app, server_options

    err.print(f"icefloe {__version__}: inspector and API at [bold]http://{host}:{port}/[/bold]")
    uvicorn.run(
        create_app(flow, settings, gateway=gateway),
        host=host,
        port=port,
        log_level="warning",
        **server_options(settings),
    )


bridge_command.register(app)  # icefloe bridge (issue 13)
demo_command.register(app, _run_server)
tail_command.register(app)
worker_command.register(app, _load_flow)  # icefloe worker (issue 12)
