"""Who may do what, over a real socket: tenants, scopes, 401s, limits, hostile input, the CLI.

docs/wire-protocol.md (who may do what): another tenant's stream answers 404 (its
existence must not leak), a missing scope answers 403, missing or bad
credentials answer 401 with ``WWW-Authenticate: Bearer``, per-principal limits
answer 429 with ``Retry-After``, and ``icefloe serve`` refuses a non-loopback
bind without authentication.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from icefloe import Context, Flow, Limits, Message, Node, NodePolicy, create
from icefloe.core.sse import SseParser
from icefloe.demo import Pacing, build_demo_flow
from icefloe.transport.app import EdgeSettings
from icefloe.transport.auth import ApiKeyAuthenticator, Authenticator, JwtAuthenticator
from icefloe.transport.limits import EdgeLimits

Serve = Any  # the serve fixture of conftest.py: serve(flow, settings=None) -> url

START, READ, CANCEL = "streams:start", "streams:read", "streams:cancel"

ACME_KEY = "acme-key-0123456789abcdef"
GLOBEX_KEY = "globex-key-0123456789abcdef"
ADMIN_KEY = "ops-admin-key-0123456789abcdef"
ACME_NO_START = "acme-no-start-0123456789ab"
ACME_NO_READ = "acme-no-read-0123456789abc"
ACME_NO_CANCEL = "acme-no-cancel-0123456789a"
ACME_NO_SCOPES = "acme-no-scopes-0123456789a"

API_KEYS = {
    ACME_KEY: {"tenant": "acme", "scopes": [START, READ, CANCEL], "subject": "acme-app"},
    GLOBEX_KEY: {"tenant": "globex", "scopes": [START, READ, CANCEL], "subject": "globex-app"},
    ADMIN_KEY: {"tenant": "ops", "scopes": ["admin"], "subject": "ops-admin"},
    ACME_NO_START: {"tenant": "acme", "scopes": [READ, CANCEL], "subject": "acme-ro"},
    ACME_NO_READ: {"tenant": "acme", "scopes": [START, CANCEL], "subject": "acme-wo"},
    ACME_NO_CANCEL: {"tenant": "acme", "scopes": [START, READ], "subject": "acme-nc"},
    ACME_NO_SCOPES: {"tenant": "acme", "scopes": [], "subject": "acme-none"},
}

#: every endpoint that names one stream: id -> (method, path template)
STREAM_ENDPOINTS = {
    "sse": ("GET", "/v1/streams/{sid}"),
    "status": ("GET", "/v1/streams/{sid}/status"),
    "poll": ("GET", "/v1/streams/{sid}/poll"),
    "cancel": ("DELETE", "/v1/streams/{sid}"),
}
STREAMING_TYPES = ("text/event-stream", "application/x-ndjson")
NOT_FOUND = {"error": {"code": "not_found", "message": "no such stream"}}


# -- helpers ------------------------------------------------------------------------


class Gate:
    """A flow whose runs emit the chunk 'first', then stay running until released."""

    def __init__(self, concurrency: int = 64) -> None:
        self.released = asyncio.Event()

        async def hold(msg: Message, ctx: Context) -> None:
            await ctx.emit_chunk(parent=msg, text="first")
            await self.released.wait()
            await ctx.emit_chunk(parent=msg, text="", done=True)

        # Concurrent runs: one held run must not keep the next from starting.
        node = Node(hold, name="hold", policy=NodePolicy(max_concurrency=concurrency))
        self.flow: Flow = create(node.to())


def api_keys() -> ApiKeyAuthenticator:
    return ApiKeyAuthenticator(API_KEYS)


def keyed(**overrides: Any) -> EdgeSettings:
    return EdgeSettings(authenticator=overrides.pop("authenticator", api_keys()), **overrides)


@contextlib.asynccontextmanager
async def edge(
    serve: Serve, flow: Flow, settings: EdgeSettings
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(flow, settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    key: str | None = None,
    *,
    headers: dict[str, Any] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """One request; the body is read unless it is a (possibly endless) stream."""
    all_headers = dict(headers or {})
    if key is not None:
        all_headers.update(bearer(key))
    async with client.stream(method, url, headers=all_headers, **kwargs) as r:
        if not r.headers.get("content-type", "").startswith(STREAMING_TYPES):
            await r.aread()
    return r


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """``r`` is a ``status`` answer with the JSON error body of docs/wire-protocol.md."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str)
    return dict(body["error"])


def assert_retry_after(r: httpx.Response) -> None:
    value = r.headers["retry-after"]
    assert value.isascii(), value
    assert value.isdigit(), value
    assert int(value) >= 1


