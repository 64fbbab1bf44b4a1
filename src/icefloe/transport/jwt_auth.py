"""JSON Web Tokens: :class:`JwtAuthenticator`, pinned to its key's algorithm family.

Re-exported by :mod:`icefloe.transport.auth`. Tokens are checked by PyJWT
against a shared secret (HS*), a PEM public key (RS*/PS*/ES*/EdDSA) or an
identity provider's JWKS (:class:`~icefloe.transport.jwks.JwksKeys`); every
PyJWT failure becomes a 401 :class:`AuthError` with a fixed reason.

Claims are found by name, or by a dotted path into nested objects when no
claim has the whole name: ``realm_access.roles`` (Keycloak) finds
``{"realm_access": {"roles": [...]}}``, while a namespaced claim such as
``https://acme.example/tenant`` (Auth0) is found by its own name first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.types import Options

from icefloe.transport.jwks import JwksKeys
from icefloe.transport.limit_claims import limits_from_claims
from icefloe.transport.principals import (
    AuthError,
    Principal,
    Scope,
    is_valid_name,
    is_valid_tenant,
    require_token,
)

__all__ = ["DEFAULT_SCOPES_CLAIMS", "JwtAuthenticator"]

# HMAC algorithms and the shortest secret each accepts (RFC 7518 section 3.2:
# at least the hash's output size).
_HMAC_ALGORITHMS = {"HS256": 32, "HS384": 48, "HS512": 64}
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
# An EC key fits exactly one algorithm, decided by its curve.
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_MIN_RSA_BITS = 2048
# What a JWKS key may sign with: never HMAC, whose "key" would be public.
_ASYMMETRIC_ALGORITHMS = _RSA_ALGORITHMS | frozenset(_EC_ALGORITHMS.values()) | {"EdDSA"}
#: where scopes are read when no scopes claim is configured (OAuth 2's
#: space-separated ``scope``, and a ``scopes`` list)
DEFAULT_SCOPES_CLAIMS: Final = ("scope", "scopes")
# The shapes the two default scope claims have always had to take: OAuth 2's
# ``scope`` is a space-separated string (RFC 8693 section 4.2), ``scopes`` a
# list; any other (configured) claim may be either.
_SCOPE_SHAPES: Final[dict[str, tuple[type, ...]]] = {"scope": (str,), "scopes": (list,)}
_SHAPE_NAMES: Final[dict[tuple[type, ...], str]] = {
    (str,): "a string",
    (list,): "a list of strings",
    (str, list): "a string or a list of strings",
}
# NumericDate claims (RFC 7519 section 2): PyJWT takes int("1700000000") too,
# and a string is not a NumericDate.
_TIME_CLAIMS = ("exp", "nbf", "iat")

_PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

# PyJWT failures mapped to fixed reasons, most specific first: PyJWT's own
# messages are safe today, but fixed texts keep any later version from
# echoing token content into a 401 body or a log line.
_JWT_FAILURES: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "token audience not accepted"),
    (jwt.InvalidIssuerError, "token issuer not accepted"),
    (jwt.InvalidSignatureError, "token signature is invalid"),
    (jwt.InvalidAlgorithmError, "token algorithm not allowed"),
    (jwt.DecodeError, "malformed token"),
)


class JwtAuthenticator:
    """JSON Web Tokens signed with a shared secret, or verified with a public key or a JWKS.

    Give exactly one of ``secret`` (HS256/HS384/HS512; at least 32 bytes, more
    for HS384/HS512), ``public_key`` (a PEM ``PUBLIC KEY``: RSA of at least
    2048 bits for RS*/PS*, EC P-256/P-384/P-521 for ES256/ES384/ES512, or
    Ed25519 for EdDSA) or ``jwks`` (a :class:`JwksKeys`, or its URL: the
    token's ``kid`` header picks the key, and the key's own algorithm must
    match the token's). ``algorithms`` defaults to HS256, RS256, the curve's
    ES algorithm or EdDSA (RS256 for a JWKS), and may only name algorithms of
    the key's family (asymmetric ones for a JWKS): that pinning is what
    refuses ``alg: none``, an HS256 token when a public key is configured,
    and an HS256 token signed with the public key as its secret (algorithm
    confusion).

    Every token needs ``exp`` (a number, checked with ``leeway_s`` seconds of
    clock skew, default 30) and a string ``sub``, the principal's subject.
    ``exp``, ``nbf`` and ``iat`` must be JSON numbers: ``"1700000000"`` is
    refused. The tenant comes from the ``tenant_claim`` claim (default
    ``"tenant"``). Scopes come from each claim in ``scopes_claims`` (default
    ``scope``, space-separated as in OAuth 2, and ``scopes``): a string is
    split on spaces, a list (Keycloak roles, Cognito groups) taken as is
    (``scope`` must be a string and ``scopes`` a list, as always);
    values that are not a :class:`Scope` are ignored, since tokens often
    carry scopes for other services. Both claim settings accept a dotted
    path (see the module docstring).

    ``audience`` and ``issuer``, when set, must match the ``aud`` and ``iss``
    claims (``aud`` may be a list, as Auth0 sends; one match is enough);
    when ``audience`` is not set, a token that carries ``aud`` is refused (it
    was meant for someone in particular, and not said to be us).
    ``required_claims`` maps claim names to the string each must equal, e.g.
    ``{"token_use": "access"}`` so a Cognito ID token is not taken for an
    access token.

    With a JWKS, keys are fetched by :meth:`prepare` (the edge awaits it
    before :meth:`authenticate`), never on the event loop.

    :raises ValueError: for a missing, weak or mismatched key or algorithm,
        a negative leeway or an empty claim name.
    """

    __slots__ = (
        "_algorithms",
        "_audience",
        "_issuer",
        "_jwks",
        "_key",
        "_leeway",
        "_required",
        "_scopes_claims",
        "_tenant_claim",
    )

    def __init__(
        self,
        *,
        secret: str | bytes | None = None,
        public_key: str | bytes | None = None,
        jwks: JwksKeys | str | None = None,
        algorithms: Sequence[str] | None = None,
        audience: str | Sequence[str] | None = None,
        issuer: str | None = None,
        leeway_s: float = 30.0,
        tenant_claim: str = "tenant",
        scopes_claims: Sequence[str] = DEFAULT_SCOPES_CLAIMS,
        required_claims: Mapping[str, str] | None = None,
    ) -> None:
        self._key: bytes | _PublicKey | None = None
        self._jwks: JwksKeys | None = None
        given = [k for k in (secret, public_key, jwks) if k is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of secret (HS*), public_key (RS*/PS*/ES*/EdDSA) or jwks"
            )
        if secret is not None:
            self._key = _hmac_secret(secret)
            self._algorithms = _pin(algorithms, frozenset(_HMAC_ALGORITHMS), "HS256", "HMAC")
            _check_secret_length(self._key, self._algorithms)
        elif public_key is not None:
            self._key = _load_public_key(public_key)
            family, default = _key_family(self._key)
            self._algorithms = _pin(algorithms, family, default, type(self._key).__name__)
        else:
            self._jwks = jwks if isinstance(jwks, JwksKeys) else JwksKeys(str(jwks))
            self._algorithms = _pin(algorithms, _ASYMMETRIC_ALGORITHMS, "RS256", "JWKS")
        if isinstance(leeway_s, bool) or not (math.isfinite(leeway_s) and leeway_s >= 0):
            raise ValueError(f"leeway_s must be a finite number >= 0, got {leeway_s!r}")
        if not isinstance(tenant_claim, str) or not tenant_claim:
            raise ValueError(f"tenant_claim must be a non-empty string, got {tenant_claim!r}")
        if isinstance(scopes_claims, str) or not all(
            isinstance(c, str) and c for c in scopes_claims
        ):
            raise ValueError(
                f"scopes_claims must be a sequence of non-empty strings, got {scopes_claims!r}"
            )
        self._required = dict(required_claims or {})
        if not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in self._required.items()
        ):
            raise ValueError("required_claims must map claim names to strings")
        self._leeway = float(leeway_s)
        self._tenant_claim = tenant_claim
        self._scopes_claims = tuple(scopes_claims)
        self._audience = _check_audience(audience)
        self._issuer = issuer

    def __repr__(self) -> str:
        return f"JwtAuthenticator(algorithms={list(self._algorithms)})"

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The algorithms a token may be signed with."""
        return self._algorithms

    @property
    def jwks(self) -> JwksKeys | None:
        """The identity provider's keys, when they come from a JWKS URL."""
        return self._jwks

    @property
    def fetches_keys(self) -> bool:
        """Whether :meth:`prepare` may fetch (a JWKS is configured)."""
        return self._jwks is not None

    async def prepare(self, token: str | None) -> None:
        """Fetch the JWKS in a worker thread if ``token``'s ``kid`` needs it; never raises.

        A no-op without a JWKS. Await it before :meth:`authenticate`, which
        reads only keys already fetched.
        """
        if self._jwks is None:
            return
        kid: object = None
        if token is not None:
            try:
                kid = jwt.get_unverified_header(token).get("kid")
            except jwt.PyJWTError:
                return  # authenticate() will refuse it
        await self._jwks.load(kid if isinstance(kid, str) else None)

    def authenticate(self, token: str | None) -> Principal:
        """The principal named by JWT ``token``'s claims.

        :raises AuthError: 401 if the token is missing, malformed, expired,
            not yet valid, forged, signed with another algorithm, for another
            audience or issuer, or lacks a valid ``sub`` or tenant claim.
        """
        claims = self._decode(require_token(token))
        _check_time_claims(claims)
        for name, wanted in self._required.items():
            if _claim_at(claims, name) != wanted:
                raise AuthError.unauthorized(f"token {name!r} claim not accepted")
        return Principal(
            subject=_subject_claim(claims),
            tenant=self._tenant(claims),
            scopes=self._scopes(claims),
            limits=limits_from_claims(claims),
        )

    def _decode(self, token: str) -> dict[str, Any]:
        options: Options = {"require": ["exp"], "verify_signature": True}
        try:
            key: Any = self._key
            if self._jwks is not None:
                key = self._jwks.key(jwt.get_unverified_header(token).get("kid"))
                # A short RSA key in a provider's set is refused, not warned about.
                options["enforce_minimum_key_length"] = True
            return jwt.decode(
                token,
                key,
                algorithms=list(self._algorithms),
                options=options,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
            )
        except jwt.PyJWTError as exc:
            if isinstance(exc, jwt.InvalidAudienceError) and self._audience is None:
                raise AuthError.unauthorized(
                    "token audience not accepted: the server is configured with no audience"
                ) from None
            raise AuthError.unauthorized(_jwt_failure(exc)) from None

    def _tenant(self, claims: Mapping[str, Any]) -> str:
        tenant = _claim_at(claims, self._tenant_claim)
        if not is_valid_tenant(tenant):
            raise AuthError.unauthorized(f"token lacks a valid {self._tenant_claim!r} claim")
        return tenant

    def _scopes(self, claims: Mapping[str, Any]) -> frozenset[Scope]:
        names: list[str] = []
        for claim in self._scopes_claims:
            value = _claim_at(claims, claim)
            if value is None:
                continue
            shape = _SCOPE_SHAPES.get(claim, (str, list))
            if isinstance(value, str) and str in shape:
                names.extend(value.split())
            elif (
                isinstance(value, list) and list in shape and all(isinstance(v, str) for v in value)
            ):
                names.extend(value)
            else:
                raise AuthError.unauthorized(f"token {claim!r} claim must be {_SHAPE_NAMES[shape]}")
        known = {s.value for s in Scope}
        return frozenset(Scope(name) for name in names if name in known)


def _claim_at(claims: Mapping[str, Any], name: str) -> object:
    """The claim called ``name``, else the one at dotted path ``name``, else None.

    The whole name is tried first, so namespaced claims that contain dots
    (``https://acme.example/tenant``) are found as they are.
    """
    if name in claims:
        return claims[name]
    value: object = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _check_time_claims(claims: Mapping[str, Any]) -> None:
    for name in _TIME_CLAIMS:
        value = claims.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise AuthError.unauthorized(f"token {name!r} claim must be a number")


def _jwt_failure(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token lacks the {exc.claim!r} claim"
    for kind, reason in _JWT_FAILURES:
        if isinstance(exc, kind):
            return reason
    return "invalid token"


def _subject_claim(claims: Mapping[str, Any]) -> str:
    subject = claims.get("sub")
    if not is_valid_name(subject):
        raise AuthError.unauthorized("token lacks a valid 'sub' claim")
    return subject


def _hmac_secret(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    # A PEM used as an HMAC secret is the algorithm-confusion mistake itself.
    if key.lstrip().startswith(b"-----BEGIN"):
        raise ValueError("secret looks like a PEM key; pass it as public_key instead")
    return key


def _check_secret_length(secret: bytes, algorithms: Sequence[str]) -> None:
    needed = max(_HMAC_ALGORITHMS[a] for a in algorithms)
    if len(secret) < needed:
        raise ValueError(
            f"secret must be at least {needed} bytes for {', '.join(algorithms)} "
            f"(RFC 7518), got {len(secret)}"
        )


def _load_public_key(pem: str | bytes) -> _PublicKey:
    data = pem.encode("utf-8") if isinstance(pem, str) else bytes(pem)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(
            "public_key is not a PEM public key ('-----BEGIN PUBLIC KEY-----'); "
            "a private key or certificate is not accepted"
        ) from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < _MIN_RSA_BITS:
        raise ValueError(f"RSA public_key must be >= {_MIN_RSA_BITS} bits, got {key.key_size}")
    if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        return key
    raise ValueError(f"unsupported public_key type {type(key).__name__}; use RSA, EC or Ed25519")


def _key_family(key: _PublicKey) -> tuple[frozenset[str], str]:
    """The algorithms ``key`` can verify, and the default among them."""
    if isinstance(key, rsa.RSAPublicKey):
        return _RSA_ALGORITHMS, "RS256"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return frozenset({"EdDSA"}), "EdDSA"
    algorithm = _EC_ALGORITHMS.get(key.curve.name)
    if algorithm is None:
        raise ValueError(f"unsupported EC curve {key.curve.name}; use P-256, P-384 or P-521")
    return frozenset({algorithm}), algorithm


def _pin(
    algorithms: Sequence[str] | None, family: frozenset[str], default: str, kind: str
) -> tuple[str, ...]:
    if algorithms is None:
        return (default,)
    if isinstance(algorithms, str) or not algorithms:
        raise ValueError("algorithms must be a non-empty sequence of algorithm names")
    stray = [a for a in algorithms if a not in family]
    if stray:
        raise ValueError(
            f"algorithms {stray} do not fit the configured {kind} key; allowed: {sorted(family)}"
        )
    return tuple(dict.fromkeys(algorithms))


def _check_audience(audience: str | Sequence[str] | None) -> str | list[str] | None:
    if audience is None:
        return None
    if isinstance(audience, str):
        if not audience:
            raise ValueError("audience must not be empty")
        return audience
    values = list(audience)
    if not values or not all(isinstance(a, str) and a for a in values):
        raise ValueError("audience must be a non-empty string or sequence of them")
    return values
