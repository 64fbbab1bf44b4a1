"""``/v1/routes`` and the routes' ``/metrics`` series, on a real server (issue 13, gateways)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from bridgekit import REDIS_URL

from icefloe import Node, create
from icefloe.connectors.deadletter import DEAD_REASON_HEADER
from icefloe.connectors.redis_streams import entry_record
from icefloe.gateway import Gateway, parse_config
from icefloe.transport.app import EdgeSettings, create_app, server_options
from icefloe.transport.auth import ApiKeyAuthenticator
from servekit import serve_asgi

ADMIN = {"Authorization": "Bearer k-admin-0123456789"}
USER = {"Authorization": "Bearer k-user-01234567890"}
KEYS = {
    "k-admin-0123456789": {"tenant": "acme", "scopes": ["admin"]},
    "k-user-01234567890": {"tenant": "acme", "scopes": ["topics:publish", "topics:read"]},
}


async def _idle(msg: Any, ctx: Any) -> None:
    return None


def config(dead_key: str) -> dict[str, Any]:
    hub_in = {"kind": "hub", "topic": "in.>", "tenant": "acme"}
    return {
        "restart_backoff_s": 0.05,
        "restart_backoff_cap_s": 0.2,
        "routes": {
            "echo": {"source": hub_in, "sink": {"kind": "hub", "topic": "out", "tenant": "acme"}},
            "broken": {
                # nothing listens on port 1: every start fails
                "source": {"kind": "redis-streams", "url": "redis://127.0.0.1:1/0", "key": "k"},
                "sink": {"kind": "streams"},
            },
            "strict": {
                "source": {"kind": "hub", "topic": "poison.>", "tenant": "acme"},
                "translate": {"text": "data.msg"},
                "sink": {"kind": "hub", "topic": "out", "tenant": "acme"},
                "dead_letter": {"kind": "redis-streams", "url": REDIS_URL, "key": dead_key},
            },
            "manual": {"source": hub_in, "sink": {"kind": "streams"}, "autostart": False},
            "unread": {
                "source": {"kind": "hub", "topic": "unread.>", "tenant": "acme"},
                # no history kept: 64 unread chunks fill the stream (with the
                # default history the stall comes after 1,024)
                "sink": {"kind": "streams", "stall_timeout_s": 0.2, "history": 0},
            },
        },
    }


@pytest.fixture
async def redis() -> AsyncIterator[Any]:
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    yield client
    await client.aclose()


@pytest.fixture
async def base(redis: Any) -> AsyncIterator[tuple[str, str]]:
    dead_key = f"bridge-dead-{uuid.uuid4().hex[:8]}"
    settings = EdgeSettings(authenticator=ApiKeyAuthenticator(KEYS))
    gateway = Gateway(parse_config(config(dead_key)))
    app = create_app(create(Node(_idle, name="idle").to()), settings, gateway=gateway)
    async with serve_asgi(app, **server_options(settings)) as url:
        yield url, dead_key
    await redis.delete(dead_key)


async def routes(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.get("/v1/routes", headers=ADMIN)
    assert response.status_code == 200, response.text
    return {r["name"]: r for r in response.json()["routes"]}


async def until(client: httpx.AsyncClient, name: str, check: Any) -> dict[str, Any]:
    while not check(route := (await routes(client))[name]):
        await asyncio.sleep(0.02)  # polling the route's status
    return route


async def test_routes_need_the_admin_scope(base: tuple[str, str]) -> None:
    async with httpx.AsyncClient(base_url=base[0]) as client, asyncio.timeout(20):
        for method, path in [
            ("GET", "/v1/routes"),
            ("POST", "/v1/routes/echo/stop"),
            ("POST", "/v1/routes/echo/start"),
        ]:
            assert (await client.request(method, path)).status_code == 401
            refused = await client.request(method, path, headers=USER)
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "forbidden"
        assert (await client.get("/metrics", headers=USER)).status_code == 403
        missing = await client.post("/v1/routes/nope/stop", headers=ADMIN)
        assert missing.status_code == 404
        assert "nope" in missing.json()["error"]["message"]
        assert (await until(client, "echo", lambda r: r["state"] != "starting"))["state"] == (
            "running"
        )


async def test_stop_and_start_a_route(base: tuple[str, str]) -> None:
    async with httpx.AsyncClient(base_url=base[0]) as client, asyncio.timeout(20):
        listed = await routes(client)
        assert sorted(listed) == ["broken", "echo", "manual", "strict", "unread"]
        assert (listed["manual"]["state"], listed["manual"]["reason"]) == ("stopped", "not started")
        stopped = (await client.post("/v1/routes/echo/stop", headers=ADMIN)).json()
        assert stopped["state"] == "stopped"
        assert (
            await client.post("/v1/topics/in.a", json={"data": "lost"}, headers=USER)
        ).is_success
        assert (await routes(client))["echo"]["records_in"] == 0
        started = (await client.post("/v1/routes/echo/start", headers=ADMIN)).json()
        # starting until its source and sink are open, then running
        assert started["state"] == "starting"
        await until(client, "echo", lambda r: r["state"] == "running")
        # the restarted route subscribes on its first turn: publish until one arrives
        while (await routes(client))["echo"]["records_out"] == 0:
            await client.post("/v1/topics/in.a", json={"data": "x"}, headers=USER)
        echo = (await routes(client))["echo"]
        assert echo["failures"] == 0
        assert echo["last_error"] == ""


async def test_a_failing_route_reports_failed_and_restarts_with_backoff(
    base: tuple[str, str],
) -> None:
    async with httpx.AsyncClient(base_url=base[0]) as client, asyncio.timeout(20):
        broken = await until(client, "broken", lambda r: r["failures"] >= 3)
        # between two attempts, or opening its ends in one: never running
        assert broken["state"] in ("failed", "starting")
        assert "ConnectionError" in broken["last_error"] or "Connect" in broken["last_error"]
        failed = await until(client, "broken", lambda r: r["state"] == "failed")
        assert failed["reason"] == failed["last_error"] != ""
        metrics = (await client.get("/metrics", headers=ADMIN)).text
        line = next(
            x
            for x in metrics.splitlines()
            if x.startswith('icefloe_route_failures_total{route="broken"}')
        )
        assert float(line.split()[-1]) >= 3
        assert 'icefloe_route_running{route="echo"} 1.0' in metrics
        assert 'icefloe_route_running{route="manual"} 0.0' in metrics


async def test_poison_records_go_to_the_dead_letter_sink(base: tuple[str, str], redis: Any) -> None:
    url, dead_key = base
    async with httpx.AsyncClient(base_url=url) as client, asyncio.timeout(20):
        while (await routes(client))["strict"]["records_in"] == 0:
            # the route subscribes on its first turn: publish until it takes one
            await client.post("/v1/topics/poison.a", json={"data": {"msg": "ok"}}, headers=USER)
        await client.post("/v1/topics/poison.a", json={"data": {"other": 1}}, headers=USER)
        strict = await until(client, "strict", lambda r: r["dead_letters"] == 1)
        assert strict["records_out"] == strict["records_in"] - 1
        assert strict["state"] == "running"
        metrics = (await client.get("/metrics", headers=ADMIN)).text
        assert 'icefloe_route_dead_letters_total{route="strict"} 1.0' in metrics
        assert 'icefloe_route_lag{route="strict"}' in metrics
    entries = await redis.xrange(dead_key)
    assert len(entries) == 1
    record = entry_record(entries[0][1])
    assert record is not None
    assert record.header(DEAD_REASON_HEADER) == b"the record has no 'data.msg'"


async def test_a_stream_nobody_reads_does_not_hold_up_the_route(base: tuple[str, str]) -> None:
    async with httpx.AsyncClient(base_url=base[0]) as client, asyncio.timeout(20):
        while (await routes(client))["unread"]["records_in"] == 0:
            # the route subscribes on its first turn: publish until it takes one
            await client.post("/v1/topics/unread.a", json={"data": "x"}, headers=USER)
        # more than the stream's buffer (64 chunks), and nobody reads unread.a
        for i in range(80):
            await client.post("/v1/topics/unread.a", json={"data": f"a{i}"}, headers=USER)
        await client.post("/v1/topics/unread.b", json={"data": "b0"}, headers=USER)
        taken = await until(client, "unread", lambda r: r["records_out"] >= r["records_in"] > 80)
        status = (await client.get("/v1/streams/unread.a/status", headers=ADMIN)).json()
        assert (status["state"], status["code"]) == ("failed", "interrupted")
        assert (await client.get("/v1/streams/unread.b/status", headers=ADMIN)).status_code == 200
        assert taken["state"] == "running"
