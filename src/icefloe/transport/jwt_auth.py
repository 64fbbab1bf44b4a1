"""JSON Web Tokens: :class:`JwtAuthenticator`, pinned to its key's algorithm family.

Re-exported by :mod:`icefloe.transport.auth`. Tokens are checked by PyJWT
against a shared secret (HS*) or a PEM public key (RS*/PS*/ES*/EdDSA); every
PyJWT failure becomes a 401 :class:`AuthError` with a fixed reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.types import Options

from icefloe.transport.limit_claims import limits_from_claims
from icefloe.transport.principals import (
    AuthError,
    Principal,
    Scope,
    is_valid_name,
    is_valid_tenant,
    require_token,
)

__all__ = ["JwtAuthenticator"]

# HMAC algorithms and the shortest secret each accepts (RFC 7518 section 3.2:
# at least the hash's output size).
_HMAC_ALGORITHMS = {"HS256": 32, "HS384": 48, "HS512": 64}
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
# An EC key fits exactly one algorithm, decided by its curve.
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_MIN_RSA_BITS = 2048

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
    """JSON Web Tokens signed with a shared secret or verified with a public key.

    Give exactly one of ``secret`` (HS256/HS384/HS512; at least 32 bytes, more
    for HS384/HS512) or ``public_key`` (a PEM ``PUBLIC KEY``: RSA of at least
    2048 bits for RS*/PS*, EC P-256/P-384/P-521 for ES256/ES384/ES512, or
    Ed25519 for EdDSA). ``algorithms`` defaults to HS256, RS256, the curve's
    ES algorithm or EdDSA, and may only name algorithms of the key's family:
    that pinning is what refuses ``alg: none``, an HS256 token when a public
    key is configured, and an HS256 token signed with the public key as its
    secret (algorithm confusion).

    Every token needs ``exp`` (checked with ``leeway_s`` seconds of clock
    skew, default 30) and a string ``sub``, the principal's subject. The
    tenant comes from the ``tenant_claim`` claim (default ``"tenant"``).
    Scopes come from ``scope`` (space-separated, as in OAuth 2) and/or
    ``scopes`` (a list of strings); values that are not a :class:`Scope`
    are ignored, since tokens often carry scopes for other services.
    ``audience`` and ``issuer``, when set, must match the ``aud`` and ``iss``
    claims; when ``audience`` is not set, a token that carries ``aud`` is
    refused (it was meant for someone in particular, and not said to be us).

    :raises ValueError: for a missing, weak or mismatched key or algorithm,
        or a negative leeway.
    """

    __slots__ = ("_algorithms", "_audience", "_issuer", "_key", "_leeway", "_tenant_claim")

    def __init__(
        self,
        *,
        secret: str | bytes | None = None,
        public_key: str | bytes | None = None,
        algorithms: Sequence[str] | None = None,
        audience: str | Sequence[str] | None = None,
        issuer: str | None = None,
        leeway_s: float = 30.0,
        tenant_claim: str = "tenant",
    ) -> None:
        self._key: bytes | _PublicKey
        if secret is not None and public_key is None:
            self._key = _hmac_secret(secret)
            self._algorithms = _pin(algorithms, frozenset(_HMAC_ALGORITHMS), "HS256", "HMAC")
            _check_secret_length(self._key, self._algorithms)
        elif public_key is not None and secret is None:
            self._key = _load_public_key(public_key)
            family, default = _key_family(self._key)
            self._algorithms = _pin(algorithms, family, default, type(self._key).__name__)
        else:
            raise ValueError("give exactly one of secret (HS*) or public_key (RS*/PS*/ES*/EdDSA)")
        if isinstance(leeway_s, bool) or not (math.isfinite(leeway_s) and leeway_s >= 0):
            raise ValueError(f"leeway_s must be a finite number >= 0, got {leeway_s!r}")
        if not isinstance(tenant_claim, str) or not tenant_claim:
            raise ValueError(f"tenant_claim must be a non-empty string, got {tenant_claim!r}")
        self._leeway = float(leeway_s)
        self._tenant_claim = tenant_claim
        self._audience = _check_audience(audience)
        self._issuer = issuer

    def __repr__(self) -> str:
        return f"JwtAuthenticator(algorithms={list(self._algorithms)})"

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The algorithms a token may be signed with."""
        return self._algorithms

    def authenticate(self, token: str | None) -> Principal:
        """The principal named by JWT ``token``'s claims.

        :raises AuthError: 401 if the token is missing, malformed, expired,
            not yet valid, forged, signed with another algorithm, for another
            audience or issuer, or lacks a valid ``sub`` or tenant claim.
        """
        claims = self._decode(require_token(token))
        return Principal(
            subject=_subject_claim(claims),
            tenant=self._tenant(claims),
            scopes=_scope_claims(claims),
            limits=limits_from_claims(claims),
        )

    def _decode(self, token: str) -> dict[str, Any]:
        options: Options = {"require": ["exp"], "verify_signature": True}
        try:
            return jwt.decode(
                token,
                self._key,
                algorithms=list(self._algorithms),
                options=options,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
            )
        except jwt.PyJWTError as exc:
            raise AuthError.unauthorized(_jwt_failure(exc)) from None

    def _tenant(self, claims: Mapping[str, Any]) -> str:
        tenant = claims.get(self._tenant_claim)
        if not is_valid_tenant(tenant):
            raise AuthError.unauthorized(f"token lacks a valid {self._tenant_claim!r} claim")
        return tenant


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


def _scope_claims(claims: Mapping[str, Any]) -> frozenset[Scope]:
    names: list[str] = []
    scope = claims.get("scope")
    if scope is not None:
        if not isinstance(scope, str):
            raise AuthError.unauthorized("token 'scope' claim must be a string")
        names.extend(scope.split())
    scopes = claims.get("scopes")
    if scopes is not None:
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise AuthError.unauthorized("token 'scopes' claim must be a list of strings")
        names.extend(scopes)
    known = {s.value for s in Scope}
    return frozenset(Scope(name) for name in names if name in known)


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
