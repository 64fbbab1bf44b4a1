"""Who is calling: principals, scopes, and the bearer token a request carries.

This is the base the authenticators build on (:mod:`icefloe.transport.auth`
re-exports every public name here; import them from there):

* :class:`Scope`, :class:`Principal` and :class:`AuthError`;
* the :class:`Authenticator` protocol, and :class:`KeyFetching` for those
  that fetch keys (a JWKS) before they can check a token;
* :func:`token_from_headers`, which takes the ``Authorization`` header (only
  the ``Bearer`` scheme) or, failing that, the ``access_token`` query value
  (for browser ``EventSource``, which cannot set headers; less safe, since
  URLs end up in logs and browser history), and :func:`redact`.

It also holds the token and name checks the authenticators share
(:func:`require_token`, :func:`is_valid_name`, :func:`is_valid_tenant`),
which are internal to this package and not part of ``__all__``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Literal, Protocol, TypeGuard, runtime_checkable

from icefloe.core.wire_errors import ErrorCode, http_status
from icefloe.exceptions import IcefloeError
from icefloe.transport.limits import PrincipalLimits

__all__ = [
    "MAX_TOKEN_LENGTH",
    "AuthError",
    "Authenticator",
    "KeyFetching",
    "Principal",
    "Scope",
    "redact",
    "token_from_headers",
]

#: longest token accepted, in characters (8 KiB); longer ones are refused unread
MAX_TOKEN_LENGTH = 8 * 1024

# RFC 6750 ``b64token``: the only characters a bearer token may contain. It
# excludes whitespace, control characters and non-ASCII in one check.
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# The scheme, the spaces after it and surrounding whitespace of the header.
_HEADER_SLACK = 64
#: the tenant of :meth:`Principal.unrestricted` (auth off); no authenticator issues it
ANY_TENANT = "*"
#: longest tenant or subject name, in characters
MAX_NAME_LENGTH = 200


class Scope(enum.StrEnum):
    """What a principal may do; ``admin`` implies every other scope and tenant."""

    STREAMS_START = "streams:start"
    STREAMS_READ = "streams:read"
    STREAMS_CANCEL = "streams:cancel"
    TOPICS_PUBLISH = "topics:publish"
    TOPICS_READ = "topics:read"
    #: ``GET /metrics`` with auth on: an operator's scope, every tenant's series
    METRICS = "metrics"
    ADMIN = "admin"


class AuthError(IcefloeError):
    """Credentials were refused (401) or do not allow the operation (403).

    ``status`` is 401 or 403, ``code`` the matching :class:`ErrorCode`
    (``UNAUTHORIZED`` / ``FORBIDDEN``) and ``message`` (also ``str(exc)``)
    a reason safe to send to the client: it never contains the token.
    """

    def __init__(self, status: Literal[401, 403], message: str) -> None:
        codes = {http_status(c): c for c in (ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN)}
        if status not in codes:
            raise ValueError(f"AuthError status must be 401 or 403, got {status!r}")
        self.status: Literal[401, 403] = status
        self.code = codes[status]
        self.message = message
        super().__init__(message)

    @classmethod
    def unauthorized(cls, message: str) -> AuthError:
        """A 401: missing, malformed, unknown, expired or forged credentials."""
        return cls(401, message)

    @classmethod
    def forbidden(cls, message: str) -> AuthError:
        """A 403: valid credentials that do not allow the operation."""
        return cls(403, message)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: who (``subject``), for whom (``tenant``), and what.

    ``scopes`` may be given as any iterable of scope strings; it is stored as
    a ``frozenset`` of :class:`Scope`, and an unknown scope is a ``ValueError``.
    ``limits`` are its own edge limits (an API key's ``limits``, a JWT's
    limits claim); ``None`` leaves it the edge-wide ones.
    """

    subject: str
    tenant: str
    scopes: frozenset[Scope]
    limits: PrincipalLimits | None = None

    def __post_init__(self) -> None:
        for name in ("subject", "tenant"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"Principal.{name} must be a non-empty string, got {value!r}")
        # Normalise to Scope members so membership tests and reprs are exact.
        object.__setattr__(self, "scopes", frozenset(Scope(s) for s in self.scopes))

    @classmethod
    def unrestricted(cls) -> Principal:
        """The principal of every request when authentication is disabled.

        It holds every scope (``admin`` included) and its tenant is ``"*"``, a
        marker no authenticator issues, so :meth:`can_access_tenant` is true
        for every tenant. Use it only for auth-off mode (``icefloe demo``, or
        ``serve --insecure``): it is not a tenant to file resources under, and
        never a stand-in for "some anonymous user" when auth is on.
        """
        return cls(subject="anonymous", tenant=ANY_TENANT, scopes=frozenset(Scope))

    def has(self, scope: Scope) -> bool:
        """Whether the principal holds ``scope`` (``admin`` holds them all)."""
        return scope in self.scopes or Scope.ADMIN in self.scopes

    def can_access_tenant(self, tenant: str) -> bool:
        """Whether the principal may see ``tenant``'s resources: its own, or any if admin."""
        return tenant == self.tenant or Scope.ADMIN in self.scopes

    def require(self, scope: Scope) -> None:
        """Raise :class:`AuthError` 403 unless the principal holds ``scope``."""
        if not self.has(scope):
            raise AuthError.forbidden(f"missing scope {Scope(scope).value!r}")


