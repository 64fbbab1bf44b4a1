"""CORS over a real socket (issue 16, item 7).

``--allow-origin`` (``EdgeSettings.allow_origins``) turns CORS on, and only
it: without it no ``Access-Control-*`` header is sent. Cross-origin scripts
may read ``Location`` (where a started stream is) and ``Retry-After`` (when
to retry a 429 or 503), which are not CORS-safelisted response headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from icefloe.demo import Pacing, build_demo_flow
from icefloe.transport.app import EdgeSettings
from icefloe.transport.limits import EdgeLimits

Serve = Any  # the serve fixture of conftest.py

APP = "https://app.example"
BODY = {"payload": "hi", "headers": {"tenant": "acme"}}


@asynccontextmanager
async def edge(serve: Serve, settings: EdgeSettings) -> AsyncIterator[httpx.AsyncClient]:
    flow = build_demo_flow(Pacing(0, 0))
    async with (
        asyncio.timeout(30),
        serve(flow, settings) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield client


# -- exposed headers ----------------------------------------------------------------


def exposed(r: httpx.Response) -> set[str]:
    value = r.headers.get("access-control-expose-headers", "")
    return {name.strip().lower() for name in value.split(",") if name.strip()}


async def test_cross_origin_scripts_may_read_location_and_retry_after(serve: Serve) -> None:
    settings = EdgeSettings(
        allow_origins=(APP,), edge_limits=EdgeLimits(requests_per_s=1, request_burst=1)
    )
    async with edge(serve, settings) as c:
        preflight = await c.options(
            "/v1/streams",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == APP
        started = await c.post("/v1/streams", json=BODY, headers={"Origin": APP})
        assert started.status_code == 201, started.text
        assert started.headers["access-control-allow-origin"] == APP
        assert {"location", "retry-after"} <= exposed(started)
        assert "access-control-allow-credentials" not in started.headers  # no cookie auth
        limited = await c.post("/v1/streams", json=BODY, headers={"Origin": APP})
        assert limited.status_code == 429, limited.text
        assert limited.headers["retry-after"].isdigit()
        assert {"location", "retry-after"} <= exposed(limited)


async def test_cors_is_off_without_allow_origin(serve: Serve) -> None:
    async with edge(serve, EdgeSettings()) as c:
        r = await c.post("/v1/streams", json=BODY, headers={"Origin": APP})
        assert r.status_code == 201, r.text
        assert "access-control-allow-origin" not in r.headers
        assert "access-control-expose-headers" not in r.headers
