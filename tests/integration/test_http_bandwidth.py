"""Bandwidth limits at the HTTP edge: bytes/s per SSE/NDJSON connection, 429 for tenant budgets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from icefloe import Context, Limits, Message, Node, create
from icefloe.transport.app import EdgeSettings
from icefloe.transport.limits import EdgeLimits
from icefloe.transport.streaming import PumpSettings

Serve = Any  # the serve fixture of conftest.py: serve(flow, settings=None) -> url
UNLIMITED = EdgeLimits(requests_per_s=None, max_connections=None)
CHUNK = "x" * 200


def flood(n: int) -> Node:
    async def emit(msg: Message, ctx: Context) -> None:
        for _ in range(n):
            await ctx.emit_chunk(parent=msg, text=CHUNK)
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return Node(emit, name="flood")


@pytest.mark.parametrize("accept", ["text/event-stream", "application/x-ndjson"])
async def test_connection_bytes_per_s_caps_the_body_rate(serve: Serve, accept: str) -> None:
    rate = 100_000.0
    pump = PumpSettings(bytes_per_s=rate, burst_bytes=4_096)
    settings = EdgeSettings(pump=pump, edge_limits=UNLIMITED, history=1024)
    async with (
        create(flood(500).to()) as flow,
        serve(flow, settings) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        r = await client.post("/v1/streams", json={"headers": {"tenant": "t"}})
        sid = r.json()["stream_id"]
        received = 0
        first: float | None = None
        async with asyncio.timeout(15):
            async with client.stream(
                "GET",
                f"/v1/streams/{sid}",
                # The limit counts wire bytes, after gzip: ask for none.
                headers={"accept": accept, "accept-encoding": "identity"},
            ) as response:
                assert response.status_code == 200
                async for data in response.aiter_bytes():
                    if first is None:
                        first = time.monotonic()
                    received += len(data)
        assert first is not None
        elapsed = time.monotonic() - first
    # About 120 kB of events at 100 kB/s, after a 4 KiB burst: about 1.2 s.
    # The bucket's hard bound holds however loaded the machine is: at most the
    # burst plus the rate over the time (50 ms of slack for when the first
    # bytes arrived); a loose lower bound shows that the pump does not crawl.
    assert received > 100_000
    assert received <= 4_096 + rate * (elapsed + 0.05), (received, elapsed)
    assert received >= 0.5 * rate * elapsed, (received, elapsed)


async def test_tenant_over_its_inflight_budget_gets_429(serve: Serve) -> None:
    limits = Limits(max_inflight_bytes_per_tenant=2_000, stream_buffer=1_000)
    settings = EdgeSettings(edge_limits=UNLIMITED, history=0, stream_window=1_000)
    async with (
        create(flood(100).to(), limits=limits) as flow,
        serve(flow, settings) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        body = {"headers": {"tenant": "acme"}}
        r = await client.post("/v1/streams", json=body)
        assert r.status_code == 201
        # Nobody reads: the producer fills the tenant's budget and waits.
        async with asyncio.timeout(5):
            while True:
                budgets = flow.stats().budgets
                assert budgets is not None
                if budgets.tenants and budgets.tenants[0].blocked:
                    break
                await asyncio.sleep(0.01)
        refused = await client.post("/v1/streams", json=body)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "limit_exceeded"
        assert refused.headers["retry-after"] == "1"
        other = await client.post("/v1/streams", json={"headers": {"tenant": "other"}})
        assert other.status_code == 201
        metrics = (await client.get("/metrics")).text
        assert 'icefloe_tenant_inflight_bytes{tenant="acme"}' in metrics
        assert 'icefloe_tenant_refused_total{tenant="acme"} 1.0' in metrics
