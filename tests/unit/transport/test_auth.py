"""Tests for icefloe.transport.auth: principals, token parsing and the authenticators."""

from __future__ import annotations

import base64
import gc
import hashlib
import hmac
import json
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.exceptions import IcefloeError
from icefloe.transport.auth import (
    MAX_TOKEN_LENGTH,
    ApiKeyAuthenticator,
    Authenticator,
    AuthError,
    ChainAuthenticator,
    JwtAuthenticator,
    NoAuth,
    Principal,
    Scope,
    redact,
    token_from_headers,
)

PROPERTY = settings(max_examples=300, deadline=None)

SECRET = "s3cret-that-is-long-enough-for-hs256!!"
KEY_A = "key-aaaaaaaaaaaaaaaaaaaaaaaa"
KEY_B = "key-bbbbbbbbbbbbbbbbbbbbbbbb"


# -- key material and token helpers ---------------------------------------------------


def _public_pem(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | Any) -> bytes:
    return bytes(
        private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for tenant ``acme``; ``None`` values are removed."""
    base: dict[str, Any] = {
        "sub": "alice",
        "tenant": "acme",
        "scope": "streams:start streams:read",
        "exp": int(time.time()) + 300,
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hand_made(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None) -> str:
    """A JWT built by hand, for tokens PyJWT refuses to sign (``none``, a PEM as secret)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = b""
    if hmac_key is not None:
        signature = hmac.new(hmac_key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def assert_401(authenticator: Authenticator, token: str | None) -> AuthError:
    with pytest.raises(AuthError) as info:
        authenticator.authenticate(token)
    error = info.value
    assert (error.status, error.code) == (401, "unauthorized")
    if token:
        assert token not in str(error)
        assert token not in repr(error)
    return error


# -- Scope, Principal, AuthError --------------------------------------------------------


def test_scope_values_are_the_wire_strings() -> None:
    assert [s.value for s in Scope] == [
        "streams:start",
        "streams:read",
        "streams:cancel",
        "topics:publish",
        "topics:read",
        "metrics",
        "admin",
    ]


def test_principal_scopes_and_tenant_rules() -> None:
    reader = Principal("bob", "acme", frozenset({Scope.STREAMS_READ}))
    assert reader.has(Scope.STREAMS_READ)
    assert not reader.has(Scope.STREAMS_START)
    assert not reader.has(Scope.ADMIN)
    assert reader.can_access_tenant("acme")
    assert not reader.can_access_tenant("globex")
    assert not reader.can_access_tenant("*")


def test_admin_implies_every_scope_and_tenant() -> None:
    admin = Principal("root", "acme", frozenset({Scope.ADMIN}))
    assert all(admin.has(scope) for scope in Scope)
    assert admin.can_access_tenant("globex")


def test_unrestricted_principal_may_do_anything() -> None:
    anyone = Principal.unrestricted()
    assert anyone.tenant == "*"
    assert anyone.scopes == frozenset(Scope)
    assert anyone.can_access_tenant("acme")
    assert anyone.can_access_tenant("globex")


def test_require_raises_403_for_a_missing_scope() -> None:
    reader = Principal("bob", "acme", frozenset({Scope.STREAMS_READ}))
    reader.require(Scope.STREAMS_READ)
    with pytest.raises(AuthError) as info:
        reader.require(Scope.STREAMS_CANCEL)
    assert (info.value.status, info.value.code) == (403, "forbidden")
    assert "streams:cancel" in str(info.value)


def test_principal_normalises_scope_strings() -> None:
    principal = Principal("bob", "acme", frozenset({"topics:read"}))  # type: ignore[arg-type]
    assert principal.scopes == frozenset({Scope.TOPICS_READ})
    assert all(type(s) is Scope for s in principal.scopes)


@pytest.mark.parametrize(
    ("subject", "tenant", "scopes"),
    [("", "acme", []), ("bob", "", []), ("bob", "acme", ["streams:everything"])],
)
def test_principal_rejects_invalid_fields(subject: str, tenant: str, scopes: list[str]) -> None:
    with pytest.raises(ValueError):
        Principal(subject, tenant, frozenset(scopes))  # type: ignore[arg-type]


def test_auth_error_codes() -> None:
    assert issubclass(AuthError, IcefloeError)
    assert AuthError.unauthorized("x").code == "unauthorized"
    assert AuthError.forbidden("y").code == "forbidden"
    assert str(AuthError.forbidden("missing scope")) == "missing scope"
    with pytest.raises(ValueError):
        AuthError(404, "nope")  # type: ignore[arg-type]


def test_redact_shows_no_character_of_the_token() -> None:
    token = "abcdefghijklmnop"
    assert token[:3] not in redact(token)
    assert "16" in redact(token)
    assert redact(None) == "<no token>"


# -- token_from_headers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc.def-ghi_~+/==", "abc.def-ghi_~+/=="),
        ("bearer abc", "abc"),
        ("BEARER abc", "abc"),
        ("  Bearer    abc  ", "abc"),
    ],
)
def test_bearer_header(header: str, expected: str) -> None:
    assert token_from_headers(header, None) == expected