async def start(client: httpx.AsyncClient, key: str, tenant: str = "acme") -> str:
    body = {"payload": "hi", "headers": {"tenant": tenant}}
    r = await client.post("/v1/streams", json=body, headers=bearer(key))
    assert r.status_code == 201, r.text
    return str(r.json()["stream_id"])


async def first_event(
    client: httpx.AsyncClient,
    sid: str,
    headers: dict[str, str],
    params: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The first SSE chunk of ``sid``; the connection is closed after it."""
    parser = SseParser()
    async with client.stream("GET", f"/v1/streams/{sid}", headers=headers, params=params) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        async for data in r.aiter_bytes():
            parser.feed_data(data)
            for ev in parser.events_received():
                assert ev.event == "chunk", ev
                return dict(json.loads(ev.data))
    raise AssertionError("the stream ended without an event")


async def state_of(client: httpx.AsyncClient, sid: str) -> str:
    r = await client.get(f"/v1/streams/{sid}/status", headers=bearer(ADMIN_KEY))
    assert r.status_code == 200, r.text
    return str(r.json()["state"])


async def until(condition: Callable[[], bool]) -> None:
    """Poll an in-process condition (the server shares the test's loop)."""
    while True:
        if condition():
            return
        await asyncio.sleep(0.01)


# -- tenants x endpoints ------------------------------------------------------------


@pytest.mark.parametrize("endpoint", STREAM_ENDPOINTS)
async def test_other_tenant_gets_the_same_404_as_for_a_missing_stream(
    serve: Serve, endpoint: str
) -> None:
    method, path = STREAM_ENDPOINTS[endpoint]
    gate = Gate()
    async with asyncio.timeout(30), edge(serve, gate.flow, keyed()) as client:
        sid = await start(client, ACME_KEY)
        foreign = await call(client, method, path.format(sid=sid), GLOBEX_KEY)
        missing = await call(client, method, path.format(sid=uuid.uuid4()), GLOBEX_KEY)
        assert_error(foreign, 404, "not_found")
        assert foreign.json() == missing.json() == NOT_FOUND
        assert sid not in foreign.text
        # Nothing happened to it: still running (a foreign DELETE cancelled nothing).
        assert await state_of(client, sid) == "running"
        status = await call(client, "GET", f"/v1/streams/{sid}/status", ACME_KEY)
        assert status.json()["subscribers"] == 0
        gate.released.set()


@pytest.mark.parametrize("key", [ACME_KEY, ADMIN_KEY], ids=["owner", "admin"])
async def test_owner_and_admin_may_use_every_stream_endpoint(serve: Serve, key: str) -> None:
    gate = Gate()
    async with asyncio.timeout(30), edge(serve, gate.flow, keyed()) as client:
        sid = await start(client, ACME_KEY)
        chunk = await first_event(client, sid, bearer(key))
        assert (chunk["seq"], chunk["text"]) == (0, "first")
        r = await call(client, "GET", f"/v1/streams/{sid}/status", key)
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "running"
        assert r.json()["tenant"] == "acme"
        r = await call(client, "GET", f"/v1/streams/{sid}/poll", key, params={"wait_s": 5})
        assert r.status_code == 200, r.text
        assert [c["text"] for c in r.json()] == ["first"]
        r = await call(client, "GET", "/v1/streams", key)
        assert sid in [s["stream_id"] for s in r.json()["streams"]]
        r = await call(client, "DELETE", f"/v1/streams/{sid}", key)
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "cancelled"


async def test_listing_shows_only_the_callers_tenant(serve: Serve) -> None:
    gate = Gate()
    async with asyncio.timeout(30), edge(serve, gate.flow, keyed()) as client:
        acme = await start(client, ACME_KEY)
        globex = await start(client, GLOBEX_KEY, tenant="globex")

        async def listed(key: str) -> dict[str, str]:
            r = await call(client, "GET", "/v1/streams", key)
            assert r.status_code == 200, r.text
            return {s["stream_id"]: s["tenant"] for s in r.json()["streams"]}

        assert await listed(ACME_KEY) == {acme: "acme"}
        assert await listed(GLOBEX_KEY) == {globex: "globex"}
        assert await listed(ADMIN_KEY) == {acme: "acme", globex: "globex"}
        gate.released.set()


async def test_starting_a_stream_for_another_tenant_is_403(serve: Serve) -> None:
    gate = Gate()
    async with asyncio.timeout(30), edge(serve, gate.flow, keyed()) as client:
        for tenant in ("acme", "acme\x00", "*", "ops"):
            body = {"payload": "x", "headers": {"tenant": tenant}}
            r = await call(client, "POST", "/v1/streams", GLOBEX_KEY, json=body)
            assert_error(r, 403, "forbidden")
        assert gate.flow.streams() == []  # no run was started
        # The same key starts its own tenant's streams, and admin any tenant's.
        await start(client, GLOBEX_KEY, tenant="globex")
        await start(client, ADMIN_KEY, tenant="acme")
        assert sorted(s.tenant for s in gate.flow.streams()) == ["acme", "globex"]
        gate.released.set()


async def test_a_finished_stream_stays_hidden_from_other_tenants(serve: Serve) -> None:
    """After it ends (and leaves the registry), the tenant check still holds."""

    async def short(msg: Message, ctx: Context) -> None:
        await ctx.emit_chunk(parent=msg, text="only")
        await ctx.emit_chunk(parent=msg, text="", done=True)

    # linger_s=0: it leaves the registry as soon as it ends.
    flow = create(Node(short, name="short").to(), limits=Limits(linger_s=0))
    async with asyncio.timeout(30), edge(serve, flow, keyed()) as client:
        sid = await start(client, ACME_KEY)
        await until(lambda: flow.lookup(sid) is None and flow.finished(sid) is not None)
        for method, path in STREAM_ENDPOINTS.values():
            r = await call(client, method, path.format(sid=sid), GLOBEX_KEY)
            assert_error(r, 404, "not_found")
            assert r.json() == NOT_FOUND
        r = await call(client, "GET", f"/v1/streams/{sid}/status", ACME_KEY)
        assert r.status_code == 200
        assert (
            r.json()["state"] == "done"
        )  # docs/wire-protocol.md: running, done, failed, cancelled
        r = await call(client, "GET", f"/v1/streams/{sid}", ACME_KEY, params={"from_seq": 2})
        assert r.status_code == 204


# -- scopes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "method", "path", "scope"),
    [
        (ACME_NO_START, "POST", "/v1/streams", START),
        (ACME_NO_READ, "GET", "/v1/streams/{sid}", READ),
        (ACME_NO_READ, "GET", "/v1/streams/{sid}/status", READ),
        (ACME_NO_READ, "GET", "/v1/streams/{sid}/poll", READ),
        (ACME_NO_READ, "GET", "/v1/streams", READ),
        (ACME_NO_CANCEL, "DELETE", "/v1/streams/{sid}", CANCEL),
        (ACME_NO_SCOPES, "POST", "/v1/streams", START),
        (ACME_NO_SCOPES, "GET", "/v1/streams/{sid}", READ),
        (ACME_NO_SCOPES, "DELETE", "/v1/streams/{sid}", CANCEL),
    ],
    ids=[
        "start",
        "sse",
        "status",
        "poll",
        "list",
        "cancel",
        "none-start",
        "none-read",
        "none-cancel",
    ],
)
async def test_missing_scope_is_403(
    serve: Serve, key: str, method: str, path: str, scope: str
) -> None:
    gate = Gate()
    async with asyncio.timeout(30), edge(serve, gate.flow, keyed()) as client:
        sid = await start(client, ACME_KEY)
        body = {"payload": "x", "headers": {"tenant": "acme"}} if method == "POST" else None
        r = await call(client, method, path.format(sid=sid), key, json=body)
        error = assert_error(r, 403, "forbidden")
        assert scope in error["message"]
        assert await state_of(client, sid) == "running"
        assert len(gate.flow.streams()) == 1  # a refused POST started nothing
        gate.released.set()


async def test_each_scope_grants_what_it_names(serve: Serve) -> None:
    gate = Gate()
    async with asyncio.timeout(30), edge(serve, gate.flow, keyed()) as client:
        await start(client, ACME_NO_READ)  # start without read
        sid = await start(client, ACME_NO_CANCEL)
        chunk = await first_event(client, sid, bearer(ACME_NO_START))  # read without start
        assert chunk["text"] == "first"
        r = await call(client, "GET", f"/v1/streams/{sid}/status", ACME_NO_CANCEL)
        assert r.status_code == 200
        r = await call(client, "DELETE", f"/v1/streams/{sid}", ACME_NO_READ)  # cancel only
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "cancelled"
        gate.released.set()


# -- 401: JWTs --------------------------------------------------------------------------

HS_SECRET = "hs256-secret-for-tests-0123456789abcdef"
OTHER_HS_SECRET = "another-hs256-secret-0123456789abcdef"
ALL_SCOPES = f"{START} {READ} {CANCEL}"


@functools.cache
def rsa_key(n: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "svc-acme", "tenant": "acme", "scope": ALL_SCOPES, "exp": now + 600}
    return {k: v for k, v in (base | overrides).items() if v is not None}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def crafted(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A JWT built by hand: HMAC-SHA256 over it with ``key``, or no signature."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), "sha256").digest()
    return f"{signing_input}.{b64url(signature)}"


def jwt_auth(setup: str) -> Authenticator:
    if setup == "hs256":
        return JwtAuthenticator(secret=HS_SECRET)
    return JwtAuthenticator(public_key=public_pem(rsa_key(0)))


def valid_token(setup: str) -> str:
    if setup == "hs256":
        return jwt.encode(claims(), HS_SECRET, algorithm="HS256")
    return jwt.encode(claims(), rsa_key(0), algorithm="RS256")


def bad_credentials(setup: str, case: str) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """(headers, query, texts that must not be echoed) for one refused request."""
    expired = claims(exp=int(time.time()) - 3600)
    none_token = crafted({"alg": "none", "typ": "JWT"}, claims(), None)
    tokens: dict[str, str] = {
        "garbage": "not-a-jwt-and-not-a-key-0123456789",
        "alg_none": none_token,
        "alg_none_upper": crafted({"alg": "NONE", "typ": "JWT"}, claims(), None),
    }
    if setup == "hs256":
        tokens |= {
            "expired": jwt.encode(expired, HS_SECRET, algorithm="HS256"),
            "forged": jwt.encode(claims(), OTHER_HS_SECRET, algorithm="HS256"),
            "no_tenant": jwt.encode(claims(tenant=None), HS_SECRET, algorithm="HS256"),
            "admin_tenant_marker": jwt.encode(claims(tenant="*"), HS_SECRET, algorithm="HS256"),
            "no_exp": jwt.encode(claims(exp=None), HS_SECRET, algorithm="HS256"),
        }
    else:
        tokens |= {
            "expired": jwt.encode(expired, rsa_key(0), algorithm="RS256"),
            "forged": jwt.encode(claims(), rsa_key(1), algorithm="RS256"),
            "hs256_token": jwt.encode(claims(), HS_SECRET, algorithm="HS256"),
            # Algorithm confusion: HS256 keyed with the server's own public key.
            "hs256_keyed_with_public_pem": crafted(
                {"alg": "HS256", "typ": "JWT"}, claims(), public_pem(rsa_key(0))
            ),
        }
    valid = valid_token(setup)
    headers: dict[str, Any]
    query: dict[str, str] = {}
    if case == "missing":
        headers, token = {}, None
    elif case == "bearer_alone":
        headers, token = {"Authorization": "Bearer"}, None
    elif case == "basic":
        headers, token = {"Authorization": "Basic xyz"}, None
    elif case == "basic_with_valid_token":
        headers, token = {"Authorization": f"Basic {valid}"}, valid
    elif case == "bad_query_token":
        headers, token = {}, tokens["forged"]
        query = {"access_token": token}
    elif case == "bad_header_wins_over_good_query":
        headers, token = bearer(tokens["forged"]), tokens["forged"]
        query = {"access_token": valid}
    else:
        token = tokens[case]
        headers = bearer(token)
    secrets = [] if token is None else [token, *(s for s in token.split(".") if len(s) >= 8)]
    return headers, query, secrets


HS_CASES = [
    "missing",
    "bearer_alone",
    "basic",
    "basic_with_valid_token",
    "garbage",
    "expired",
    "forged",
    "alg_none",
    "alg_none_upper",
    "no_tenant",
    "admin_tenant_marker",
    "no_exp",
    "bad_query_token",
    "bad_header_wins_over_good_query",
]
RS_CASES = [
    "missing",
    "expired",
    "forged",
    "hs256_token",
    "hs256_keyed_with_public_pem",
    "alg_none",
    "bad_query_token",
]


@pytest.mark.parametrize(
    ("setup", "case"), [("hs256", c) for c in HS_CASES] + [("rs256", c) for c in RS_CASES]
)
async def test_bad_credentials_are_401_on_every_endpoint(
    serve: Serve, setup: str, case: str
) -> None:
    gate = Gate()
    settings = EdgeSettings(authenticator=jwt_auth(setup))
    async with asyncio.timeout(30), edge(serve, gate.flow, settings) as client:
        sid = await start(client, valid_token(setup))
        headers, query, secrets = bad_credentials(setup, case)
        endpoints = [("GET", "/v1/streams"), ("POST", "/v1/streams")]
        endpoints += [(m, p.format(sid=sid)) for m, p in STREAM_ENDPOINTS.values()]
        for method, path in endpoints:
            body = {"payload": "x", "headers": {"tenant": "acme"}} if method == "POST" else None
            r = await call(client, method, path, headers=headers, params=query, json=body)
            assert_error(r, 401, "unauthorized")
            assert r.headers["www-authenticate"] == "Bearer"
            for secret in secrets:
                assert secret not in r.text
                assert secret not in str(r.headers)
        r = await call(client, "GET", f"/v1/streams/{sid}/status", valid_token(setup))
        assert r.json()["state"] == "running"  # the refused DELETE cancelled nothing
        assert len(gate.flow.streams()) == 1  # the refused POST started nothing
        gate.released.set()


@pytest.mark.parametrize("setup", ["hs256", "rs256"])
async def test_valid_jwt_in_header_or_access_token_query_is_accepted(
    serve: Serve, setup: str
) -> None:
    gate = Gate()
    settings = EdgeSettings(authenticator=jwt_auth(setup))
    async with asyncio.timeout(30), edge(serve, gate.flow, settings) as client:
        token = valid_token(setup)
        sid = await start(client, token)
        # Scheme names are case-insensitive (RFC 7235).
        r = await call(client, "GET", "/v1/streams", headers={"Authorization": f"bearer {token}"})
        assert r.status_code == 200, r.text
        query = {"access_token": token}
        r = await call(client, "GET", "/v1/streams", params=query)
        assert r.status_code == 200, r.text
        assert [s["stream_id"] for s in r.json()["streams"]] == [sid]
        # The EventSource case: no headers, the token in the query.
        chunk = await first_event(client, sid, {}, params=query)
        assert chunk["text"] == "first"
        body = {"payload": "x", "headers": {"tenant": "acme"}}
        r = await call(client, "POST", "/v1/streams", params=query, json=body)
        assert r.status_code == 201, r.text
        # A token for another tenant sees nothing of acme's.
        other = claims(sub="svc-globex", tenant="globex")
        key: Any = HS_SECRET if setup == "hs256" else rsa_key(0)
        globex = jwt.encode(other, key, algorithm="HS256" if setup == "hs256" else "RS256")
        r = await call(client, "GET", f"/v1/streams/{sid}/status", globex)
        assert r.json() == NOT_FOUND
        gate.released.set()


async def test_health_needs_no_credentials(serve: Serve) -> None:
    gate = Gate()
    settings = EdgeSettings(authenticator=jwt_auth("hs256"))
    async with asyncio.timeout(30), edge(serve, gate.flow, settings) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


# -- limits -------------------------------------------------------------------------

LIMITED = EdgeLimits(requests_per_s=1, request_burst=3, max_connections=1)


async def test_request_rate_over_the_burst_is_429_with_retry_after(serve: Serve) -> None:
    gate = Gate()
    async with asyncio.timeout(30), edge(serve, gate.flow, keyed(edge_limits=LIMITED)) as client:
        statuses = [(await call(client, "GET", "/v1/streams", ACME_KEY)).status_code]
        statuses += [(await call(client, "GET", "/v1/streams", ACME_KEY)).status_code]
        statuses += [(await call(client, "GET", "/v1/streams", ACME_KEY)).status_code]
        assert statuses == [200, 200, 200]
        r = await call(client, "GET", "/v1/streams", ACME_KEY)
        assert_error(r, 429, "rate_limited")
        assert_retry_after(r)
        # Per principal: another key of the same server is unaffected.
        assert (await call(client, "GET", "/v1/streams", GLOBEX_KEY)).status_code == 200


async def test_second_concurrent_stream_connection_is_429_until_the_first_closes(
    serve: Serve,
) -> None:
    gate = Gate()
    flow = gate.flow
    async with asyncio.timeout(30), edge(serve, flow, keyed(edge_limits=LIMITED)) as client:
        sid = await start(client, ADMIN_KEY)  # admin's budget, not acme's
        url = f"/v1/streams/{sid}"
        async with client.stream("GET", url, headers=bearer(ACME_KEY)) as first:
            assert first.status_code == 200
            second = await call(client, "GET", url, ACME_KEY)
            assert_error(second, 429, "limit_exceeded")  # its own connection budget
            assert_retry_after(second)
            # Another principal has its own connection budget.
            assert (await first_event(client, sid, bearer(ADMIN_KEY)))["text"] == "first"
        # Closed on the client side; the server notices the disconnect and frees the slot.
        await until(lambda: (s := flow.lookup(sid)) is not None and s.subscribers == 0)
        assert (await first_event(client, sid, bearer(ACME_KEY)))["text"] == "first"
        gate.released.set()


async def test_one_tenants_unread_stream_does_not_stall_another_tenants(serve: Serve) -> None:
    """Regression: the demo node once ran one invocation at a time, so a run blocked
    on its unread stream's buffer kept every other tenant's run from starting."""
    flow = build_demo_flow(Pacing(0, 0))
    async with asyncio.timeout(30), edge(serve, flow, keyed()) as client:
        body = {"payload": "word " * 200, "headers": {"tenant": "acme"}}  # > 64 chunks
        r = await call(client, "POST", "/v1/streams", ACME_KEY, json=body)
        assert r.status_code == 201, r.text
        sid = await start(client, GLOBEX_KEY, tenant="globex")  # payload "hi"
        # wait_s bounds the long-poll; the answer comes as soon as a chunk exists.
        query = {"wait_s": "3"}
        r = await call(client, "GET", f"/v1/streams/{sid}/poll", GLOBEX_KEY, params=query)
        assert r.status_code == 200, r.text
        assert [c["text"] for c in r.json()][:1] == ["hi"]


async def test_start_answers_promptly_when_the_flow_cannot_take_more(serve: Serve) -> None:
    """Regression: Flow.start once awaited space in a full inbox, so POST hung."""
    gate = Gate(concurrency=1)  # the first run holds the node; later ones queue up
    settings = keyed(edge_limits=EdgeLimits(requests_per_s=None, max_connections=None))
    async with asyncio.timeout(30), edge(serve, gate.flow, settings) as client:
        try:
            body = {"payload": "x", "headers": {"tenant": "acme"}}
            # A full entry inbox defers starts (a burst, docs/qos.md) until the
            # load watch sees it stay full, within a second: then 503.
            for _ in range(5000):
                # Each POST is answered within 3 s: 201 until the flow is overloaded, then 503.
                r = await client.post("/v1/streams", json=body, headers=bearer(ACME_KEY), timeout=3)
                if r.status_code != 201:
                    break
            assert_error(r, 503, "overloaded")
            assert_retry_after(r)
        finally:
            gate.released.set()  # drain the queue so the server can shut down


# -- hostile input ------------------------------------------------------------------


async def test_oversized_credentials_are_refused_without_a_server_error(serve: Serve) -> None:
    gate = Gate()
    async with asyncio.timeout(30), edge(serve, gate.flow, keyed()) as client:
        # Over MAX_TOKEN_LENGTH but within the HTTP parser's header limit: the app's 401.
        r = await call(client, "GET", "/v1/streams", headers=bearer("A" * 9 * 1024))
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
        assert "A" * 64 not in r.text
        r = await call(client, "GET", "/v1/streams", params={"access_token": "A" * 9 * 1024})
        assert_error(r, 401, "unauthorized")
        # 64 KiB: the server's HTTP parser may refuse it first.
        r = await call(client, "GET", "/v1/streams", headers=bearer("A" * 64 * 1024))
        assert r.status_code in (400, 401, 431), r.status_code
        assert "A" * 64 not in r.text
        assert (await client.get("/healthz")).status_code == 200  # still serving


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer héllo-wörld-0123456789".encode(),
        "Bearer 🔑🔑🔑🔑🔑🔑".encode(),
        f"Bearer {ACME_KEY}é".encode(),
        f"Bearer\u00a0{ACME_KEY}".encode(),
        f"Bear\u00e9r {ACME_KEY}".encode("latin-1"),
        f"Bearer {ACME_KEY} extra".encode(),
        f"Bearer {ACME_KEY.upper()}".encode(),
    ],
    ids=["accents", "emoji", "key+accent", "nbsp", "latin1-scheme", "extra", "case"],
)
async def test_non_ascii_or_mangled_tokens_are_401(serve: Serve, authorization: bytes) -> None:
    gate = Gate()
    async with asyncio.timeout(30), edge(serve, gate.flow, keyed()) as client:
        r = await call(client, "GET", "/v1/streams", headers={"Authorization": authorization})
        if r.status_code == 400 and not r.headers.get("content-type", "").startswith(
            "application/json"
        ):
            return  # refused by the HTTP parser before the app: fine, not a 5xx
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "token",
    ["héllo-0123456789abcdef", ACME_KEY + "\x00", ACME_KEY + "\n", " " + ACME_KEY, "", "🔑" * 8],
    ids=["accents", "nul", "newline", "leading-space", "empty", "emoji"],
)
async def test_hostile_access_token_query_is_401(serve: Serve, token: str) -> None:
    gate = Gate()
    async with asyncio.timeout(30), edge(serve, gate.flow, keyed()) as client:
        r = await call(client, "GET", "/v1/streams", params={"access_token": token})
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "sid",
    ["a" * 10 * 1024, "%00", "..%2F..%2Fhealthz", "%E2%80%AE", "%ZZ", "*", "%2A", "%20"],
    ids=["10KiB", "nul", "dotdot", "rtl", "bad-escape", "star", "star-escaped", "space"],
)
async def test_odd_stream_ids_are_404(serve: Serve, sid: str) -> None:
    gate = Gate()
    async with asyncio.timeout(30), edge(serve, gate.flow, keyed()) as client:
        await start(client, ACME_KEY)
        for key in (ACME_KEY, ADMIN_KEY):
            for method, path in STREAM_ENDPOINTS.values():
                r = await call(client, method, path.format(sid=sid), key)
                assert_error(r, 404, "not_found")
        gate.released.set()


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ({}, {"Last-Event-ID": "-5"}),
        ({}, {"Last-Event-ID": "1.5"}),
        ({}, {"Last-Event-ID": "99999999999999999999999"}),
        ({"from_seq": "abc"}, {}),
        ({"from_seq": "99999999999999999999999"}, {}),
        ({"from_seq": "-1"}, {}),
        ({"from_seq": "+1"}, {}),
        ({"from_seq": "1e3"}, {}),
        ({"from_seq": "1_0"}, {}),
        ({"from_seq": "\u0661"}, {}),  # ARABIC-INDIC DIGIT ONE: isdigit(), not ASCII
        ({"from_seq": ""}, {}),
        ({"from_seq": "9999999999999999999"}, {}),  # well-formed, beyond the stream's head
    ],
    ids=[
        "lei-negative",
        "lei-fraction",
        "lei-huge",
        "abc",
        "huge",
        "negative",
        "plus",
        "exponent",
        "underscore",
        "arabic-digit",
        "empty",
        "beyond-head",
    ],
)
async def test_bad_resume_points_are_400(
    serve: Serve, query: dict[str, str], headers: dict[str, str]
) -> None:
    gate = Gate()
    async with asyncio.timeout(30), edge(serve, gate.flow, keyed()) as client:
        sid = await start(client, ACME_KEY)
        r = await call(client, "GET", f"/v1/streams/{sid}", ACME_KEY, params=query, headers=headers)
        assert_error(r, 400, "bad_request")
        gate.released.set()


