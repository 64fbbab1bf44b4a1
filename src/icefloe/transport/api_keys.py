"""API keys: a JSON key file mapping each key to a tenant and scopes.

:class:`ApiKeyAuthenticator` (re-exported by :mod:`icefloe.transport.auth`)
parses the key file strictly, keeps only SHA-256 digests of the keys, and
looks a token up in constant time over every entry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from icefloe.transport.limits import PrincipalLimits, parse_principal_limits
from icefloe.transport.principals import (
    B64TOKEN,
    MAX_NAME_LENGTH,
    MAX_TOKEN_LENGTH,
    AuthError,
    Principal,
    Scope,
    is_valid_name,
    is_valid_tenant,
    require_token,
)

__all__ = ["MIN_API_KEY_LENGTH", "ApiKeyAuthenticator"]

#: shortest API key a key file may hold: a short key is a guessable key
MIN_API_KEY_LENGTH = 16


class _JsonObject(list[tuple[str, Any]]):
    """A JSON object as its list of pairs, so duplicate names can be reported."""


class ApiKeyAuthenticator:
    """API keys, each granting a tenant and scopes.

    Built from a mapping ``{key: {"tenant": ..., "scopes": [...]}}`` (the shape
    of the key file) or by :meth:`from_file`. Each grant may also name its
    ``subject``; the default is ``apikey:<tenant>#<n>``, ``n`` being the
    entry's position, so set ``subject`` for names that survive reordering.
    A grant's optional ``limits`` (``{"connections": N, "requests_per_s": R,
    "request_burst": B}``; see
    :func:`~icefloe.transport.limits.parse_principal_limits`) replaces the
    edge-wide limits for that key: a key a proxy or backend uses for all its
    users can be given room, an untrusted one less.
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
        digest = _digest(require_token(token))
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
    if B64TOKEN.fullmatch(key) is None:
        raise ValueError(
            f"{where}: the key may hold only letters, digits and -._~+/ (then '=' padding), "
            "as a Bearer token must"
        )


_GRANT_FIELDS = frozenset({"tenant", "scopes", "subject", "limits"})


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
        raise ValueError(
            f"{where}: unknown field(s) {unknown}; expected tenant, scopes, subject, limits"
        )
    tenant = fields.get("tenant")
    if not is_valid_tenant(tenant):
        raise ValueError(
            f"{where}: 'tenant' must be a string of 1-{MAX_NAME_LENGTH} printable "
            f"characters without spaces, not '*'; got {tenant!r}"
        )
    subject = fields.get("subject", f"apikey:{tenant}#{index}")
    if not is_valid_name(subject):
        raise ValueError(
            f"{where}: 'subject' must be a string of 1-{MAX_NAME_LENGTH} printable "
            f"characters without spaces; got {subject!r}"
        )
    limits = _parse_limits(fields.get("limits"), where)
    return Principal(
        subject=subject, tenant=tenant, scopes=_parse_scopes(fields, where), limits=limits
    )


def _parse_limits(raw: object, where: str) -> PrincipalLimits | None:
    if raw is None:
        return None
    pairs = _pairs(raw)
    if pairs is not None:
        raw = dict(pairs)
        if len(raw) != len(pairs):
            raise ValueError(f"{where}: a field of 'limits' appears twice")
    return parse_principal_limits(raw, where)


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
