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
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeGuard

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.types import Options

from icefloe.exceptions import IcefloeError

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

#: longest token accepted, in characters (8 KiB); longer ones are refused unread
MAX_TOKEN_LENGTH = 8 * 1024
#: shortest API key a key file may hold: a short key is a guessable key
MIN_API_KEY_LENGTH = 16

# RFC 6750 ``b64token``: the only characters a bearer token may contain. It
# excludes whitespace, control characters and non-ASCII in one check.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# Three base64url segments; the signature may be empty (``alg: none``), which
# must still reach the JWT checks to be refused there with a clear reason.
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# The scheme, the spaces after it and surrounding whitespace of the header.
_HEADER_SLACK = 64
# Reserved for Principal.unrestricted(); no authenticator ever issues it.
_ANY_TENANT = "*"
_MAX_NAME_LENGTH = 200


class Scope(enum.StrEnum):
    """What a principal may do; ``admin`` implies every other scope and tenant."""

    STREAMS_START = "streams:start"
    STREAMS_READ = "streams:read"
    STREAMS_CANCEL = "streams:cancel"
    TOPICS_PUBLISH = "topics:publish"
    TOPICS_READ = "topics:read"
    ADMIN = "admin"


class AuthError(IcefloeError):
    """Credentials were refused (401) or do not allow the operation (403).

    ``status`` is 401 or 403, ``code`` the matching wire code
    (``"unauthorized"`` / ``"forbidden"``) and ``message`` (also ``str(exc)``)
    a reason safe to send to the client: it never contains the token.
    """

    def __init__(self, status: Literal[401, 403], message: str) -> None:
        if status not in (401, 403):
            raise ValueError(f"AuthError status must be 401 or 403, got {status!r}")
        self.status: Literal[401, 403] = status
        self.code = "unauthorized" if status == 401 else "forbidden"
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
    """

    subject: str
    tenant: str
    scopes: frozenset[Scope]

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
        return cls(subject="anonymous", tenant=_ANY_TENANT, scopes=frozenset(Scope))

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
    if _B64TOKEN.fullmatch(token) is None:
        raise AuthError.unauthorized("malformed credentials")


def _require_token(token: str | None) -> str:
    if token is None:
        raise AuthError.unauthorized("missing credentials")
    _check_token(token)
    return token


def _is_valid_name(value: object) -> TypeGuard[str]:
    """Whether ``value`` can name a tenant or subject: printable, no spaces, bounded."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= _MAX_NAME_LENGTH
        and value.isprintable()
        and not any(c.isspace() for c in value)
    )


def _is_valid_tenant(value: object) -> TypeGuard[str]:
    return _is_valid_name(value) and value != _ANY_TENANT


# -- no authentication ----------------------------------------------------------------


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


# -- API keys -----------------------------------------------------------------------


class _JsonObject(list[tuple[str, Any]]):
    """A JSON object as its list of pairs, so duplicate names can be reported."""


class ApiKeyAuthenticator:
    """API keys, each granting a tenant and scopes.

    Built from a mapping ``{key: {"tenant": ..., "scopes": [...]}}`` (the shape
    of the key file) or by :meth:`from_file`. Each grant may also name its
    ``subject``; the default is ``apikey:<tenant>#<n>``, ``n`` being the
    entry's position, so set ``subject`` for names that survive reordering.
    Keys must be :data:`MIN_API_KEY_LENGTH` to :data:`MAX_TOKEN_LENGTH`
    ``b64token`` characters (e.g. ``secrets.token_urlsafe(32)``).

    Only SHA-256 digests of the keys are kept, so a memory dump or a repr
    holds no usable key. A lookup compares the token's digest with every
    entry using :func:`hmac.compare_digest` and does not stop at a match, so
    its timing does not say which entry (if any) matched.

    :raises ValueError: for an invalid entry, naming it by position; error
        messages never show a key.
    """

    __slots__ = ("_entries",)

    def __init__(self, keys: Mapping[str, Mapping[str, Any]], *, source: str = "API keys") -> None:
        self._entries = _parse_keys(keys, source)

    def __repr__(self) -> str:
        return f"ApiKeyAuthenticator(<{len(self._entries)} keys>)"

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ApiKeyAuthenticator:
        """Load a UTF-8 JSON key file.

        :raises OSError: if the file cannot be read.
        :raises ValueError: if it is not valid JSON or an entry is invalid.
        """
        source = os.fspath(path)
        try:
            text = Path(source).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{source}: API key file is not UTF-8 text") from None
        return cls.from_json(text, source=source)

    @classmethod
    def from_json(cls, text: str, *, source: str = "API keys") -> ApiKeyAuthenticator:
        """Parse a key file's text; ``source`` names it in error messages.

        :raises ValueError: if it is not valid JSON or an entry is invalid.
        """
        try:
            raw = json.loads(text, object_pairs_hook=_JsonObject)
        except json.JSONDecodeError as exc:
            # Only the position: the parser's own message could quote the file.
            raise ValueError(
                f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno})"
            ) from None
        # ``raw`` holds _JsonObject pair lists, which the parser reads like
        # mappings but with duplicate names still visible.
        return cls(raw, source=source)

    def authenticate(self, token: str | None) -> Principal:
        """The principal granted to API key ``token``.

        :raises AuthError: 401 if the token is missing, malformed or unknown.
        """
        digest = _digest(_require_token(token))
        found: Principal | None = None
        for key_digest, principal in self._entries:
            # No early exit: the time taken does not say which entry matched.
            if hmac.compare_digest(key_digest, digest):
                found = principal
        if found is None:
            raise AuthError.unauthorized("unknown API key")
        return found


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("ascii")).digest()


