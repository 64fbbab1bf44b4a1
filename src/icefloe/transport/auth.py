"""Who is calling: principals, scopes, and the authenticators that produce them.

The edge turns a request's credentials into a :class:`Principal` (a subject,
a tenant and a set of :class:`Scope`) in two steps, both framework-free so the
ASGI app passes plain strings:

1. :func:`token_from_headers` takes the ``Authorization`` header (only the
   ``Bearer`` scheme) or, failing that, the ``access_token`` query value
   (for browser ``EventSource``, which cannot set headers; less safe, since
   URLs end up in logs and browser history).
2. An :class:`Authenticator` checks the token: :class:`ApiKeyAuthenticator`
   (a JSON key file), :class:`JwtAuthenticator` (HS*, or RS*/PS*/ES*/EdDSA with
   a public key), :class:`ChainAuthenticator` (both), or :class:`NoAuth`.

Failures raise :class:`AuthError`: 401 ``unauthorized`` for missing, malformed,
unknown, expired or forged credentials, 403 ``forbidden`` for a principal that
lacks a scope. No message ever contains the token, and hostile input (huge,
control characters, non-ASCII) is an :class:`AuthError`, never another
exception. Use :func:`redact` to mention a token in a log line.

This module is the one to import from. It defines :class:`NoAuth` and
:class:`ChainAuthenticator` and re-exports the rest from where it lives:
:mod:`~icefloe.transport.principals` (principals, scopes, tokens),
:mod:`~icefloe.transport.api_keys` and :mod:`~icefloe.transport.jwt_auth`.
"""

from __future__ import annotations

import re

from icefloe.transport.api_keys import MIN_API_KEY_LENGTH, ApiKeyAuthenticator
from icefloe.transport.jwt_auth import JwtAuthenticator
from icefloe.transport.principals import (
    MAX_TOKEN_LENGTH,
    Authenticator,
    AuthError,
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
    "JwtAuthenticator",
    "NoAuth",
    "Principal",
    "Scope",
    "redact",
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