@pytest.mark.parametrize(
    "query",
    [
        {"wait_s": "nan"},
        {"wait_s": "NaN"},
        {"wait_s": "-nan"},
        {"wait_s": "-1"},
        {"wait_s": "-inf"},
        {"wait_s": "abc"},
        {"wait_s": ""},
        {"after_seq": "abc"},
        {"after_seq": "-2"},
        {"after_seq": "1.5"},
    ],
)
async def test_bad_poll_parameters_are_400(serve: Serve, query: dict[str, str]) -> None:
    gate = Gate()
    async with asyncio.timeout(30), edge(serve, gate.flow, keyed()) as client:
        sid = await start(client, ACME_KEY)
        r = await call(client, "GET", f"/v1/streams/{sid}/poll", ACME_KEY, params=query)
        assert_error(r, 400, "bad_request")
        gate.released.set()


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"wait_s": "abc"}, "wait_s"),  # issue 15, item 11: this one was blamed on after_seq
        ({"wait_s": "-1"}, "wait_s"),
        ({"after_seq": "abc"}, "after_seq"),
    ],
)
async def test_a_bad_poll_parameter_is_named_in_the_error(
    serve: Serve, query: dict[str, str], named: str
) -> None:
    gate = Gate()
    async with asyncio.timeout(30), edge(serve, gate.flow, keyed()) as client:
        sid = await start(client, ACME_KEY)
        r = await call(client, "GET", f"/v1/streams/{sid}/poll", ACME_KEY, params=query)
        message = assert_error(r, 400, "bad_request")["message"]
        assert message.startswith(f"{named} must be"), message
        gate.released.set()


