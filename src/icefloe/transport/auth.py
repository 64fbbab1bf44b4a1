"""Who is calling: principals, scopes, and the authenticators that produce them.

The edge turns a request's credentials into a :class:`Principal` (a subject,
a tenant and a set of :class:`Scope`) in two steps, both framework-free so the
ASGI app passes plain strings:

1. :func:`request_token` takes the ``Authorization`` header (only the
   ``Bearer`` scheme) or, failing that, the ``access_token`` query value
   (for browser ``EventSource``, which cannot set headers; less safe, since
   URLs end up in logs and browser history), or, with a
   :class:`CookieAuthenticator`, a cookie where that is CSRF-safe.
2. An :class:`Authenticator` checks the token: :class:`ApiKeyAuthenticator`
   (a JSON key file), :class:`JwtAuthenticator` (HS*, RS*/PS*/ES*/EdDSA with
   a public key, or an identity provider's :class:`JwksKeys`),
   :class:`ChainAuthenticator` (both), or :class:`NoAuth`. One that fetches
   keys (:class:`KeyFetching`) is prepared first with :func:`prepare`, which
   fetches off the event loop.

Failures raise :class:`AuthError`: 401 ``unauthorized`` for missing, malformed,
unknown, expired or forged credentials, 403 ``forbidden`` for a principal that
lacks a scope. No message ever contains the token, and hostile input (huge,
control characters, non-ASCII) is an :class:`AuthError`, never another
exception. Use :func:`redact` to mention a token in a log line.

This module is the one to import from. It defines :class:`NoAuth`,
:class:`ChainAuthenticator`, :func:`request_token` and :func:`prepare`, and
re-exports the rest from where it lives:
:mod:`~icefloe.transport.principals` (principals, scopes, tokens),
:mod:`~icefloe.transport.api_keys`, :mod:`~icefloe.transport.jwt_auth`,
:mod:`~icefloe.transport.jwks` and :mod:`~icefloe.transport.cookie_auth`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from icefloe.transport.api_keys import MIN_API_KEY_LENGTH, ApiKeyAuthenticator
from icefloe.transport.cookie_auth import CookieAuthenticator
from icefloe.transport.jwks import JwksKeys
from icefloe.transport.jwt_auth import JwtAuthenticator
from icefloe.transport.principals import (
    MAX_TOKEN_LENGTH,
    Authenticator,
    AuthError,
    KeyFetching,
    Principal,
    Scope,
    redact,
    require_token,
    token_from_headers,
)

__all__ = [
    "MAX_TOKEN_LENGTH",
    "MIN_API_KEY_LENGTH",
    "ApiKeyAuthenticator",
    "AuthError",
    "Authenticator",
    "ChainAuthenticator",
    "CookieAuthenticator",
    "JwksKeys",
    "JwtAuthenticator",
    "KeyFetching",
    "NoAuth",
    "Principal",
    "Scope",
    "prepare",
    "redact",
    "request_token",
    "token_from_headers",
]

# Three base64url segments; the signature may be empty (``alg: none``), which
# must still reach the JWT checks to be refused there with a clear reason.
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class NoAuth:
    """Authentication disabled: every request, token or not, is unrestricted.

    See :meth:`Principal.unrestricted` for what that principal may do.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "NoAuth()"

    def authenticate(self, token: str | None) -> Principal:
        """Always :meth:`Principal.unrestricted`; the token is ignored."""
        return Principal.unrestricted()


class ChainAuthenticator:
    """API keys first, then JWTs for tokens shaped like one.

    A token that no API key matches is passed to ``jwt_auth`` only if it
    looks like a JWT (three dot-separated base64url segments); the error of
    the authenticator that had the last word is raised.
    """

    __slots__ = ("_api_keys", "_jwt")

    def __init__(self, api_keys: Authenticator, jwt_auth: Authenticator) -> None:
        self._api_keys = api_keys
        self._jwt = jwt_auth

    def __repr__(self) -> str:
        return f"ChainAuthenticator({self._api_keys!r}, {self._jwt!r})"

    @property
    def fetches_keys(self) -> bool:
        """Whether either authenticator fetches keys (see :class:`KeyFetching`)."""
        return any(
            isinstance(a, KeyFetching) and a.fetches_keys for a in (self._api_keys, self._jwt)
        )

    async def prepare(self, token: str | None) -> None:
        """Prepare each authenticator that fetches keys (see :class:`KeyFetching`)."""
        for authenticator in (self._api_keys, self._jwt):
            if isinstance(authenticator, KeyFetching):
                await authenticator.prepare(token)

    def authenticate(self, token: str | None) -> Principal:
        """The principal of an API key or of a JWT.

        :raises AuthError: 401 if neither accepts the token.
        """
        token = require_token(token)
        try:
            return self._api_keys.authenticate(token)
        except AuthError:
            if _JWT_SHAPE.fullmatch(token) is None:
                raise
        return self._jwt.authenticate(token)


def request_token(
    authenticator: Authenticator,
    method: str | None,
    headers: Mapping[str, str],
    query_token: str | None,
) -> str | None:
    """The token a request carries for ``authenticator``, or None.

    ``method`` is the HTTP method (None for a WebSocket handshake),
    ``headers`` are looked up by lower-case name and ``query_token`` is the
    ``access_token`` query value. A :class:`CookieAuthenticator` also reads
    its cookie (see there for when); any other reads the header, then the
    query (:func:`token_from_headers`).

    :raises AuthError: for malformed credentials, or a cookie where it may
        not authenticate.
    """
    if isinstance(authenticator, CookieAuthenticator):
        return authenticator.token_from_request(method, headers, query_token)
    return token_from_headers(headers.get("authorization"), query_token)


async def prepare(authenticator: Authenticator, token: str | None) -> None:
    """Let ``authenticator`` fetch what checking ``token`` needs (off the event loop).

    A no-op for authenticators that fetch nothing; never raises.
    """
    if isinstance(authenticator, KeyFetching) and authenticator.fetches_keys:
        await authenticator.prepare(token)