def test_query_token_is_the_fallback_and_the_header_wins() -> None:
    assert token_from_headers(None, None) is None
    assert token_from_headers(None, "from-query") == "from-query"
    assert token_from_headers("Bearer from-header", "from-query") == "from-header"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token abc",
        "Bearerabc",
        "Bearer abc def",
        "Bearer abc\x00",
        "Bearer abc\r\nX-Injected: 1",
        "Bearer ab\x7fc",
        "Bearer tökén",
        "B\u0435arer abc",  # a Cyrillic "e"
        "Bearer =abc",
        "Bearer " + "a" * (MAX_TOKEN_LENGTH + 1),
        "Bearer " + " " * 100_000 + "abc",
        "x" * 1_000_000,
    ],
)
def test_malformed_headers_are_401(header: str) -> None:
    with pytest.raises(AuthError) as info:
        token_from_headers(header, None)
    assert info.value.status == 401


@pytest.mark.parametrize("query", ["", "a b", "a\nb", "ünïcode", "a" * (MAX_TOKEN_LENGTH + 1)])
def test_malformed_query_tokens_are_401(query: str) -> None:
    with pytest.raises(AuthError) as info:
        token_from_headers(None, query)
    assert info.value.status == 401


def test_token_of_max_length_is_accepted() -> None:
    token = "a" * MAX_TOKEN_LENGTH
    assert token_from_headers(f"Bearer {token}", None) == token


def token_or_status(authorization: str | None, query: str | None) -> str | int | None:
    """The token :func:`token_from_headers` finds, or the status of its AuthError."""
    try:
        return token_from_headers(authorization, query)
    except AuthError as exc:
        return exc.status


@PROPERTY
@given(st.one_of(st.none(), st.text()), st.one_of(st.none(), st.text()))
def test_token_from_headers_never_raises_anything_but_auth_error(
    authorization: str | None, query: str | None
) -> None:
    token = token_or_status(authorization, query)
    if isinstance(token, str):
        assert 0 < len(token) <= MAX_TOKEN_LENGTH
        assert token.isascii()
    else:
        assert token in (None, 401)


@PROPERTY
@given(st.from_regex(r"\A[Bb]earer +[ -~]{0,40}\Z"))
def test_token_from_headers_on_near_bearer_values(authorization: str) -> None:
    token = token_or_status(authorization, None)
    if isinstance(token, str):
        assert authorization.rstrip().endswith(token)
    else:
        assert token == 401


# -- NoAuth -----------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "anything", "x y"])
def test_no_auth_is_unrestricted_whatever_the_token(token: str | None) -> None:
    assert NoAuth().authenticate(token) == Principal.unrestricted()


# -- API keys ---------------------------------------------------------------------

