"""Identity-provider JWTs over a real socket (issue 16, item 5).

``icefloe serve --jwt-jwks-url ... --jwt-audience ... --jwt-issuer ...`` with
claim settings, against a JWKS endpoint on 127.0.0.1 (tests/idp.py): tokens
shaped like Auth0's, Keycloak's and Cognito's start and read streams, a
rotated key is fetched on first sight, and a JWKS endpoint that is down is a
401 that says so, never a 500.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner
from websockets.asyncio.client import connect

from icefloe.cli import app as cli
from icefloe.demo import Pacing, build_demo_flow
from icefloe.transport import app as transport_app
from icefloe.transport.app import EdgeSettings
from icefloe.transport.auth import JwksKeys, JwtAuthenticator
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

Serve = Any  # the serve fixture of conftest.py


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey("idp-key-1")


@pytest.fixture
def idp(key: SigningKey) -> Iterator[JwksServer]:
    with jwks_server(key) as server:
        yield server


def serve_settings(monkeypatch: pytest.MonkeyPatch, *flags: str) -> EdgeSettings:
    """The settings ``icefloe serve <flags>`` would run the demo flow with."""
    seen: list[EdgeSettings] = []

    def build(flow: Any, settings: EdgeSettings, **options: Any) -> object:
        seen.append(settings)
        return object()

    # The public seams serve goes through: the app factory and uvicorn.
    monkeypatch.setattr(transport_app, "create_app", build)
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: None)
    result = CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow", *flags])
    assert result.exit_code == 0, result.output
    return seen[0]


@asynccontextmanager
async def client(serve: Serve, settings: EdgeSettings) -> AsyncIterator[httpx.AsyncClient]:
    flow = build_demo_flow(Pacing(0, 0))
    async with (
        asyncio.timeout(30),
        serve(flow, settings) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as c,
    ):
        yield c


async def start(c: httpx.AsyncClient, token: str, tenant: str = "acme") -> httpx.Response:
    body = {"payload": "hi", "headers": {"tenant": tenant}}
    return await c.post("/v1/streams", json=body, headers={"Authorization": f"Bearer {token}"})


async def poll(c: httpx.AsyncClient, token: str, location: str) -> list[str]:
    r = await c.get(
        f"{location}/poll", params={"wait_s": "3"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200, r.text
    return [chunk["text"] for chunk in r.json() if chunk["text"]]


@pytest.mark.parametrize(
    ("flags", "claims"),
    [
        (
            [
                *("--jwt-audience", AUTH0_API, "--jwt-issuer", AUTH0_ISSUER),
                *("--jwt-tenant-claim", AUTH0_TENANT_CLAIM),
            ],
            auth0_claims(),
        ),
        (
            [
                *("--jwt-audience", "account", "--jwt-issuer", KEYCLOAK_ISSUER),
                *("--jwt-tenant-claim", "org.tenant", "--jwt-scopes-claim", "realm_access.roles"),
            ],
            keycloak_claims(roles=("streams:start", "streams:read")),
        ),
        (
            [
                *("--jwt-issuer", COGNITO_ISSUER, "--jwt-tenant-claim", "custom:tenant"),
                *("--jwt-scopes-claim", "cognito:groups"),
                *("--jwt-require-claim", "token_use=access"),
            ],
            cognito_claims(),
        ),
    ],
    ids=["auth0", "keycloak", "cognito"],
)
async def test_serve_flags_accept_identity_provider_tokens(
    serve: Serve,
    monkeypatch: pytest.MonkeyPatch,
    idp: JwksServer,
    key: SigningKey,
    flags: list[str],
    claims: dict[str, Any],
) -> None:
    settings = serve_settings(monkeypatch, "--jwt-jwks-url", idp.url, *flags)
    token = key.sign(claims)
    async with client(serve, settings) as c:
        r = await start(c, token)
        assert r.status_code == 201, r.text
        assert await poll(c, token, r.headers["location"]) == ["hi"]
        other_tenant = await start(c, token, tenant="globex")
        assert other_tenant.status_code == 403, other_tenant.text


async def test_a_rotated_key_is_fetched_on_first_sight(serve: Serve, idp: JwksServer) -> None:
    first, second = SigningKey("2024-01"), SigningKey("2024-07")
    idp.keys = [first]
    keys = JwksKeys(idp.url, refresh_cooldown_s=0)
    authenticator = JwtAuthenticator(
        jwks=keys,
        issuer=COGNITO_ISSUER,
        tenant_claim="custom:tenant",
        scopes_claims=["cognito:groups"],
    )
    async with client(serve, EdgeSettings(authenticator=authenticator)) as c:
        assert (await start(c, first.sign(cognito_claims()))).status_code == 201
        assert idp.fetches == 1
        idp.keys = [first, second]  # the provider rotates
        r = await start(c, second.sign(cognito_claims()))
        assert r.status_code == 201, r.text
        assert idp.fetches == 2
        assert (await start(c, first.sign(cognito_claims()))).status_code == 201
        assert idp.fetches == 2  # the old key is still in the fetched set


async def test_a_jwks_endpoint_that_is_down_is_a_401_not_a_500(
    serve: Serve, idp: JwksServer, key: SigningKey
) -> None:
    idp.status = 503
    authenticator = JwtAuthenticator(
        jwks=idp.url, issuer=COGNITO_ISSUER, tenant_claim="custom:tenant"
    )
    async with client(serve, EdgeSettings(authenticator=authenticator)) as c:
        r = await start(c, key.sign(cognito_claims()))
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"] == {
        "code": "unauthorized",
        "message": "token signing key unavailable: "
        "the identity provider's JWKS endpoint could not be reached",
    }


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--jwt-audience", "x"], "need --jwt-secret, --jwt-public-key or --jwt-jwks-url"),
        (
            ["--jwt-jwks-url", "https://idp.example/jwks", "--jwt-secret", "s" * 40],
            "give one of",
        ),
        (["--jwt-jwks-url", "ftp://idp.example/jwks"], "scheme"),
        (["--jwt-jwks-url", "https://idp.example/j", "--jwt-require-claim", "x"], "NAME=VALUE"),
        (["--jwt-jwks-url", "https://idp.example/j", "--jwt-algorithm", "HS256"], "do not fit"),
    ],
)
def test_bad_jwt_flags_are_refused(flags: list[str], message: str) -> None:
    result = CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow", *flags])
    assert result.exit_code == 2
    assert message in " ".join(result.output.replace("│", " ").split())


async def test_a_websocket_handshake_fetches_the_keys_too(
    serve: Serve, idp: JwksServer, key: SigningKey
) -> None:
    # The first token the server ever sees comes on a WebSocket handshake.
    authenticator = JwtAuthenticator(
        jwks=idp.url, issuer=COGNITO_ISSUER, tenant_claim="custom:tenant"
    )
    token = key.sign(cognito_claims())
    async with client(serve, EdgeSettings(authenticator=authenticator)) as c:
        url = str(c.base_url).replace("http://", "ws://").rstrip("/") + "/v1/ws"
        headers = {"Authorization": f"Bearer {token}"}
        async with connect(url, subprotocols=["icefloe.v1.json"], additional_headers=headers) as ws:
            await ws.send(json.dumps({"op": "ping"}))
            assert json.loads(await ws.recv())["op"] == "pong"
    assert idp.fetches == 1