class Authenticator(Protocol):
    """Turns a bearer token into a :class:`Principal`."""

    def authenticate(self, token: str | None) -> Principal:
        """The token's principal.

        :raises AuthError: 401 if the token is missing, malformed, unknown,
            expired or forged.
        """
        ...


@runtime_checkable
class KeyFetching(Protocol):
    """An authenticator that may need to fetch keys before it can check a token.

    ``authenticate`` runs on the event loop and does no I/O; the edge awaits
    ``prepare(token)`` first, and that may fetch (in a worker thread). It
    never raises: a failure shows as :class:`AuthError` from ``authenticate``.
    """

    @property
    def fetches_keys(self) -> bool:
        """Whether :meth:`prepare` can do anything (False: the edge skips it)."""
        ...

    async def prepare(self, token: str | None) -> None:
        """Fetch what checking ``token`` needs, if it is not held already."""
        ...


# -- tokens on the wire -----------------------------------------------------------


def token_from_headers(authorization: str | None, query_token: str | None) -> str | None:
    """The bearer token of a request, or ``None`` if it carries none.

    ``authorization`` is the ``Authorization`` header value; its scheme must
    be ``Bearer`` (any case). When it is absent, ``query_token`` (the
    ``access_token`` query value) is used. When both are present the header
    wins. With authentication disabled the edge need not call this at all.

    :raises AuthError: 401 for another scheme, a malformed or empty value, a
        token over :data:`MAX_TOKEN_LENGTH`, or characters outside RFC 6750's
        ``b64token`` (whitespace, control characters, non-ASCII).
    """
    if authorization is not None:
        return _bearer_token(authorization)
    if query_token is not None:
        _check_token(query_token)
        return query_token
    return None


def redact(token: str | None) -> str:
    """A stand-in for ``token`` in log lines: its length, none of its characters."""
    if token is None:
        return "<no token>"
    return f"<redacted token, {len(token)} chars>"


def _bearer_token(header: str) -> str:
    # Refuse an oversized header before any parsing work is spent on it.
    if len(header) > MAX_TOKEN_LENGTH + _HEADER_SLACK:
        raise AuthError.unauthorized("credentials too long")
    scheme, _, rest = header.strip(" \t").partition(" ")
    # isascii first: str.lower maps some non-ASCII letters onto ASCII ones.
    if not (scheme.isascii() and scheme.lower() == "bearer"):
        raise AuthError.unauthorized("unsupported authorization scheme; use Bearer")
    token = rest.lstrip(" ")
    if not token:
        raise AuthError.unauthorized("missing bearer token")
    _check_token(token)
    return token


def _check_token(token: str) -> None:
    if len(token) > MAX_TOKEN_LENGTH:
        raise AuthError.unauthorized("credentials too long")
    if B64TOKEN.fullmatch(token) is None:
        raise AuthError.unauthorized("malformed credentials")


def require_token(token: str | None) -> str:
    """``token`` if present and well formed, for an authenticator to check.

    :raises AuthError: 401 if it is missing, too long or malformed.
    """
    if token is None:
        raise AuthError.unauthorized("missing credentials")
    _check_token(token)
    return token


def is_valid_name(value: object) -> TypeGuard[str]:
    """Whether ``value`` can name a tenant or subject: printable, no spaces, bounded."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_NAME_LENGTH
        and value.isprintable()
        and not any(c.isspace() for c in value)
    )


def is_valid_tenant(value: object) -> TypeGuard[str]:
    """Whether ``value`` can name a tenant: a valid name other than the reserved ``"*"``."""
    return is_valid_name(value) and value != ANY_TENANT
