"""An identity provider for tests: RS256 keys, a real JWKS endpoint, tokens shaped like real ones.

:class:`JwksServer` serves a JSON Web Key Set over HTTP on 127.0.0.1 from a
thread (``http.server``), so :class:`~icefloe.transport.jwks.JwksKeys` fetches
it exactly as it would Auth0's. The test swaps the keys it publishes
(rotation), makes it fail, or holds its answer, and counts the fetches.

The ``*_claims`` functions give the claim sets of Auth0, Keycloak and
Cognito access tokens, from their documentation:

* Auth0: ``aud`` a list (the API and ``/userinfo``), ``scope`` a
  space-separated string, a namespaced custom claim for the tenant;
* Keycloak: roles at ``realm_access.roles``, ``azp``, ``aud: "account"``;
* Cognito: ``cognito:groups``, ``token_use: "access"``, ``client_id``, no
  ``aud`` (ID tokens carry ``aud`` and ``token_use: "id"``).

Imported by unit and integration tests (tests/ is on sys.path: pytest puts the
folder of tests/conftest.py there).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

__all__ = [
    "AUTH0_API",
    "AUTH0_ISSUER",
    "AUTH0_TENANT_CLAIM",
    "COGNITO_ISSUER",
    "KEYCLOAK_ISSUER",
    "JwksServer",
    "SigningKey",
    "auth0_claims",
    "cognito_claims",
    "jwks_server",
    "keycloak_claims",
]

AUTH0_ISSUER = "https://acme.eu.auth0.com/"
AUTH0_API = "https://api.icefloe.example"
AUTH0_TENANT_CLAIM = "https://icefloe.example/tenant"
KEYCLOAK_ISSUER = "https://sso.acme.example/realms/acme"
COGNITO_ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123"


class SigningKey:
    """An RSA key pair with a ``kid``, as an identity provider holds it."""

    def __init__(self, kid: str, bits: int = 2048) -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=bits)

    def jwk(self) -> dict[str, Any]:
        """The public key as a JWK, as the provider publishes it."""
        jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        """``claims`` as an RS256 token with this key's ``kid``."""
        return jwt.encode(
            claims, self.private, algorithm="RS256", headers={"kid": self.kid, **header}
        )


class JwksServer:
    """A JWKS endpoint on 127.0.0.1 whose keys, status and pace the test sets."""

    def __init__(self) -> None:
        self.keys: list[SigningKey] = []
        #: answer this status (with a non-JSON body) instead of the set
        self.status = 200
        #: when set, each answer waits until it is set (at most 10 s)
        self.hold: threading.Event | None = None
        #: set when a request arrives (the test may wait for it)
        self.requested = threading.Event()
        self._fetches = 0
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server.lock:
                    server._fetches += 1
                server.requested.set()
                if server.hold is not None:
                    server.hold.wait(10)
                if server.status != 200:
                    body = b"<html>upstream error</html>"
                    self.send_response(server.status)
                else:
                    body = json.dumps({"keys": [k.jwk() for k in server.keys]}).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet test output

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/.well-known/jwks.json"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def fetches(self) -> int:
        """How many times the set was requested."""
        with self.lock:
            return self._fetches

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)


@contextmanager
def jwks_server(*keys: SigningKey) -> Iterator[JwksServer]:
    """A running :class:`JwksServer` publishing ``keys``."""
    server = JwksServer()
    server.keys = list(keys)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _times(lifetime_s: int = 3600) -> dict[str, int]:
    now = int(time.time())
    return {"iat": now, "exp": now + lifetime_s}


def auth0_claims(
    tenant: str = "acme", scope: str = "openid streams:start streams:read"
) -> dict[str, Any]:
    """An Auth0 access token for an API, with a tenant put in by an Action."""
    return {
        "iss": AUTH0_ISSUER,
        "sub": "auth0|64f1c2a9e1d3b2a1c0ffee01",
        "aud": [AUTH0_API, "https://acme.eu.auth0.com/userinfo"],
        "azp": "Xb7cLq2yF3",
        "scope": scope,
        AUTH0_TENANT_CLAIM: tenant,
        **_times(),
    }


def keycloak_claims(
    tenant: str = "acme", roles: tuple[str, ...] = ("streams:read",)
) -> dict[str, Any]:
    """A Keycloak access token: realm roles nested, a tenant from a user-attribute mapper."""
    return {
        "iss": KEYCLOAK_ISSUER,
        "sub": "f3b0c2d4-5e6f-4a1b-9c8d-7e6f5a4b3c2d",
        "aud": "account",
        "typ": "Bearer",
        "azp": "icefloe-web",
        "realm_access": {"roles": ["offline_access", "uma_authorization", *roles]},
        "resource_access": {"account": {"roles": ["manage-account"]}},
        "scope": "openid profile email",
        "org": {"tenant": tenant},
        **_times(),
    }


def cognito_claims(
    tenant: str = "acme",
    groups: tuple[str, ...] = ("streams:start", "streams:read"),
    use: str = "access",
) -> dict[str, Any]:
    """A Cognito access token (``use="id"``: an ID token, which carries ``aud``)."""
    claims: dict[str, Any] = {
        "iss": COGNITO_ISSUER,
        "sub": "0f8e7d6c-5b4a-3928-1706-f5e4d3c2b1a0",
        "cognito:groups": list(groups),
        "token_use": use,
        "scope": "aws.cognito.signin.user.admin",
        "auth_time": int(time.time()),
        "username": "alice",
        "custom:tenant": tenant,
        **_times(),
    }
    if use == "access":
        claims["client_id"] = "4p3q2r1s0t9u8v7w6x5y4z3a2b"
    else:
        claims["aud"] = "4p3q2r1s0t9u8v7w6x5y4z3a2b"
    return claims
