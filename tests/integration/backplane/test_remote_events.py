"""``GET /v1/events`` and idempotency keys across gateways (issue 12).

Real ``icefloe serve --backplane`` processes behind the round-robin proxy
of :mod:`cluster`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from cluster import cluster, round_robin, sse_events

TENANT = {"tenant": "t1"}


async def start(url: str, payload: dict[str, Any]) -> str:
    async with httpx.AsyncClient(base_url=url) as client:
        answer = await client.post("/v1/streams", json={"headers": TENANT, "payload": payload})
        assert answer.status_code == 201, answer.text
        sid: str = answer.json()["stream_id"]
        return sid


async def read_events(
    url: str, query: str, cursor: str | None, stop_after: int
) -> tuple[list[tuple[str, int]], str | None, bool]:
    """(stream id, seq) of the chunks read, the last cursor, and whether the
    response ended (every source ended)."""
    headers = {} if cursor is None else {"Last-Event-ID": cursor}
    got: list[tuple[str, int]] = []
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as client,
        client.stream("GET", f"/v1/events?{query}", headers=headers) as response,
    ):
        if response.status_code == 204:
            return got, cursor, True
        assert response.status_code == 200, await response.aread()
        async for event_id, event, data in sse_events(response):
            body = json.loads(data)
            assert event in ("chunk", "end"), (event, body)
            got.append((body["stream_id"], body["seq"]))
            cursor = event_id
            if len(got) >= stop_after:
                return got, cursor, False
    return got, cursor, True


async def test_events_follows_streams_of_every_gateway_and_resumes_through_the_proxy() -> None:
    async with asyncio.timeout(90), cluster(3) as gws, round_robin(gws) as proxy:
        n = 200
        sids = [await start(g.url, {"n": n, "every": 5, "pause_ms": 5}) for g in gws]
        query = "&".join(f"stream={sid}" for sid in sids)
        got: list[tuple[str, int]] = []
        cursor: str | None = None
        ended = False
        connections = 0
        while not ended:
            part, cursor, ended = await read_events(proxy, query, cursor, 60)
            got += part
            connections += 1
        for sid in sids:
            assert [seq for s, seq in got if s == sid] == list(range(n + 1))
        assert connections >= 3


async def test_one_idempotency_key_starts_one_run_across_three_gateways() -> None:
    async with asyncio.timeout(90), cluster(3) as gws, round_robin(gws) as proxy:
        body = {"headers": TENANT, "payload": {"n": 5}, "idempotency_key": "order-42"}
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=proxy, limits=limits, timeout=30) as client:
            answers = await asyncio.gather(
                *(client.post("/v1/streams", json=body) for _ in range(100))
            )
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200] * 99 + [201], statuses
        ids = {a.json()["stream_id"] for a in answers}
        assert len(ids) == 1
        (sid,) = ids
        # One run in the whole cluster: every gateway lists that stream alone.
        for g in gws:
            async with httpx.AsyncClient(base_url=g.url) as client:
                listed = (await client.get("/v1/streams")).json()["streams"]
            assert [s["stream_id"] for s in listed] == [sid]
        # Another tenant's same key is another run.
        other = {**body, "headers": {"tenant": "t2"}}
        async with httpx.AsyncClient(base_url=proxy) as client:
            answer = await client.post("/v1/streams", json=other)
        assert answer.status_code == 201
        assert answer.json()["stream_id"] != sid
