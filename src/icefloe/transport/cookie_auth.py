"""Tokens from a cookie, where that is CSRF-safe: :class:`CookieAuthenticator`.

A browser sends cookies with every request to the server, including those a
page on another site makes it send. So a cookie is a credential only where a
forged request can do no harm or is recognisable as forged:

* an HTTP request with a safe method (``GET``, ``HEAD``, ``OPTIONS``): reads,
  whose response another site's script cannot see without CORS allowing it;
* a WebSocket handshake that carries an ``Origin`` header naming the server
  itself or an allowed origin (browsers always send it; its absence means a
  non-browser client, which can send a header instead).

An unsafe method (``POST``, ``DELETE``, ...) with only a cookie is a 401: it
needs the token in the ``Authorization`` header, which another site cannot
make a browser send. A safe request whose ``Origin`` is foreign is a 403.
The header and the ``access_token`` query value still work and win over the
cookie.

The cookie's value is the token itself, checked by the wrapped authenticator
(an API key or a JWT), e.g. set by the application's login with
``Set-Cookie: icefloe_token=<jwt>; HttpOnly; Secure; SameSite=Lax; Path=/v1``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

from icefloe.transport.principals import (
    Authenticator,
    AuthError,
    KeyFetching,
    Principal,
    require_token,
    token_from_headers,
)

__all__ = ["DEFAULT_COOKIE_NAME", "SAFE_METHODS", "CookieAuthenticator"]

#: the cookie read when no name is given
DEFAULT_COOKIE_NAME: Final = "icefloe_token"
#: HTTP methods a cookie alone may authenticate (RFC 9110 section 9.2.1)
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
# RFC 6265 cookie-name: an RFC 7230 token.
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class CookieAuthenticator:
    """``inner``'s tokens, from the header, the query or the ``cookie_name`` cookie.

    ``allowed_origins`` are the browser origins (``https://app.example``)
    besides the server's own whose pages may use the cookie; ``*`` is
    refused, since it would let any site's script read with the user's
    cookie.

    :raises ValueError: for an invalid cookie name or a ``*`` origin.
    """

    __slots__ = ("_inner", "allowed_origins", "cookie_name")

    def __init__(
        self,
        inner: Authenticator,
        cookie_name: str = DEFAULT_COOKIE_NAME,
        *,
        allowed_origins: Sequence[str] = (),
    ) -> None:
        if not isinstance(cookie_name, str) or _COOKIE_NAME.fullmatch(cookie_name) is None:
            raise ValueError(f"cookie_name must be an RFC 6265 cookie name, got {cookie_name!r}")
        if isinstance(allowed_origins, str) or "*" in allowed_origins:
            raise ValueError(
                "allowed_origins must be a sequence of origins, and not '*': "
                "a cookie would then authenticate any site's requests"
            )
        self._inner = inner
        self.cookie_name = cookie_name
        self.allowed_origins = tuple(allowed_origins)

    def __repr__(self) -> str:
        return f"CookieAuthenticator({self._inner!r}, {self.cookie_name!r})"

    def authenticate(self, token: str | None) -> Principal:
        """The wrapped authenticator's principal for ``token``."""
        return self._inner.authenticate(token)

    @property
    def fetches_keys(self) -> bool:
        """Whether the wrapped authenticator fetches keys (see :class:`KeyFetching`)."""
        return isinstance(self._inner, KeyFetching) and self._inner.fetches_keys

    async def prepare(self, token: str | None) -> None:
        """The wrapped authenticator's :meth:`KeyFetching.prepare`, if it has one."""
        if isinstance(self._inner, KeyFetching):
            await self._inner.prepare(token)

    def token_from_request(
        self, method: str | None, headers: Mapping[str, str], query_token: str | None
    ) -> str | None:
        """The request's token: header, then ``access_token``, then the cookie.

        ``method`` is the HTTP method, or None for a WebSocket handshake;
        ``headers`` are looked up by lower-case name.

        :raises AuthError: as :func:`token_from_headers`; 401 for a cookie on
            an unsafe method or on a WebSocket handshake without ``Origin``;
            403 for a cookie sent from a foreign ``Origin``.
        """
        authorization = headers.get("authorization")
        if authorization is not None or query_token is not None:
            return token_from_headers(authorization, query_token)
        token = _cookie_value(headers.get("cookie"), self.cookie_name)
        if token is None:
            return None
        if method is not None and method.upper() not in SAFE_METHODS:
            raise AuthError.unauthorized(
                f"a cookie does not authenticate {method.upper()}; "
                "send the token in the Authorization header"
            )
        origin = headers.get("origin")
        if origin is None:
            if method is None:
                raise AuthError.unauthorized(
                    "a cookie authenticates a WebSocket only with an Origin header"
                )
            return token
        if origin in self.allowed_origins or _same_origin(origin, headers.get("host")):
            return token
        raise AuthError.forbidden("origin not allowed to use the cookie")


def _cookie_value(header: str | None, name: str) -> str | None:
    """The first ``name`` cookie in a ``Cookie`` header, unquoted; None if absent.

    :raises AuthError: 401 if its value is not a well-formed token.
    """
    if header is None:
        return None
    for pair in header.split(";"):
        key, sep, value = pair.strip().partition("=")
        if sep and key.strip() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return require_token(value) if value else require_token(None)
    return None


def _same_origin(origin: str, host: str | None) -> bool:
    # The server's own pages: the Origin's host and port are the Host header's.
    return host is not None and origin.split("://", 1)[-1] == host