KEYS: dict[str, dict[str, Any]] = {
    KEY_A: {"tenant": "acme", "scopes": ["streams:start", "streams:read"]},
    KEY_B: {"tenant": "globex", "scopes": ["admin"], "subject": "ops-bot"},
}


def test_api_key_maps_to_its_grant() -> None:
    auth = ApiKeyAuthenticator(KEYS)
    assert auth.authenticate(KEY_A) == Principal(
        "apikey:acme#1", "acme", frozenset({Scope.STREAMS_START, Scope.STREAMS_READ})
    )
    assert auth.authenticate(KEY_B) == Principal("ops-bot", "globex", frozenset({Scope.ADMIN}))
    assert len(auth) == 2


@pytest.mark.parametrize(
    "token", [None, "", "key-cccccccccccccccccccccccc", KEY_A[:-1], KEY_A + "a", "a b"]
)
def test_unknown_or_malformed_api_keys_are_401(token: str | None) -> None:
    assert_401(ApiKeyAuthenticator(KEYS), token)


def held_by(root: object) -> list[object]:
    """Every object ``root`` holds, directly or not, as the garbage collector
    sees it (what a memory dump of it would show); classes, modules and
    functions are shared code, not its state, and are not followed."""
    shared = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
    seen, todo, found = {id(root)}, [root], []
    while todo:
        for ref in gc.get_referents(todo.pop()):
            if id(ref) not in seen and not isinstance(ref, shared):
                seen.add(id(ref))
                found.append(ref)
                todo.append(ref)
    return found


def test_api_keys_are_kept_only_as_digests() -> None:
    auth = ApiKeyAuthenticator(KEYS)
    held = held_by(auth)
    texts = [repr(auth)] + [x for x in held if isinstance(x, str)]
    blobs = [bytes(x) for x in held if isinstance(x, bytes | bytearray)]
    for key in KEYS:
        assert not any(key in text for text in texts)
        assert not any(key.encode() in blob for blob in blobs)
        # The walk does see the stored state: the key's digest is there.
        assert hashlib.sha256(key.encode()).digest() in blobs


def test_api_key_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(KEYS), encoding="utf-8")
    auth = ApiKeyAuthenticator.from_file(path)
    assert auth.authenticate(KEY_B).subject == "ops-bot"


def test_missing_api_key_file_is_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        ApiKeyAuthenticator.from_file(tmp_path / "absent.json")


def test_api_key_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_bytes(b'{"\xff\xfe": 1}')
    with pytest.raises(ValueError, match="not UTF-8"):
        ApiKeyAuthenticator.from_file(path)


