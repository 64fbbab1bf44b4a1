"""CookieAuthenticator: where a cookie is a credential, and where it never is (CSRF).

Sans-I/O: :meth:`CookieAuthenticator.token_from_request` takes the method
(None for a WebSocket handshake), the headers and the query token.
"""

from __future__ import annotations

from typing import Any

import pytest

from icefloe.transport.auth import (
    ApiKeyAuthenticator,
    AuthError,
    CookieAuthenticator,
    JwtAuthenticator,
    request_token,
)

KEY = "acme-key-0123456789abcdef"
OTHER = "other-key-0123456789abcdef"
HOST = "api.example:8765"
APP = "https://app.example"


def keys() -> ApiKeyAuthenticator:
    return ApiKeyAuthenticator({KEY: {"tenant": "acme", "scopes": ["streams:read"]}})


@pytest.fixture
def cookies() -> CookieAuthenticator:
    return CookieAuthenticator(keys(), "sid", allowed_origins=[APP])


def token(
    auth: CookieAuthenticator, method: str | None, query: str | None = None, **headers: str
) -> str | None:
    return auth.token_from_request(method, {"host": HOST, **headers}, query)


def refused(auth: CookieAuthenticator, method: str | None, **headers: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        token(auth, method, **headers)
    return info.value


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "get"])
def test_a_cookie_authenticates_safe_methods(cookies: CookieAuthenticator, method: str) -> None:
    assert token(cookies, method, cookie=f"theme=dark; sid={KEY}; lang=en") == KEY
    assert cookies.authenticate(KEY).tenant == "acme"


@pytest.mark.parametrize("method", ["POST", "DELETE", "PUT", "PATCH"])
def test_a_cookie_alone_never_authenticates_an_unsafe_method(
    cookies: CookieAuthenticator, method: str
) -> None:
    error = refused(cookies, method, cookie=f"sid={KEY}", origin=APP)
    assert error.status == 401
    assert str(error) == (
        f"a cookie does not authenticate {method}; send the token in the Authorization header"
    )
    # With the header token the cookie is not needed (and not used).
    assert token(cookies, method, cookie=f"sid={OTHER}", authorization=f"Bearer {KEY}") == KEY


def test_the_header_and_the_query_win_over_the_cookie(cookies: CookieAuthenticator) -> None:
    assert token(cookies, "GET", cookie=f"sid={OTHER}", authorization=f"Bearer {KEY}") == KEY
    assert token(cookies, "GET", KEY, cookie=f"sid={OTHER}") == KEY


@pytest.mark.parametrize("origin", [APP, f"http://{HOST}", f"https://{HOST}"])
def test_a_websocket_handshake_needs_an_allowed_or_own_origin(
    cookies: CookieAuthenticator, origin: str
) -> None:
    assert token(cookies, None, cookie=f"sid={KEY}", origin=origin) == KEY


def test_a_websocket_handshake_without_origin_is_refused(cookies: CookieAuthenticator) -> None:
    error = refused(cookies, None, cookie=f"sid={KEY}")
    assert (error.status, str(error)) == (
        401,
        "a cookie authenticates a WebSocket only with an Origin header",
    )


@pytest.mark.parametrize("method", ["GET", None])
def test_a_foreign_origin_may_not_use_the_cookie(
    cookies: CookieAuthenticator, method: str | None
) -> None:
    error = refused(cookies, method, cookie=f"sid={KEY}", origin="https://evil.example")
    assert (error.status, str(error)) == (403, "origin not allowed to use the cookie")


def test_no_cookie_is_no_token(cookies: CookieAuthenticator) -> None:
    assert token(cookies, "GET") is None
    assert token(cookies, "GET", cookie="other=1; sidx=2") is None


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        (f'sid="{KEY}"', KEY),  # quoted, as RFC 6265 allows
        (f"sid={KEY}; sid={OTHER}", KEY),  # the first (the most specific path)
        (f"  sid = {KEY} ", KEY),
    ],
)
def test_cookie_parsing(cookies: CookieAuthenticator, cookie: str, expected: str) -> None:
    assert token(cookies, "GET", cookie=cookie) == expected


@pytest.mark.parametrize("value", ["", "a b", "é" * 10, "x" * 9000, "a,b"])
def test_a_malformed_cookie_token_is_401(cookies: CookieAuthenticator, value: str) -> None:
    error = refused(cookies, "GET", cookie=f"sid={value}")
    assert error.status == 401
    assert value not in str(error) or not value


def test_request_token_reads_the_cookie_only_for_a_cookie_authenticator(
    cookies: CookieAuthenticator,
) -> None:
    headers = {"cookie": f"sid={KEY}", "host": HOST}
    assert request_token(cookies, "GET", headers, None) == KEY
    assert request_token(keys(), "GET", headers, None) is None


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("bad name", {}), ("a;b", {}), ("", {}), ("sid", {"allowed_origins": ["*"]})],
)
def test_settings_are_validated(name: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CookieAuthenticator(keys(), name, **kwargs)


def test_key_fetching_passes_through() -> None:
    jwks = JwtAuthenticator(jwks="https://idp.example/jwks.json")
    assert CookieAuthenticator(jwks).fetches_keys
    assert not CookieAuthenticator(keys()).fetches_keys
    assert CookieAuthenticator(keys()).cookie_name == "icefloe_token"