@pytest.mark.parametrize("wait_s", ["inf", "Infinity", "1e999", "1e308"])
async def test_unbounded_poll_wait_is_clamped(serve: Serve, wait_s: str) -> None:
    gate = Gate()
    async with asyncio.timeout(30), edge(serve, gate.flow, keyed()) as client:
        sid = await start(client, ACME_KEY)
        query = {"wait_s": wait_s, "after_seq": "-1"}
        r = await call(client, "GET", f"/v1/streams/{sid}/poll", ACME_KEY, params=query)
        assert r.status_code in (200, 400), r.text
        if r.status_code == 200:
            assert [c["text"] for c in r.json()] == ["first"]
        else:
            assert_error(r, 400, "bad_request")
        gate.released.set()


async def test_poll_after_a_seq_beyond_the_head_is_a_client_error(serve: Serve) -> None:
    gate = Gate()
    async with asyncio.timeout(30), edge(serve, gate.flow, keyed()) as client:
        sid = await start(client, ACME_KEY)
        for after in ("99999999999999999999999", "9223372036854775807", "1000"):
            r = await call(
                client, "GET", f"/v1/streams/{sid}/poll", ACME_KEY, params={"after_seq": after}
            )
            assert r.status_code in (400, 404), r.text
            assert r.json()["error"]["code"] in ("bad_request", "not_found")
        gate.released.set()


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        # Regression: msgspec raises RecursionError here, once answered 500.
        b'{"payload": ' + b"[" * 100_000 + b"]" * 100_000 + b', "headers": {"tenant": "acme"}}',
        b'{"payload": 1, "headers": {"tenant": "acme", "priority": 18446744073709551616}}',
        b'{"payload": 1, "headers": {"tenant": "' + b"a" * 201 + b'"}}',
        b'{"payload": 1, "headers": {"tenant": "acme"}, "idempotency_key": ""}',
        b'{"payload": 1, "headers": {"tenant": "acme"}, "idempotency_key": "' + b"k" * 201 + b'"}',
        # Regression: msgspec raises UnicodeDecodeError here, once answered 500.
        b'{"payload": "\xed\xa0\x80", "headers": {"tenant": "acme"}}',
        b'{"payload": 1e999, "headers": {"tenant": "acme"}}',
        b"\x00" * 64,
    ],
    ids=[
        "deep-array",
        "deep-payload",
        "huge-priority",
        "long-tenant",
        "empty-key",
        "long-key",
        "bad-utf8-in-string",
        "huge-float",
        "nuls",
    ],
)
async def test_hostile_start_bodies_never_get_a_server_error(serve: Serve, body: bytes) -> None:
    gate = Gate()
    async with asyncio.timeout(30), edge(serve, gate.flow, keyed()) as client:
        r = await call(
            client,
            "POST",
            "/v1/streams",
            ACME_KEY,
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code < 500, r.text
        if r.status_code != 201:
            assert_error(r, 400, "bad_request")
        gate.released.set()


# -- the CLI rule ---------------------------------------------------------------------

TARGET = "icefloe.demo:build_demo_flow"


@pytest.fixture
def no_bind(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """uvicorn.run replaced by a recorder: no CLI test here can bind a socket."""
    runs: list[dict[str, Any]] = []

    def fake_run(app: Any, **kwargs: Any) -> None:
        runs.append({"app": app, **kwargs})

    monkeypatch.setattr(uvicorn, "run", fake_run)
    return runs


def invoke(*args: str) -> tuple[int, str]:
    from icefloe.cli.app import app

    result = CliRunner().invoke(app, list(args))
    # Rich wraps long lines at the console width: compare whitespace-normalised text.
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com"])
def test_serve_refuses_a_public_bind_without_auth(host: str, no_bind: list[Any]) -> None:
    code, output = invoke("serve", TARGET, "--host", host, "--port", "0")
    assert code == 2, output
    assert f"refusing to bind {host} without authentication" in output
    assert "--insecure" in output
    assert no_bind == []


def test_demo_refuses_a_public_bind(no_bind: list[Any]) -> None:
    code, output = invoke("demo", "--host", "0.0.0.0", "--port", "0")
    assert code == 2, output
    assert "binds loopback only" in output
    assert no_bind == []


@pytest.mark.parametrize(
    ("host", "extra"),
    [
        ("127.0.0.1", []),
        ("localhost", []),
        ("::1", []),
        ("0.0.0.0", ["--insecure"]),
        ("0.0.0.0", ["--jwt-secret", HS_SECRET]),
    ],
    ids=["loopback", "localhost", "ipv6-loopback", "insecure", "jwt"],
)
def test_serve_would_start_when_allowed(host: str, extra: list[str], no_bind: list[Any]) -> None:
    """The other half of the rule, with uvicorn.run faked so nothing binds."""
    code, output = invoke("serve", TARGET, "--host", host, "--port", "0", *extra)
    assert code == 0, output
    assert [(run["host"], run["port"]) for run in no_bind] == [(host, 0)]
    assert "refusing" not in output
    assert HS_SECRET not in output


async def test_credential_guessing_is_rate_limited_per_address(serve: Serve) -> None:
    limits = EdgeLimits(requests_per_s=1, request_burst=5)
    async with edge(serve, Gate().flow, keyed(edge_limits=limits)) as client:
        codes = [
            (await client.get("/v1/streams", headers=bearer(f"guess-{i:04d}-xxxxxxxx"))).status_code
            for i in range(8)
        ]
    assert codes[:5] == [401] * 5
    assert set(codes[5:]) == {429}
