"""``icefloe``: the command line.

``icefloe serve module:flow`` serves a flow over HTTP; ``icefloe demo`` serves
the built-in simulated LLM with the inspector page; ``icefloe tail URL``
prints a stream live and resumes after a disconnect; ``icefloe --version``.

The console script is :func:`icefloe.cli.main` (re-exported here as ``main``
for scripts installed before it moved), which turns a missing ``server``
extra into one line naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import ipaddress
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from icefloe._version import __version__
from icefloe.cli import main
from icefloe.core import conntable  # socket limits (issue 15, items 4-5)
from icefloe.core.messages import Headers, Message
from icefloe.demo import DEMO_TEXT, Pacing, build_demo_flow

if TYPE_CHECKING:
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


# Options shared by serve and demo.
Host = Annotated[str, typer.Option(help="Interface to bind.")]
Port = Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free port).")]
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
    # -- backplane (issue 12) --
    backplane: Annotated[
        str | None,
        typer.Option(
            help="redis://HOST:PORT/DB[?prefix=P]: share streams with the other gateways "
            "on this Redis (docs/deploy.md)."
        ),
    ] = None,
    # -- end of backplane --
) -> None:
    """Serve a flow over HTTP (SSE, NDJSON, long-poll) and WebSocket, with the inspector at /."""
    flow = _load_flow(target)
    # -- authentication (issue 16, items 5-7) --
    jwt_flags = _JwtFlags(
        secret=_jwt_secret(jwt_secret, jwt_secret_file),
        public_key=jwt_public_key,
        jwks_url=jwt_jwks_url,
        audience=tuple(jwt_audience or ()),
        issuer=jwt_issuer,
        algorithms=tuple(jwt_algorithm or ()),
        tenant_claim=jwt_tenant_claim,
        scopes_claims=tuple(jwt_scopes_claim or ()),
        required_claims=tuple(jwt_require_claim or ()),
    )
    authenticator = _authenticator(api_keys, jwt_flags, auth_cookie, allow_origin or [])
    if authenticator is None and not _is_loopback(host) and not insecure:
        err.print(
            f"[red]refusing to bind {host} without authentication[/red]: "
            "pass --api-keys or --jwt-secret/--jwt-public-key/--jwt-jwks-url, or --insecure"
        )
        raise typer.Exit(2)
    # -- end of authentication --
    settings = _settings(heartbeat, send_timeout, history, authenticator, allow_origin or [])
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
    settings = _edge_limits(
        settings, max_connections, requests_per_s, request_burst, forwarded_allow_ips
    )
    _raise_fd_limit()
    # -- end of edge limits --
    settings = _allowed_hosts(settings, host, allowed_host or [])  # Host allow-list (item 7)
    # -- hub subscriber caps (issue 15, item 2) --
    settings = _hub_subscriber_caps(
        settings, max_subscribers_per_tenant, max_filter_cost_per_tenant, max_topic_subs
    )
    share = _off_or(tenant_publish_share, float, "--tenant-publish-share")
    settings = dataclasses.replace(settings, publish_share=share)
    # -- end of hub subscriber caps --
    # -- socket limits (issue 15, items 4-5) --
    settings = _socket_limits(
        settings,
        _SocketFlags(
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
    settings = _tenant_limits(
        settings, tenant_requests_per_s, tenant_request_burst, tenant_max_connections
    )
    if max_streams_per_tenant is not None:
        cap = _off_or(max_streams_per_tenant, int, "--max-streams-per-tenant")
        flow.set_stream_caps(max_streams_per_tenant=None if cap is None else int(cap))
    # -- end of admission --
    settings = _hub_budgets(  # hub budgets (issue 15, item 1)
        settings, hub_bytes_per_tenant, hub_topics_per_tenant, hub_topic_idle
    )
    if backplane is not None:  # -- backplane (issue 12) --
        from icefloe.backplane.keys import parse_url

        try:
            parse_url(backplane)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--backplane") from None
        settings = dataclasses.replace(settings, backplane=backplane)
    _run_server(flow, settings, host, port)


@app.command()
def demo(
    host: Host = "127.0.0.1",
    port: Port = 8765,
    first_token_ms: Annotated[float, typer.Option(min=0, help="Time to first token.")] = 250,
    inter_token_ms: Annotated[float, typer.Option(min=0, help="Mean gap between tokens.")] = 40,
    terminal: Annotated[
        bool, typer.Option(help="Stream one answer to this terminal instead of serving.")
    ] = False,
) -> None:
    """Serve the built-in simulated LLM with the inspector page (auth off, loopback)."""
    pacing = Pacing(first_token_ms / 1000, inter_token_ms / 1000)
    if terminal:
        asyncio.run(_terminal_demo(DEMO_TEXT, pacing, Console(highlight=False)))
        return
    if not _is_loopback(host):
        err.print("[red]the demo runs without authentication and binds loopback only[/red]")
        raise typer.Exit(2)
    settings = _allowed_hosts(_settings(15.0, 10.0, 1024, None, []), host, [])
    _run_server(build_demo_flow(pacing), settings, host, port)


@app.command()
def tail(
    url: Annotated[str, typer.Argument(help="http://host:port/v1/streams/<id>")],
    token: Annotated[str | None, typer.Option(envvar="ICEFLOE_TOKEN", help="Bearer token.")] = None,
    from_seq: Annotated[int, typer.Option(min=0, help="First seq to print.")] = 0,
) -> None:
    """Print a stream live; reconnects with Last-Event-ID after a disconnect."""
    from icefloe.cli.tail import tail_stream

    code = asyncio.run(tail_stream(url, token, from_seq, Console(highlight=False), err))
    raise typer.Exit(code)


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


@dataclasses.dataclass(frozen=True)
class _JwtFlags:
    """The ``--jwt-*`` flags of ``serve``."""

    secret: str | None
    public_key: Path | None
    jwks_url: str | None
    audience: tuple[str, ...]
    issuer: str | None
    algorithms: tuple[str, ...]
    tenant_claim: str
    scopes_claims: tuple[str, ...]
    required_claims: tuple[str, ...]

    def options_given(self) -> bool:
        return bool(
            self.audience
            or self.issuer
            or self.algorithms
            or self.tenant_claim != "tenant"
            or self.scopes_claims
            or self.required_claims
        )


def _jwt_secret(secret: str | None, secret_file: Path | None) -> str | None:
    """The HS256 secret from ``--jwt-secret``/``ICEFLOE_JWT_SECRET`` or ``--jwt-secret-file``."""
    if secret_file is None:
        return secret
    if secret is not None:
        raise typer.BadParameter(
            "give one of --jwt-secret (or ICEFLOE_JWT_SECRET) and --jwt-secret-file"
        )
    try:
        text = secret_file.read_text(encoding="utf-8")
    except OSError as exc:
        # strerror says why (missing, a directory, no permission) without the errno noise.
        reason = exc.strerror or type(exc).__name__
        raise typer.BadParameter(
            f"{reason}: {secret_file}", param_hint="--jwt-secret-file"
        ) from None
    except UnicodeDecodeError:
        raise typer.BadParameter(
            f"{secret_file} is not UTF-8 text", param_hint="--jwt-secret-file"
        ) from None
    # Editors and `echo` end the file with a newline that is not part of the secret.
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise typer.BadParameter(f"{secret_file} is empty", param_hint="--jwt-secret-file")
    return text


def _jwt_authenticator(flags: _JwtFlags) -> object | None:
    from icefloe.transport.auth import JwtAuthenticator
    from icefloe.transport.jwt_auth import DEFAULT_SCOPES_CLAIMS

    sources = [s for s in (flags.secret, flags.public_key, flags.jwks_url) if s is not None]
    if len(sources) > 1:
        raise typer.BadParameter("give one of --jwt-secret, --jwt-public-key or --jwt-jwks-url")
    if not sources:
        if flags.options_given():
            raise typer.BadParameter(
                "--jwt-* options need --jwt-secret, --jwt-public-key or --jwt-jwks-url"
            )
        return None
    required: dict[str, str] = {}
    for pair in flags.required_claims:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"--jwt-require-claim wants NAME=VALUE, got {pair!r}")
        required[name] = value
    return JwtAuthenticator(
        secret=flags.secret,
        public_key=flags.public_key.read_text() if flags.public_key is not None else None,
        jwks=flags.jwks_url,
        algorithms=flags.algorithms or None,
        audience=flags.audience or None,
        issuer=flags.issuer,
        tenant_claim=flags.tenant_claim,
        scopes_claims=flags.scopes_claims or DEFAULT_SCOPES_CLAIMS,
        required_claims=required,
    )


def _authenticator(
    api_keys: Path | None, jwt_flags: _JwtFlags, cookie: str | None, origins: list[str]
) -> object | None:
    from icefloe.transport.auth import ApiKeyAuthenticator, ChainAuthenticator, CookieAuthenticator

    chain: list[object] = []
    try:
        if api_keys is not None:
            chain.append(ApiKeyAuthenticator.from_file(api_keys))
        jwt_auth = _jwt_authenticator(jwt_flags)
        if jwt_auth is not None:
            chain.append(jwt_auth)
        if not chain:
            if cookie is not None:
                raise typer.BadParameter("--auth-cookie needs --api-keys or a --jwt-* key")
            return None
        auth = chain[0] if len(chain) == 1 else ChainAuthenticator(*chain)  # type: ignore[arg-type]
        if cookie is not None:
            # The server's own pages may use the cookie too; "*" is refused.
            auth = CookieAuthenticator(auth, cookie, allowed_origins=origins)  # type: ignore[arg-type]
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    return auth


def _settings(
    heartbeat: float,
    send_timeout: float,
    history: int,
    authenticator: object | None,
    origins: list[str],
) -> EdgeSettings:
    from icefloe.transport.app import EdgeSettings
    from icefloe.transport.auth import Authenticator, NoAuth
    from icefloe.transport.streaming import PumpSettings

    auth: Authenticator = authenticator if authenticator is not None else NoAuth()  # type: ignore[assignment]
    return EdgeSettings(
        pump=PumpSettings(heartbeat_s=heartbeat, send_timeout_s=send_timeout),
        history=history,
        authenticator=auth,
        allow_origins=tuple(origins),
    )


# -- edge limits behind a proxy (issue 16, docs/security.md) ----------------------


def _off_or(text: str, convert: type[int] | type[float], flag: str) -> int | float | None:
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


def _edge_limits(
    settings: EdgeSettings,
    max_connections: str,
    requests_per_s: str,
    request_burst: int,
    forwarded_allow_ips: str,
) -> EdgeSettings:
    from icefloe.transport.forwarded import TrustedProxies
    from icefloe.transport.limits import EdgeLimits

    cap = _off_or(max_connections, int, "--max-connections")
    rate = _off_or(requests_per_s, float, "--requests-per-s")
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


def _tenant_limits(
    settings: EdgeSettings, requests_per_s: str, request_burst: int, max_connections: str
) -> EdgeSettings:
    """The ``--tenant-*`` flags: the tenant layer over the per-principal limits."""
    rate = _off_or(requests_per_s, float, "--tenant-requests-per-s")
    cap = _off_or(max_connections, int, "--tenant-max-connections")
    limits = dataclasses.replace(
        settings.edge_limits,
        tenant_requests_per_s=rate,
        tenant_request_burst=request_burst,
        tenant_max_connections=None if cap is None else int(cap),
    )
    return dataclasses.replace(settings, edge_limits=limits)


# -- end of admission --------------------------------------------------------------------


def _raise_fd_limit() -> None:
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


def _allowed_hosts(settings: EdgeSettings, host: str, extra: list[str]) -> EdgeSettings:
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


def _hub_subscriber_caps(
    settings: EdgeSettings, per_tenant: str, filter_cost: str, topic_subs: int
) -> EdgeSettings:
    """The hub limits of ``--max-subscribers-per-tenant`` and
    ``--max-filter-cost-per-tenant``, and the connection cap of ``--max-topic-subs``."""
    cap = _off_or(per_tenant, int, "--max-subscribers-per-tenant")
    cost = _off_or(filter_cost, int, "--max-filter-cost-per-tenant")
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
class _SocketFlags:
    """The connection and header flags of ``serve`` (docs/security.md)."""

    max_header_bytes: int
    max_headers: int
    header_timeout: float
    keep_alive_timeout: float
    max_connections_per_address: str
    max_open_connections: int | None


def _socket_limits(settings: EdgeSettings, flags: _SocketFlags) -> EdgeSettings:
    per_address = _off_or(flags.max_connections_per_address, int, "--max-connections-per-address")
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


def _hub_budgets(
    settings: EdgeSettings, bytes_per_tenant: str, topics_per_tenant: str, topic_idle: float
) -> EdgeSettings:
    """The hub's tenant budgets and idle-topic eviction (docs/security.md, "Hub budgets")."""
    size = _off_or(bytes_per_tenant, int, "--hub-bytes-per-tenant")
    topics = _off_or(topics_per_tenant, int, "--hub-topics-per-tenant")
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


def _run_server(flow: Flow, settings: EdgeSettings, host: str, port: int) -> None:
    import uvicorn

    from icefloe.transport.app import create_app, server_options

    err.print(f"icefloe {__version__}: inspector and API at [bold]http://{host}:{port}/[/bold]")
    uvicorn.run(
        create_app(flow, settings),
        host=host,
        port=port,
        log_level="warning",
        **server_options(settings),
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _terminal_demo(text: str, pacing: Pacing, console: Console) -> None:
    async with build_demo_flow(pacing) as flow:
        started = time.perf_counter()
        first: float | None = None
        count = 0
        async for chunk in flow.stream(Message(payload=text, headers=Headers(tenant="demo"))):
            if first is None:
                first = time.perf_counter() - started
            count += 1
            console.print(chunk.text, end="", soft_wrap=True)
        elapsed = time.perf_counter() - started
        console.print()
        console.print(
            f"[dim]{count} chunks in {elapsed:.2f} s, first token after "
            f"{(first or 0) * 1000:.0f} ms[/dim]"
        )
