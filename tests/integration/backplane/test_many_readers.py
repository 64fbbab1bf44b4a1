"""Many SSE readers spread over three gateways read one stream (issue 12, scaled).

The issue asks for 1,000 readers; on the 2-core test machine shared with
other work this runs 300 (100 per gateway, through the round-robin proxy),
each reading every chunk in order. Each remote gateway follows the stream
with one XREAD loop whatever its number of readers.
"""

from __future__ import annotations

import asyncio
import json
import os

import httpx
import pytest
from cluster import cluster, round_robin, sse_events

pytestmark = pytest.mark.slow

READERS = int(os.environ.get("ICEFLOE_TEST_BACKPLANE_READERS", "300"))
CHUNKS = 200


async def _read(client: httpx.AsyncClient, sid: str) -> list[int]:
    seqs: list[int] = []
    async with client.stream("GET", f"/v1/streams/{sid}") as response:
        assert response.status_code == 200, (response.status_code, await response.aread())
        async for _id, _event, data in sse_events(response):
            body = json.loads(data)
            seqs.append(body["seq"])
            if body.get("done"):
                break
    return seqs


async def test_hundreds_of_readers_over_three_gateways_get_every_chunk_in_order() -> None:
    async with asyncio.timeout(180), cluster(3) as gws, round_robin(gws) as proxy:
        async with httpx.AsyncClient(base_url=gws[0].url) as client:
            answer = await client.post(
                "/v1/streams",
                json={
                    "headers": {"tenant": "t"},
                    "payload": {"n": CHUNKS, "delay_ms": 3000, "every": 10, "pause_ms": 20},
                },
            )
        sid = answer.json()["stream_id"]
        limits = httpx.Limits(max_connections=READERS + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=proxy, timeout=120, limits=limits) as client:
            results = await asyncio.gather(*(_read(client, sid) for _ in range(READERS)))
        for seqs in results:
            assert seqs == list(range(CHUNKS + 1))