GOOD = '{"tenant": "acme", "scopes": []}'


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{", "not valid JSON"),
        (f'{{"{KEY_A}": ', "not valid JSON"),
        (f'["{KEY_A}"]', "must be a JSON object"),
        ("{}", "holds no API keys"),
        (f'{{"{KEY_A}": {GOOD}, "{KEY_B}": 3}}', "entry #2: the grant must be an object"),
        (f'{{"{KEY_A}": {GOOD}, "{KEY_A}": {GOOD}}}', "entry #2: repeats the key of entry #1"),
        (f'{{"{KEY_A}": {{"scopes": []}}}}', "entry #1: 'tenant'"),
        (f'{{"{KEY_A}": {{"tenant": 7, "scopes": []}}}}', "entry #1: 'tenant'"),
        (f'{{"{KEY_A}": {{"tenant": "*", "scopes": []}}}}', "entry #1: 'tenant'"),
        (f'{{"{KEY_A}": {{"tenant": "a cme", "scopes": []}}}}', "entry #1: 'tenant'"),
        (f'{{"{KEY_A}": {{"tenant": "acme"}}}}', "entry #1: 'scopes' is missing"),
        (f'{{"{KEY_A}": {{"tenant": "acme", "scopes": "admin"}}}}', "list of strings"),
        (f'{{"{KEY_A}": {{"tenant": "acme", "scopes": [1]}}}}', "list of strings"),
        (f'{{"{KEY_A}": {{"tenant": "acme", "scopes": ["root"]}}}}', "unknown scope 'root'"),
        (f'{{"{KEY_A}": {{"tenant": "acme", "scopes": [], "role": 1}}}}', "unknown field"),
        (f'{{"{KEY_A}": {{"tenant": "acme", "tenant": "x", "scopes": []}}}}', "appears twice"),
        (f'{{"{KEY_A}": {{"tenant": "acme", "scopes": [], "subject": ""}}}}', "'subject'"),
        (f'{{"short-key": {GOOD}}}', "entry #1: the key must be 16 to"),
        (f'{{"{KEY_A} with spaces": {GOOD}}}', "entry #1: the key may hold only"),
        (f'{{"{KEY_A}ü": {GOOD}}}', "entry #1: the key may hold only"),
    ],
)
def test_api_key_file_errors_name_the_entry_but_not_the_key(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        ApiKeyAuthenticator.from_json(text, source="keys.json")
    message = str(info.value)
    assert message.startswith("keys.json: ")
    for key in (KEY_A, KEY_B, "short-key"):
        assert key not in message


def test_api_key_mapping_is_validated_too() -> None:
    with pytest.raises(ValueError, match="entry #1: 'scopes' must be a list"):
        ApiKeyAuthenticator({KEY_A: {"tenant": "acme", "scopes": "admin"}})


# -- JWT: valid tokens ----------------------------------------------------------------


def test_hs256_token_gives_its_principal() -> None:
    auth = JwtAuthenticator(secret=SECRET)
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert auth.authenticate(token) == Principal(
        "alice", "acme", frozenset({Scope.STREAMS_START, Scope.STREAMS_READ})
    )


def test_rs256_token_gives_its_principal(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = JwtAuthenticator(public_key=_public_pem(rsa_key))
    token = jwt.encode(claims(scope="admin"), rsa_key, algorithm="RS256")
    assert auth.authenticate(token) == Principal("alice", "acme", frozenset({Scope.ADMIN}))
    assert auth.algorithms == ("RS256",)


def test_es256_token_gives_its_principal(ec_key: ec.EllipticCurvePrivateKey) -> None:
    auth = JwtAuthenticator(public_key=_public_pem(ec_key).decode("ascii"))
    token = jwt.encode(claims(), ec_key, algorithm="ES256")
    assert auth.authenticate(token).tenant == "acme"
    assert auth.algorithms == ("ES256",)


def test_eddsa_token_gives_its_principal() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    auth = JwtAuthenticator(public_key=_public_pem(key))
    assert auth.authenticate(jwt.encode(claims(), key, algorithm="EdDSA")).subject == "alice"


def test_ps256_may_be_allowed_for_an_rsa_key(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = JwtAuthenticator(public_key=_public_pem(rsa_key), algorithms=["RS256", "PS256"])
    assert auth.authenticate(jwt.encode(claims(), rsa_key, algorithm="PS256")).tenant == "acme"


def test_scopes_from_scope_string_and_scopes_list_unknown_ignored() -> None:
    auth = JwtAuthenticator(secret=SECRET)
    token = jwt.encode(
        claims(scope="openid streams:read profile", scopes=["topics:read", "email"]),
        SECRET,
        algorithm="HS256",
    )
    assert auth.authenticate(token).scopes == {Scope.STREAMS_READ, Scope.TOPICS_READ}
    bare = jwt.encode(claims(scope=None), SECRET, algorithm="HS256")
    assert auth.authenticate(bare).scopes == frozenset()


def test_tenant_claim_is_configurable() -> None:
    auth = JwtAuthenticator(secret=SECRET, tenant_claim="org")
    token = jwt.encode(claims(tenant=None, org="initech"), SECRET, algorithm="HS256")
    assert auth.authenticate(token).tenant == "initech"
    assert_401(auth, jwt.encode(claims(), SECRET, algorithm="HS256"))


def test_audience_and_issuer_when_configured() -> None:
    auth = JwtAuthenticator(secret=SECRET, audience="icefloe", issuer="https://idp.example")
    good = claims(aud=["other", "icefloe"], iss="https://idp.example")
    assert auth.authenticate(jwt.encode(good, SECRET, algorithm="HS256")).subject == "alice"


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_time_claims_given_as_numeric_strings_are_refused(claim: str) -> None:
    # Issue 15 found exp="<future>" accepted: PyJWT takes int("...") of it.
    value = str(int(time.time()) + (300 if claim == "exp" else -10))
    token = jwt.encode(claims(**{claim: value}), SECRET, algorithm="HS256")
    with pytest.raises(AuthError) as info:
        JwtAuthenticator(secret=SECRET).authenticate(token)
    assert str(info.value) == f"token {claim!r} claim must be a number"


def test_expiry_leeway_defaults_to_30_seconds() -> None:
    recent = jwt.encode(claims(exp=int(time.time()) - 10), SECRET, algorithm="HS256")
    assert JwtAuthenticator(secret=SECRET).authenticate(recent).subject == "alice"
    assert_401(JwtAuthenticator(secret=SECRET, leeway_s=0), recent)


# -- JWT: refused tokens --------------------------------------------------------------

OTHER_SECRET = "another-secret-that-is-long-enough!!"

#: name -> (make the token from the RSA key, the expected reason)
RefusedCase = tuple[Callable[[rsa.RSAPrivateKey], str], str]
REFUSED_HS256: dict[str, RefusedCase] = {
    "malformed": (lambda _: "not-a-jwt", "malformed"),
    "garbage segments": (lambda _: "abc.def.ghi", "malformed"),
    "expired": (
        lambda _: jwt.encode(claims(exp=int(time.time()) - 3600), SECRET, algorithm="HS256"),
        "expired",
    ),
    "not yet valid": (
        lambda _: jwt.encode(claims(nbf=int(time.time()) + 3600), SECRET, algorithm="HS256"),
        "not yet valid",
    ),
    "no exp": (lambda _: jwt.encode(claims(exp=None), SECRET, algorithm="HS256"), "'exp'"),
    "forged (wrong secret)": (
        lambda _: jwt.encode(claims(), OTHER_SECRET, algorithm="HS256"),
        "signature",
    ),
    "tampered payload": (
        lambda _: _swap_payload(
            jwt.encode(claims(), SECRET, algorithm="HS256"), claims(tenant="globex")
        ),
        "signature",
    ),
    "alg none": (
        lambda _: hand_made({"alg": "none", "typ": "JWT"}, claims(), None),
        "algorithm",
    ),
    "HS512 when HS256 pinned": (
        lambda _: jwt.encode(claims(), SECRET * 2, algorithm="HS512"),
        "algorithm",
    ),
    "RS256 when a secret is configured": (
        lambda key: jwt.encode(claims(), key, algorithm="RS256"),
        "algorithm",
    ),
    "audience not configured": (
        lambda _: jwt.encode(claims(aud="someone"), SECRET, algorithm="HS256"),
        "audience",
    ),
    "no sub": (lambda _: jwt.encode(claims(sub=None), SECRET, algorithm="HS256"), "'sub'"),
    "sub not a string": (lambda _: jwt.encode(claims(sub=42), SECRET, algorithm="HS256"), ""),
    "no tenant": (
        lambda _: jwt.encode(claims(tenant=None), SECRET, algorithm="HS256"),
        "'tenant'",
    ),
    "tenant star": (
        lambda _: jwt.encode(claims(tenant="*"), SECRET, algorithm="HS256"),
        "'tenant'",
    ),
    "tenant not a string": (
        lambda _: jwt.encode(claims(tenant=["acme"]), SECRET, algorithm="HS256"),
        "'tenant'",
    ),
    "scope not a string": (
        lambda _: jwt.encode(claims(scope=["admin"]), SECRET, algorithm="HS256"),
        "'scope'",
    ),
    "scopes not a list": (
        lambda _: jwt.encode(claims(scopes="admin"), SECRET, algorithm="HS256"),
        "'scopes'",
    ),
    "huge exp": (
        lambda _: hand_made({"alg": "HS256"}, {**claims(), "exp": 1e400}, SECRET.encode()),
        "malformed",
    ),
}


def _swap_payload(token: str, payload: dict[str, Any]) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{_b64(json.dumps(payload).encode())}.{signature}"


@pytest.mark.parametrize("case", sorted(REFUSED_HS256))
def test_refused_hs256_tokens_are_401(case: str, rsa_key: rsa.RSAPrivateKey) -> None:
    make, reason = REFUSED_HS256[case]
    error = assert_401(JwtAuthenticator(secret=SECRET), make(rsa_key))
    assert reason in error.message


def test_missing_token_is_401() -> None:
    assert "missing" in assert_401(JwtAuthenticator(secret=SECRET), None).message


def test_wrong_audience_and_issuer_are_401() -> None:
    auth = JwtAuthenticator(secret=SECRET, audience="icefloe", issuer="https://idp.example")
    iss = "https://idp.example"
    for bad in (
        claims(aud="other", iss=iss),
        claims(iss=iss),
        claims(aud="icefloe", iss="https://evil.example"),
        claims(aud="icefloe"),
    ):
        assert_401(auth, jwt.encode(bad, SECRET, algorithm="HS256"))


def test_hs256_token_refused_when_rs256_configured(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = JwtAuthenticator(public_key=_public_pem(rsa_key))
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert "algorithm" in assert_401(auth, token).message


def test_hs256_signed_with_the_public_key_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = _public_pem(rsa_key)
    auth = JwtAuthenticator(public_key=pem)
    token = hand_made({"alg": "HS256", "typ": "JWT"}, claims(), pem)
    assert "algorithm" in assert_401(auth, token).message


def test_alg_none_refused_when_rs256_configured(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = JwtAuthenticator(public_key=_public_pem(rsa_key))
    assert_401(auth, hand_made({"alg": "none"}, claims(), None))


def test_token_from_another_rsa_key_is_forged(rsa_key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    auth = JwtAuthenticator(public_key=_public_pem(rsa_key))
    token = jwt.encode(claims(), other, algorithm="RS256")
    assert "signature" in assert_401(auth, token).message


def test_es256_token_refused_by_an_rsa_authenticator(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    auth = JwtAuthenticator(public_key=_public_pem(rsa_key))
    assert_401(auth, jwt.encode(claims(), ec_key, algorithm="ES256"))


@PROPERTY
@given(
    st.one_of(
        st.text(max_size=200),
        st.from_regex(r"\A[A-Za-z0-9_-]{0,60}\.[A-Za-z0-9_-]{0,60}\.[A-Za-z0-9_-]{0,60}\Z"),
    )
)
def test_authenticators_raise_only_auth_error_on_arbitrary_tokens(token: str) -> None:
    authenticators: list[Authenticator] = [
        JwtAuthenticator(secret=SECRET),
        ApiKeyAuthenticator(KEYS),
        ChainAuthenticator(ApiKeyAuthenticator(KEYS), JwtAuthenticator(secret=SECRET)),
    ]
    for auth in authenticators:
        with pytest.raises(AuthError):
            auth.authenticate(token)


JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10))


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["alg", "typ", "kid", "crit", "b64", "x"]) | st.text(max_size=5),
        JSON_VALUES | st.lists(JSON_VALUES, max_size=3),
        max_size=4,
    )
)
def test_jwt_with_arbitrary_header_raises_only_auth_error(header: dict[str, Any]) -> None:
    token = hand_made(header, claims(), SECRET.encode())
    with pytest.raises(AuthError):
        JwtAuthenticator(secret=SECRET).authenticate(token)


# -- JWT: configuration errors -----------------------------------------------------------


def test_exactly_one_key_is_required(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        JwtAuthenticator()
    with pytest.raises(ValueError, match="exactly one"):
        JwtAuthenticator(secret=SECRET, public_key=_public_pem(rsa_key))


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        JwtAuthenticator(secret="too-short")
    with pytest.raises(ValueError, match="at least 64 bytes"):
        JwtAuthenticator(secret=SECRET, algorithms=["HS256", "HS512"])


def test_pem_as_secret_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="PEM"):
        JwtAuthenticator(secret=_public_pem(rsa_key))


@pytest.mark.parametrize("algorithms", [["RS256"], ["none"], [], "HS256"])
def test_algorithms_outside_the_hmac_family_are_refused(algorithms: list[str]) -> None:
    with pytest.raises(ValueError, match="algorithms"):
        JwtAuthenticator(secret=SECRET, algorithms=algorithms)


@pytest.mark.parametrize("algorithms", [["HS256"], ["ES256"], ["RS256", "none"]])
def test_algorithms_outside_the_rsa_family_are_refused(
    algorithms: list[str], rsa_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(ValueError, match="do not fit"):
        JwtAuthenticator(public_key=_public_pem(rsa_key), algorithms=algorithms)


def test_ec_key_is_pinned_to_its_curve() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    assert JwtAuthenticator(public_key=_public_pem(p384)).algorithms == ("ES384",)
    with pytest.raises(ValueError, match="do not fit"):
        JwtAuthenticator(public_key=_public_pem(p384), algorithms=["ES256"])


def test_unusable_public_keys_are_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    private_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="not a PEM public key"):
        JwtAuthenticator(public_key=private_pem)
    with pytest.raises(ValueError, match="not a PEM public key"):
        JwtAuthenticator(public_key="garbage")
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="2048"):
        JwtAuthenticator(public_key=_public_pem(weak))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"leeway_s": -1},
        {"leeway_s": float("nan")},
        {"tenant_claim": ""},
        {"audience": ""},
        {"audience": []},
    ],
)
def test_invalid_jwt_options_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        JwtAuthenticator(secret=SECRET, **kwargs)


