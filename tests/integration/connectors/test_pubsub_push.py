"""``POST /v1/pubsub/push`` on a running edge: push envelopes into a PushSource,
ack = 2xx, nack = 503, OIDC tokens from a local identity provider (tests/idp.py)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from icefloe.connectors import Record, chunk_record, record_chunk
from icefloe.connectors.pubsub_push import PUSH_PATH, PushAuth, PushSource
from icefloe.core.messages import StreamChunk
from icefloe.demo import Pacing, build_demo_flow
from icefloe.transport.app import create_app
from idp import JwksServer, SigningKey, jwks_server
from servekit import serve_asgi

SUBSCRIPTION = "projects/icefloe-test/subscriptions/push"
AUDIENCE = "https://icefloe-abc123-ew.a.run.app/v1/pubsub/push"
ACCOUNT = "pusher@icefloe-test.iam.gserviceaccount.com"
GOOGLE = "https://accounts.google.com"


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey("google-key-1")


@pytest.fixture
def idp(key: SigningKey) -> Iterator[JwksServer]:
    with jwks_server(key) as server:
        yield server


def google_claims(**changes: Any) -> dict[str, Any]:
    """The claims of the OIDC token Pub/Sub sends with a push."""
    now = int(time.time())
    claims = {
        "iss": GOOGLE,
        "aud": AUDIENCE,
        "azp": "112233445566778899000",
        "sub": "112233445566778899000",
        "email": ACCOUNT,
        "email_verified": True,
        "iat": now,
        "exp": now + 3600,
    }
    return {**claims, **changes}


def envelope(record: Record, message_id: str = "1001") -> dict[str, Any]:
    return {
        "message": {
            "data": base64.b64encode(record.value).decode(),
            "attributes": {name: value.decode() for name, value in record.headers},
            "messageId": message_id,
            "orderingKey": (record.key or b"").decode(),
            "publishTime": "2026-12-07T18:00:00.123Z",
        },
        "subscription": SUBSCRIPTION,
    }


def a_chunk(seq: int = 0) -> Record:
    return chunk_record(StreamChunk("s1", seq, f"t{seq}"), trace_id="tr", tenant="acme")


@asynccontextmanager
async def edge(push: PushSource) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(build_demo_flow(Pacing(0, 0)), pubsub_push=push)
    async with (
        asyncio.timeout(30),
        serve_asgi(app) as url,
        push,  # closed first: requests it holds are answered before the server stops
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield client


async def test_a_pushed_message_reaches_the_source_and_its_ack_answers_204() -> None:
    push = PushSource(SUBSCRIPTION)
    async with edge(push) as client:
        posted = asyncio.ensure_future(client.post(PUSH_PATH, json=envelope(a_chunk(7))))
        inbound = await anext(aiter(push))
        assert not posted.done()  # held open until the consumer answers
        read = record_chunk(inbound.record).chunk
        assert (read.stream_id, read.seq, read.text) == ("s1", 7, "t7")
        assert inbound.record.key == b"s1"
        assert inbound.partition == SUBSCRIPTION
        assert inbound.position.message_id == "1001"
        await push.ack(inbound)
        response = await posted
        assert response.status_code == 204
        assert push.statistics()[:4] == (1, 1, 0, 0)


async def test_a_nacked_push_answers_503_so_pubsub_redelivers() -> None:
    push = PushSource(SUBSCRIPTION)
    async with edge(push) as client:
        body = {**envelope(a_chunk()), "deliveryAttempt": 3}
        posted = asyncio.ensure_future(client.post(PUSH_PATH, json=body))
        inbound = await anext(aiter(push))
        assert inbound.deliveries == 3
        await push.nack(inbound, "downstream busy")
        response = await posted
        assert response.status_code == 503
        assert response.json()["error"] == {
            "code": "unavailable",
            "message": "nacked: downstream busy",
        }


async def test_a_push_nobody_acks_in_time_answers_503() -> None:
    push = PushSource(SUBSCRIPTION, ack_timeout_s=0.2)
    async with edge(push) as client:
        response = await client.post(PUSH_PATH, json=envelope(a_chunk()))
        assert response.status_code == 503
        assert "ack_timeout_s" in response.json()["error"]["message"]
        inbound = await anext(aiter(push))
        await push.ack(inbound)  # too late: a no-op, the push was answered
        assert push.statistics().confirmed == 0


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "JSON object"),
        (b'{"subscription": "s"}', "'message'"),
        (b'{"message": {"messageId": "1"}}', "'subscription'"),
        (b'{"message": {"data": "AA=="}, "subscription": "s"}', "messageId"),
        (b'{"message": {"messageId": "1", "data": "%%%"}, "subscription": "s"}', "base64"),
        (b'{"message": {"messageId": "1", "attributes": {"a": 1}}, "subscription": "s"}', "attr"),
        (b'{"message": {"messageId": "1"}, "subscription": "s", "deliveryAttempt": 0}', "Attempt"),
    ],
)
async def test_a_body_that_is_not_a_push_envelope_is_a_400(body: bytes, names: str) -> None:
    async with edge(PushSource()) as client:
        response = await client.post(PUSH_PATH, content=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "bad_request"
        assert names in response.json()["error"]["message"]


async def test_a_body_over_max_body_bytes_is_a_413() -> None:
    async with edge(PushSource(max_body_bytes=1024)) as client:
        response = await client.post(PUSH_PATH, json=envelope(Record(b"k", b"x" * 2048)))
        assert response.status_code == 413
        assert "max_body_bytes (1024)" in response.json()["error"]["message"]


async def test_another_subscription_is_a_403() -> None:
    async with edge(PushSource(SUBSCRIPTION)) as client:
        body = {**envelope(a_chunk()), "subscription": "projects/p/subscriptions/other"}
        response = await client.post(PUSH_PATH, json=body)
        assert response.status_code == 403


async def test_the_route_exists_only_with_a_push_source() -> None:
    app = create_app(build_demo_flow(Pacing(0, 0)))
    async with (
        asyncio.timeout(30),
        serve_asgi(app) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        response = await client.post(PUSH_PATH, json=envelope(a_chunk()))
        assert response.status_code == 404


async def test_a_valid_google_oidc_token_is_accepted(idp: JwksServer, key: SigningKey) -> None:
    push = PushSource(SUBSCRIPTION, auth=PushAuth(AUDIENCE, ACCOUNT, jwks_url=idp.url))
    async with edge(push) as client:
        headers = {"Authorization": f"Bearer {key.sign(google_claims())}"}
        posted = asyncio.ensure_future(
            client.post(PUSH_PATH, json=envelope(a_chunk()), headers=headers)
        )
        await push.ack(await anext(aiter(push)))
        assert (await posted).status_code == 204


@pytest.mark.parametrize(
    ("token", "status", "says"),
    [
        (None, 401, "Bearer"),
        ("not-a-jwt", 401, "not a JWT"),
        ("forged", 401, "Signature"),
        (google_claims(aud="https://elsewhere.example"), 401, "Audience"),
        (google_claims(iss="https://evil.example"), 401, "issuer"),
        (google_claims(exp=int(time.time()) - 60), 401, "expired"),
        (google_claims(email="other@icefloe-test.iam.gserviceaccount.com"), 403, "service_account"),
        (google_claims(email_verified=False), 403, "verified"),
    ],
    ids=["missing", "garbage", "forged", "audience", "issuer", "expired", "account", "unverified"],
)
async def test_a_bad_or_missing_token_is_refused(
    idp: JwksServer, key: SigningKey, token: Any, status: int, says: str
) -> None:
    push = PushSource(SUBSCRIPTION, auth=PushAuth(AUDIENCE, ACCOUNT, jwks_url=idp.url))
    if token == "forged":
        # the right claims and kid, signed by a key the provider never published
        token = SigningKey(key.kid).sign(google_claims())
    elif isinstance(token, dict):
        token = key.sign(token)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with edge(push) as client:
        response = await client.post(PUSH_PATH, json=envelope(a_chunk()), headers=headers)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == ("unauthorized" if status == 401 else "forbidden")
        assert says.lower() in error["message"].lower()
        assert push.statistics().records == 0
