"""Who is alive: membership heartbeats, ``GET /v1/cluster`` and the cluster gauges (issue 12).

The registry is tested on the machine's Redis under a key prefix of its
own; the route on real ``icefloe serve --backplane`` processes, and without
a backplane on an in-process server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest
import redis.asyncio
from cluster import REDIS_URL, cluster
from redis.exceptions import ConnectionError as RedisConnectionError

from icefloe import Context, Message, Node, create
from icefloe.backplane.keys import Keys
from icefloe.backplane.members import Members, beat_forever
from icefloe.runtime.flow import Flow
from icefloe.transport.app import EdgeSettings, create_app, server_options
from icefloe.transport.auth import ApiKeyAuthenticator
from servekit import serve_asgi


@contextlib.asynccontextmanager
async def _redis() -> AsyncIterator[tuple[redis.asyncio.Redis, Keys]]:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except RedisConnectionError:
        await client.aclose()
        pytest.skip(f"no Redis at {REDIS_URL}")
    keys = Keys(f"icefloe:test:{uuid.uuid4().hex[:10]}:")
    try:
        yield client, keys
    finally:
        found = [k async for k in client.scan_iter(match=f"{keys.prefix}*", count=1000)]
        if found:
            await client.delete(*found)
        await client.aclose()


async def test_members_beat_list_their_stats_and_leave() -> None:
    async with asyncio.timeout(10), _redis() as (client, keys):
        members = Members(client, keys)
        await members.beat("gw-1", "gateway", {"connections": 3, "load": "normal"})
        await members.beat("wk-1", "worker", {"runs_running": 2, "load": "congested"})
        alive = await members.alive()
        assert [(m["id"], m["role"]) for m in alive] == [("gw-1", "gateway"), ("wk-1", "worker")]
        assert alive[0]["connections"] == 3
        assert alive[1]["load"] == "congested"
        assert abs(alive[0]["beat_ms"] - time.time() * 1000) < 5000
        await members.leave("gw-1")
        assert [m["id"] for m in await members.alive()] == ["wk-1"]
        with pytest.raises(ValueError, match="role"):
            await members.beat("x", "janitor", {})


async def test_a_silent_member_drops_out_after_its_ttl() -> None:
    async with asyncio.timeout(10), _redis() as (client, keys):
        members = Members(client, keys, ttl_s=0.3)
        beaten = time.monotonic()
        await members.beat("gone", "worker", {})
        assert [m["id"] for m in await members.alive()] == ["gone"]
        while await members.alive():
            await asyncio.sleep(0.05)  # waiting for a TTL: time must pass
        assert time.monotonic() - beaten >= 0.25
        assert await client.zcard(keys.members) == 0  # the reader trimmed the set


async def test_beat_forever_beats_until_cancelled_then_leaves() -> None:
    async with asyncio.timeout(10), _redis() as (client, keys):
        members = Members(client, keys)
        beaten = asyncio.Event()

        async def after() -> None:
            beaten.set()

        task = asyncio.ensure_future(
            beat_forever(members, "wk-2", "worker", lambda: {"runs_running": 1}, after_beat=after)
        )
        await beaten.wait()
        assert [m["runs_running"] for m in await members.alive()] == [1]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert await members.alive() == []


async def _cluster_report(client: httpx.AsyncClient, gateways: int) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            answer = await client.get("/v1/cluster")
            assert answer.status_code == 200, answer.text
            report: dict[str, Any] = answer.json()
            if report["totals"]["gateways"] == gateways:
                return report
            await asyncio.sleep(0.1)  # the other gateway's first beat


async def test_every_gateway_sees_the_others_and_their_figures() -> None:
    async with (
        asyncio.timeout(60),
        cluster(2) as gws,
        httpx.AsyncClient(base_url=gws[0].url) as client,
    ):
        report = await _cluster_report(client, 2)
        assert report["self"] in {p["id"] for p in report["processes"]}
        for process in report["processes"]:
            assert process["role"] == "gateway"
            assert process["load"] in ("normal", "congested", "overloaded")
            assert process["draining"] is False
            assert process["address"].startswith("127.0.0.1:")
            for name in ("connections", "streams", "runs_running", "started", "pid"):
                assert isinstance(process[name], int | float), name
        assert report["totals"]["workers"] == 0
        assert report["runs"] == {"queued": 0, "running": 0}  # the run queue, read from Redis
        addresses = {p["address"] for p in report["processes"]}
        assert addresses == {g.url.removeprefix("http://") for g in gws}
        async with asyncio.timeout(10):  # the gauges render the last beat's view
            while 'icefloe_cluster_processes{role="gateway"} 2.0' not in (
                metrics := (await client.get("/metrics")).text
            ):
                await asyncio.sleep(0.1)
        assert 'icefloe_cluster_processes{role="worker"} 0.0' in metrics
        assert "icefloe_draining 0.0" in metrics
        assert "icefloe_cluster_connections" in metrics


def _idle() -> Flow:
    async def idle(msg: Message, ctx: Context) -> None:
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return create(Node(idle, name="idle").to())


async def test_without_a_backplane_the_cluster_is_this_process_and_the_run_queue() -> None:
    async def run_stats() -> Mapping[str, int]:
        return {"queued": 7, "running": 2}

    settings = EdgeSettings(advertise="127.0.0.1:1")
    app = create_app(_idle(), settings, run_stats=run_stats)
    async with (
        asyncio.timeout(20),
        serve_asgi(app, **server_options(settings)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        report = (await client.get("/v1/cluster")).json()
        assert [p["address"] for p in report["processes"]] == ["127.0.0.1:1"]
        assert report["totals"]["gateways"] == 1
        assert report["runs"] == {"queued": 7, "running": 2}
        async with asyncio.timeout(10):
            while "icefloe_cluster_runs_queued 7.0" not in (await client.get("/metrics")).text:
                await asyncio.sleep(0.1)  # the first refresh of the run figures


async def test_the_cluster_needs_the_metrics_scope() -> None:
    keys = {
        "tenant-key-0123456789": {"tenant": "a", "scopes": ["streams:read"]},
        "scrape-key-0123456789": {"tenant": "ops", "scopes": ["metrics"]},
    }
    settings = EdgeSettings(authenticator=ApiKeyAuthenticator(keys))
    async with (
        asyncio.timeout(20),
        serve_asgi(create_app(_idle(), settings), **server_options(settings)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        assert (await client.get("/v1/cluster")).status_code == 401
        tenant = {"Authorization": "Bearer tenant-key-0123456789"}
        assert (await client.get("/v1/cluster", headers=tenant)).status_code == 403
        scraper = {"Authorization": "Bearer scrape-key-0123456789"}
        assert (await client.get("/v1/cluster", headers=scraper)).status_code == 200
