"""JWTs from real identity providers (issue 16, item 5): Auth0, Keycloak and Cognito shapes.

Each token is signed RS256 with a key generated here and published by a real
JWKS endpoint on 127.0.0.1 (tests/idp.py); the authenticator finds the key by
``kid`` through :class:`JwksKeys`. Also: configurable tenant and scopes claims
(dotted paths), required claims, and time claims that must be numbers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning

from icefloe.transport.auth import (
    AuthError,
    JwksKeys,
    JwtAuthenticator,
    Principal,
    Scope,
    prepare,
)
from idp import (
    AUTH0_API,
    AUTH0_ISSUER,
    AUTH0_TENANT_CLAIM,
    COGNITO_ISSUER,
    KEYCLOAK_ISSUER,
    JwksServer,
    SigningKey,
    auth0_claims,
    cognito_claims,
    jwks_server,
    keycloak_claims,
)

SECRET = "s3cret-that-is-long-enough-for-hs256!!"


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey("2024-06-key")


@pytest.fixture
def idp(key: SigningKey) -> Iterator[JwksServer]:
    with jwks_server(key) as server:
        yield server


async def check(authenticator: JwtAuthenticator, token: str) -> Principal:
    """What the edge does: prepare (fetch keys off the loop), then authenticate."""
    await prepare(authenticator, token)
    return authenticator.authenticate(token)


async def refused(authenticator: JwtAuthenticator, token: str) -> str:
    await prepare(authenticator, token)
    with pytest.raises(AuthError) as info:
        authenticator.authenticate(token)
    assert info.value.status == 401
    assert token not in str(info.value)
    return str(info.value)


# -- Auth0 ----------------------------------------------------------------------------


def auth0(idp: JwksServer, **kwargs: Any) -> JwtAuthenticator:
    return JwtAuthenticator(
        jwks=idp.url,
        audience=AUTH0_API,
        issuer=AUTH0_ISSUER,
        tenant_claim=AUTH0_TENANT_CLAIM,
        **kwargs,
    )


async def test_auth0_token_with_an_audience_list(idp: JwksServer, key: SigningKey) -> None:
    principal = await check(auth0(idp), key.sign(auth0_claims()))
    assert principal.subject == "auth0|64f1c2a9e1d3b2a1c0ffee01"
    assert principal.tenant == "acme"  # the namespaced claim, found by its whole name
    assert principal.scopes == {Scope.STREAMS_START, Scope.STREAMS_READ}  # "openid" ignored


async def test_a_token_with_aud_is_refused_without_a_configured_audience(
    idp: JwksServer, key: SigningKey
) -> None:
    authenticator = JwtAuthenticator(
        jwks=idp.url, issuer=AUTH0_ISSUER, tenant_claim=AUTH0_TENANT_CLAIM
    )
    reason = await refused(authenticator, key.sign(auth0_claims()))
    assert "no audience" in reason


async def test_auth0_token_for_another_api_or_issuer_is_refused(
    idp: JwksServer, key: SigningKey
) -> None:
    other_api = {**auth0_claims(), "aud": ["https://other.example"]}
    assert await refused(auth0(idp), key.sign(other_api)) == "token audience not accepted"
    other_issuer = {**auth0_claims(), "iss": "https://evil.eu.auth0.com/"}
    assert await refused(auth0(idp), key.sign(other_issuer)) == "token issuer not accepted"


async def test_auth0_permissions_list_as_a_second_scopes_claim(
    idp: JwksServer, key: SigningKey
) -> None:
    # Auth0's RBAC puts the API's permissions in a "permissions" list.
    claims = {**auth0_claims(scope="openid"), "permissions": ["streams:cancel"]}
    authenticator = auth0(idp, scopes_claims=("scope", "permissions"))
    principal = await check(authenticator, key.sign(claims))
    assert principal.scopes == {Scope.STREAMS_CANCEL}


# -- Keycloak ---------------------------------------------------------------------------


async def test_keycloak_realm_roles_by_dotted_path(idp: JwksServer, key: SigningKey) -> None:
    authenticator = JwtAuthenticator(
        jwks=idp.url,
        audience="account",
        issuer=KEYCLOAK_ISSUER,
        tenant_claim="org.tenant",
        scopes_claims=("realm_access.roles",),
    )
    roles = ("streams:read", "topics:read")
    principal = await check(authenticator, key.sign(keycloak_claims(roles=roles)))
    assert principal.tenant == "acme"
    assert principal.scopes == {Scope.STREAMS_READ, Scope.TOPICS_READ}


async def test_a_missing_nested_tenant_is_refused(idp: JwksServer, key: SigningKey) -> None:
    authenticator = JwtAuthenticator(
        jwks=idp.url, audience="account", issuer=KEYCLOAK_ISSUER, tenant_claim="org.tenant"
    )
    claims = {**keycloak_claims(), "org": {"name": "Acme"}}
    assert "org.tenant" in await refused(authenticator, key.sign(claims))


async def test_a_scopes_claim_of_the_wrong_shape_is_refused(
    idp: JwksServer, key: SigningKey
) -> None:
    authenticator = JwtAuthenticator(
        jwks=idp.url,
        audience="account",
        issuer=KEYCLOAK_ISSUER,
        tenant_claim="org.tenant",
        scopes_claims=("realm_access",),  # an object, not roles
    )
    reason = await refused(authenticator, key.sign(keycloak_claims()))
    assert "must be a string or a list of strings" in reason


# -- Cognito ----------------------------------------------------------------------------


def cognito(idp: JwksServer) -> JwtAuthenticator:
    return JwtAuthenticator(
        jwks=idp.url,
        issuer=COGNITO_ISSUER,
        tenant_claim="custom:tenant",
        scopes_claims=("cognito:groups",),
        required_claims={"token_use": "access"},
    )


async def test_cognito_access_token_with_groups(idp: JwksServer, key: SigningKey) -> None:
    principal = await check(cognito(idp), key.sign(cognito_claims()))
    assert principal.tenant == "acme"
    assert principal.scopes == {Scope.STREAMS_START, Scope.STREAMS_READ}


async def test_cognito_id_token_is_not_taken_for_an_access_token(
    idp: JwksServer, key: SigningKey
) -> None:
    authenticator = JwtAuthenticator(
        jwks=idp.url,
        audience="4p3q2r1s0t9u8v7w6x5y4z3a2b",
        issuer=COGNITO_ISSUER,
        tenant_claim="custom:tenant",
        scopes_claims=("cognito:groups",),
        required_claims={"token_use": "access"},
    )
    reason = await refused(authenticator, key.sign(cognito_claims(use="id")))
    assert reason == "token 'token_use' claim not accepted"


# -- what a JWKS key may verify -----------------------------------------------------------


async def test_a_token_signed_by_another_key_with_a_known_kid_is_forged(
    idp: JwksServer, key: SigningKey
) -> None:
    impostor = SigningKey(key.kid)
    assert await refused(cognito(idp), impostor.sign(cognito_claims())) == (
        "token signature is invalid"
    )


async def test_hs256_token_with_a_jwks_kid_is_refused(idp: JwksServer, key: SigningKey) -> None:
    # Algorithm confusion: HMAC "signed" with something public.
    token = jwt.encode(cognito_claims(), SECRET, algorithm="HS256", headers={"kid": key.kid})
    assert await refused(cognito(idp), token) == "token algorithm not allowed"


async def test_a_token_without_kid_is_refused(idp: JwksServer, key: SigningKey) -> None:
    token = jwt.encode(cognito_claims(), key.private, algorithm="RS256")
    assert await refused(cognito(idp), token) == "token header lacks a 'kid'"


async def test_a_short_rsa_key_in_the_set_is_refused() -> None:
    weak = SigningKey("weak", bits=1024)
    with pytest.warns(InsecureKeyLengthWarning):
        token = weak.sign(cognito_claims())
    with jwks_server(weak) as server:
        reason = await refused(cognito(server), token)
    assert reason == "invalid token"


def test_jwks_allows_only_asymmetric_algorithms() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        JwtAuthenticator(jwks="https://idp.example/jwks.json", algorithms=["HS256"])
    ok = JwtAuthenticator(jwks="https://idp.example/jwks.json", algorithms=["RS256", "ES256"])
    assert ok.algorithms == ("RS256", "ES256")
    assert ok.fetches_keys


def test_jwks_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="scheme"):
        JwtAuthenticator(jwks="file:///etc/passwd")


def test_only_one_key_source() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        JwtAuthenticator(secret=SECRET, jwks=JwksKeys("https://idp.example/jwks.json"))


# -- claims: names, paths and types ---------------------------------------------------------


def hs256(**claims: Any) -> str:
    base: dict[str, Any] = {"sub": "alice", "tenant": "acme", "exp": int(time.time()) + 300}
    return jwt.encode({**base, **claims}, SECRET, algorithm="HS256")


def test_time_claims_as_numbers_are_accepted() -> None:
    now = time.time()
    token = hs256(exp=now + 300.5, nbf=int(now) - 10, iat=now)
    assert JwtAuthenticator(secret=SECRET).authenticate(token).tenant == "acme"


def test_a_whole_claim_name_wins_over_a_dotted_path() -> None:
    token = hs256(**{"org.tenant": "flat", "org": {"tenant": "nested"}})
    assert JwtAuthenticator(secret=SECRET, tenant_claim="org.tenant").authenticate(
        token
    ).tenant == ("flat")


def test_a_scopes_claim_may_be_a_string_or_a_list() -> None:
    authenticator = JwtAuthenticator(secret=SECRET, scopes_claims=("perms", "roles"))
    token = hs256(perms="streams:read admin:nothing", roles=["topics:read", "viewer"])
    assert authenticator.authenticate(token).scopes == {Scope.STREAMS_READ, Scope.TOPICS_READ}


def test_required_claims_must_match_exactly() -> None:
    authenticator = JwtAuthenticator(secret=SECRET, required_claims={"token_use": "access"})
    assert authenticator.authenticate(hs256(token_use="access")).subject == "alice"
    for token in (hs256(token_use="id"), hs256()):
        with pytest.raises(AuthError, match="'token_use' claim not accepted"):
            authenticator.authenticate(token)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scopes_claims": "scope"},
        {"scopes_claims": ("",)},
        {"required_claims": {"": "x"}},
        {"required_claims": {"token_use": 1}},
    ],
)
def test_claim_settings_are_validated(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        JwtAuthenticator(secret=SECRET, **kwargs)
