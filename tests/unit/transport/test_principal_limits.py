"""A principal's own edge limits, from an API key file and from a JWT claim."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest

from icefloe.transport.auth import ApiKeyAuthenticator, AuthError, JwtAuthenticator
from icefloe.transport.limit_claims import limits_from_claims
from icefloe.transport.limits import LIMITS_CLAIM, PrincipalLimits

SECRET = "s3cret-that-is-long-enough-for-hs256!!"
KEY_A = "key-aaaaaaaaaaaaaaaaaaaaaaaa"
KEY_B = "key-bbbbbbbbbbbbbbbbbbbbbbbb"


def test_key_file_limits_reach_the_principal() -> None:
    text = json.dumps(
        {
            KEY_A: {
                "tenant": "acme",
                "scopes": ["streams:read"],
                "limits": {"connections": 500, "requests_per_s": "off"},
            },
            KEY_B: {"tenant": "acme", "scopes": []},
        }
    )
    auth = ApiKeyAuthenticator.from_json(text)
    assert auth.authenticate(KEY_A).limits == PrincipalLimits(requests_per_s=0, max_connections=500)
    assert auth.authenticate(KEY_B).limits is None


def test_bad_key_file_limits_name_the_entry_not_the_key() -> None:
    text = json.dumps({KEY_A: {"tenant": "acme", "scopes": [], "limits": {"connections": -2}}})
    with pytest.raises(ValueError, match=r"keys.json: entry #1: limits: max_connections") as info:
        ApiKeyAuthenticator.from_json(text, source="keys.json")
    assert KEY_A not in str(info.value)


def _token(**extra: Any) -> str:
    claims = {"sub": "svc", "tenant": "acme", "scope": "streams:read", "exp": time.time() + 300}
    return jwt.encode({**claims, **extra}, SECRET, algorithm="HS256")


def test_jwt_limits_claim_reaches_the_principal() -> None:
    auth = JwtAuthenticator(secret=SECRET)
    token = _token(**{LIMITS_CLAIM: {"connections": 5, "requests_per_s": 2.5}})
    assert auth.authenticate(token).limits == PrincipalLimits(2.5, None, 5)
    assert auth.authenticate(_token()).limits is None


def test_a_malformed_limits_claim_is_a_401_without_token_content() -> None:
    auth = JwtAuthenticator(secret=SECRET)
    with pytest.raises(AuthError) as info:
        auth.authenticate(_token(**{LIMITS_CLAIM: {"connections": "lots-of-them"}}))
    assert info.value.status == 401
    assert "lots-of-them" not in info.value.message


def test_the_claim_name_is_a_parameter() -> None:
    claims = {"limits": {"connections": 7}, LIMITS_CLAIM: {"connections": 1}}
    assert limits_from_claims(claims, "limits") == PrincipalLimits(max_connections=7)
    assert limits_from_claims(claims) == PrincipalLimits(max_connections=1)
    assert limits_from_claims({}) is None