def test_repr_does_not_show_the_secret() -> None:
    assert SECRET not in repr(JwtAuthenticator(secret=SECRET))


# -- ChainAuthenticator -------------------------------------------------------------------


@pytest.fixture
def chain() -> ChainAuthenticator:
    return ChainAuthenticator(ApiKeyAuthenticator(KEYS), JwtAuthenticator(secret=SECRET))


def test_chain_accepts_api_keys_and_jwts(chain: ChainAuthenticator) -> None:
    assert chain.authenticate(KEY_B).subject == "ops-bot"
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert chain.authenticate(token).subject == "alice"


def test_chain_reports_the_right_reason(chain: ChainAuthenticator) -> None:
    assert "API key" in assert_401(chain, "key-unknown-unknown-unknown").message
    expired = jwt.encode(claims(exp=1), SECRET, algorithm="HS256")
    assert "expired" in assert_401(chain, expired).message
    assert "missing" in assert_401(chain, None).message


def test_chain_finds_an_api_key_that_looks_like_a_jwt() -> None:
    dotted = "aaaaaaaa.bbbbbbbb.cccccccc"
    auth = ChainAuthenticator(
        ApiKeyAuthenticator({dotted: {"tenant": "acme", "scopes": []}}),
        JwtAuthenticator(secret=SECRET),
    )
    assert auth.authenticate(dotted).tenant == "acme"


# -- framework-free --------------------------------------------------------------------


def test_auth_and_limits_do_not_import_starlette() -> None:
    script = (
        "import json, sys\n"
        "import icefloe.transport.auth, icefloe.transport.limits\n"
        "print(json.dumps([m for m in ('starlette', 'uvicorn') if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout) == []
