"""How ``icefloe serve``'s base flags become settings: authentication and the backplane.

:class:`JwtFlags` and :func:`authenticator` turn ``--api-keys``, the
``--jwt-*`` flags and ``--auth-cookie`` into one authenticator;
:func:`edge_settings` builds the :class:`~icefloe.transport.app.EdgeSettings`
``serve`` and ``demo`` start from; :func:`backplane_settings` checks
``--backplane`` and ``--no-runs``. A bad value is a
:class:`typer.BadParameter` naming its flag.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from icefloe.transport.app import EdgeSettings

__all__ = [
    "Host",
    "JwtFlags",
    "Port",
    "authenticator",
    "backplane_settings",
    "edge_settings",
    "is_loopback",
    "jwt_secret",
]

# Options shared by serve and demo.
Host = Annotated[str, typer.Option(help="Interface to bind.")]
Port = Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free port).")]


@dataclasses.dataclass(frozen=True)
class JwtFlags:
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


def jwt_secret(secret: str | None, secret_file: Path | None) -> str | None:
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


def _jwt_authenticator(flags: JwtFlags) -> object | None:
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


def authenticator(
    api_keys: Path | None, jwt_flags: JwtFlags, cookie: str | None, origins: list[str]
) -> object | None:
    """The authenticator of the auth flags; None when no key source is given."""
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


def edge_settings(
    heartbeat: float,
    send_timeout: float,
    history: int,
    authenticator: object | None,
    origins: list[str],
) -> EdgeSettings:
    """The settings every served app starts from (no authenticator: ``NoAuth``)."""
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


def backplane_settings(
    settings: EdgeSettings, backplane: str | None, no_runs: bool
) -> EdgeSettings:
    """``settings`` with ``--backplane`` and ``--no-runs``, both checked (issue 12)."""
    if backplane is None:
        if no_runs:
            raise typer.BadParameter("--no-runs needs --backplane", param_hint="--no-runs")
        return settings
    from icefloe.backplane.engines import check_url

    try:
        check_url(backplane)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--backplane") from None
    if no_runs and not backplane.startswith(("redis://", "rediss://")):
        raise typer.BadParameter(
            "--no-runs needs a redis:// backplane (workers queue on Redis Streams)",
            param_hint="--no-runs",
        )
    return dataclasses.replace(settings, backplane=backplane, no_runs=no_runs)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server to this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
