"""Who may read ``/metrics``, and what its series are labelled with.

Issue 15, finding 8: an unauthenticated ``/metrics`` labelled series with
tenant names and subscriber ids. With authentication on, it now needs the
``metrics`` scope (or ``admin``); no series is labelled with a subscriber id.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from icefloe import Context, Flow, Message, Node, create
from icefloe.core.wire_errors import ErrorCode, http_status
from icefloe.hub import Hub
from icefloe.transport.app import EdgeSettings, create_app, server_options
from icefloe.transport.auth import ApiKeyAuthenticator
from icefloe.transport.limits import EdgeLimits
from servekit import serve_asgi

Serve = Any  # the serve fixture of conftest.py: serve(flow, settings=None) -> url

TENANT_KEY = "acme-app-key-0123456789abcdef"
SCRAPER_KEY = "prometheus-key-0123456789abcdef"
ADMIN_KEY = "ops-admin-key-0123456789abcdef"
API_KEYS = {
    # a tenant's key with every scope but the operator ones
    TENANT_KEY: {
        "tenant": "acme",
        "subject": "acme-app",
        "scopes": ["streams:start", "streams:read", "topics:publish", "topics:read"],
    },
    SCRAPER_KEY: {"tenant": "ops", "subject": "prometheus", "scopes": ["metrics"]},
    ADMIN_KEY: {"tenant": "ops", "subject": "ops-admin", "scopes": ["admin"]},
}
UNLIMITED = EdgeLimits(requests_per_s=None, max_connections=None)
SUBSCRIBER_ID = "sub-7f3a9c-private"


def idle_flow() -> Flow:
    async def idle(msg: Message, ctx: Context) -> None:
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return create(Node(idle, name="idle").to())


def keyed() -> EdgeSettings:
    return EdgeSettings(authenticator=ApiKeyAuthenticator(API_KEYS), edge_limits=UNLIMITED)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@asynccontextmanager
async def served(settings: EdgeSettings, hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(idle_flow(), settings, hub=hub)
    async with (
        serve_asgi(app, **server_options(settings)) as url,
        httpx.AsyncClient(base_url=url) as client,
        asyncio.timeout(30),
    ):
        yield client


def assert_error(response: httpx.Response, code: ErrorCode) -> None:
    assert response.status_code == http_status(code), response.text
    assert response.json()["error"]["code"] == code.value
    assert "icefloe_" not in response.text


async def test_with_auth_on_metrics_needs_the_metrics_scope() -> None:
    hub = Hub()
    async with served(keyed(), hub) as client:
        anonymous = await client.get("/metrics")
        assert_error(anonymous, ErrorCode.UNAUTHORIZED)
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert_error(
            await client.get("/metrics", headers=bearer("not-a-key")), ErrorCode.UNAUTHORIZED
        )
        # a tenant's key, with every scope a tenant's client needs: still no figures
        forbidden = await client.get("/metrics", headers=bearer(TENANT_KEY))
        assert_error(forbidden, ErrorCode.FORBIDDEN)
        assert "metrics" in forbidden.json()["error"]["message"]
        for key in (SCRAPER_KEY, ADMIN_KEY):
            scraped = await client.get("/metrics", headers=bearer(key))
            assert scraped.status_code == 200
            assert scraped.headers["content-type"].startswith("text/plain")
            assert "icefloe_streams_active" in scraped.text
        # the probes stay open: a load balancer has no key
        assert (await client.get("/healthz")).status_code == 200
    await hub.aclose()


async def test_with_auth_off_metrics_stay_open() -> None:
    hub = Hub()
    async with served(EdgeSettings(edge_limits=UNLIMITED), hub) as client:
        scraped = await client.get("/metrics")
        assert scraped.status_code == 200
        assert "icefloe_hub_subscribers" in scraped.text
    await hub.aclose()


async def test_no_series_is_labelled_with_a_subscriber_id() -> None:
    hub = Hub()
    # A subscriber of tenant acme that drops: before, its id was a label.
    sub = hub.subscribe("chat.>", tenant="acme", buffer=1, subscriber_id=SUBSCRIBER_ID)
    async with served(keyed(), hub) as client:
        for n in range(5):
            r = await client.post(
                "/v1/topics/chat.room",
                json={"data": {"n": n}},
                headers=bearer(TENANT_KEY),
            )
            assert r.status_code == 201, r.text
        text = (await client.get("/metrics", headers=bearer(SCRAPER_KEY))).text
    assert sub.statistics().dropped_oldest == 4
    series = [line for line in text.splitlines() if not line.startswith("#")]
    assert not [line for line in series if "subscriber=" in line or SUBSCRIBER_ID in line]
    # the authorised scrape still sees which tenant drops
    assert 'icefloe_hub_tenant_dropped{policy="drop_oldest",tenant="acme"} 4.0' in series
    await hub.aclose()