def _pairs(value: object) -> list[tuple[str, Any]] | None:
    """A JSON object or mapping as a list of pairs; ``None`` for anything else."""
    if isinstance(value, _JsonObject):
        return list(value)
    if isinstance(value, Mapping):
        return list(value.items())
    return None


def _parse_keys(raw: object, source: str) -> tuple[tuple[bytes, Principal], ...]:
    pairs = _pairs(raw)
    if pairs is None:
        raise ValueError(f"{source}: must be a JSON object mapping API keys to grants")
    if not pairs:
        raise ValueError(f"{source}: holds no API keys")
    entries: list[tuple[bytes, Principal]] = []
    seen: dict[bytes, int] = {}
    for index, (key, grant) in enumerate(pairs, start=1):
        where = f"{source}: entry #{index}"
        _check_key(key, where)
        digest = _digest(key)
        if digest in seen:
            raise ValueError(f"{where}: repeats the key of entry #{seen[digest]}")
        seen[digest] = index
        entries.append((digest, _parse_grant(grant, where, index)))
    return tuple(entries)


def _check_key(key: object, where: str) -> None:
    # Every message says what is wrong with the key without showing it.
    if not isinstance(key, str):
        raise ValueError(f"{where}: the key must be a string")
    if not MIN_API_KEY_LENGTH <= len(key) <= MAX_TOKEN_LENGTH:
        raise ValueError(
            f"{where}: the key must be {MIN_API_KEY_LENGTH} to {MAX_TOKEN_LENGTH} characters "
            f"long, this one has {len(key)}"
        )
    if _B64TOKEN.fullmatch(key) is None:
        raise ValueError(
            f"{where}: the key may hold only letters, digits and -._~+/ (then '=' padding), "
            "as a Bearer token must"
        )


_GRANT_FIELDS = frozenset({"tenant", "scopes", "subject"})


def _parse_grant(grant: object, where: str, index: int) -> Principal:
    pairs = _pairs(grant)
    if pairs is None:
        raise ValueError(f"{where}: the grant must be an object with 'tenant' and 'scopes'")
    fields: dict[str, Any] = {}
    for name, value in pairs:
        if name in fields:
            raise ValueError(f"{where}: field {name!r} appears twice")
        fields[name] = value
    unknown = sorted(set(fields) - _GRANT_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; expected tenant, scopes, subject")
    tenant = fields.get("tenant")
    if not _is_valid_tenant(tenant):
        raise ValueError(
            f"{where}: 'tenant' must be a string of 1-{_MAX_NAME_LENGTH} printable "
            f"characters without spaces, not '*'; got {tenant!r}"
        )
    subject = fields.get("subject", f"apikey:{tenant}#{index}")
    if not _is_valid_name(subject):
        raise ValueError(
            f"{where}: 'subject' must be a string of 1-{_MAX_NAME_LENGTH} printable "
            f"characters without spaces; got {subject!r}"
        )
    return Principal(subject=subject, tenant=tenant, scopes=_parse_scopes(fields, where))


def _parse_scopes(fields: Mapping[str, Any], where: str) -> frozenset[Scope]:
    if "scopes" not in fields:
        raise ValueError(f"{where}: 'scopes' is missing (use [] for none)")
    scopes = fields["scopes"]
    # A bare string is iterable too; refuse it rather than read it letter by letter.
    if not isinstance(scopes, list | tuple) or not all(isinstance(s, str) for s in scopes):
        raise ValueError(f"{where}: 'scopes' must be a list of strings")
    known = {s.value for s in Scope}
    for scope in scopes:
        if scope not in known:
            raise ValueError(f"{where}: unknown scope {scope!r}; expected some of {sorted(known)}")
    return frozenset(Scope(s) for s in scopes)


# -- JWT --------------------------------------------------------------------------

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
        claims = self._decode(_require_token(token))
        return Principal(
            subject=_subject_claim(claims),
            tenant=self._tenant(claims),
            scopes=_scope_claims(claims),
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
        if not _is_valid_tenant(tenant):
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
    if not _is_valid_name(subject):
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


# -- both ---------------------------------------------------------------------------


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
        token = _require_token(token)
        try:
            return self._api_keys.authenticate(token)
        except AuthError:
            if _JWT_SHAPE.fullmatch(token) is None:
                raise
        return self._jwt.authenticate(token)
