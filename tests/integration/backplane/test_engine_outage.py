"""Engine connection loss: ``/readyz`` is false meanwhile, then true again, and a
short outage loses no chunk (issue 12, items 4-5).

The gateways reach Redis through a TCP proxy the test cuts and restores.
"""

from __future__ import annotations

import asyncio
import json

import httpx
from cluster import CuttableRedis, cluster, sse_events


async def _ready_becomes(client: httpx.AsyncClient, status: int) -> None:
    while (await client.get("/readyz")).status_code != status:
        await asyncio.sleep(0.1)  # polling another process's health check


async def test_readyz_is_false_while_the_engine_is_unreachable() -> None:
    proxy = CuttableRedis()
    await proxy.up()
    url = proxy.url
    try:
        async with (
            asyncio.timeout(60),
            cluster(1, redis_url=url) as gws,
            httpx.AsyncClient(base_url=gws[0].url) as client,
        ):
            assert (await client.get("/readyz")).status_code == 200
            await proxy.down()
            await _ready_becomes(client, 503)
            body = (await client.get("/readyz")).json()
            assert body["error"]["code"] == "unavailable"
            await proxy.up()
            await _ready_becomes(client, 200)
            # Streams work again after the outage.
            answer = await client.post(
                "/v1/streams", json={"headers": {"tenant": "t"}, "payload": {"n": 3}}
            )
            assert answer.status_code == 201
    finally:
        await proxy.down()


async def test_a_remote_reader_loses_nothing_across_a_short_engine_outage() -> None:
    """The producing gateway's appends and the reading gateway's follow are
    retried with backoff: the reader sees a pause, every seq once, no error."""
    proxy = CuttableRedis()
    await proxy.up()
    n = 400
    try:
        async with (
            asyncio.timeout(90),
            cluster(2, redis_url=proxy.url) as gws,
            httpx.AsyncClient(base_url=gws[0].url) as producer,
            httpx.AsyncClient(base_url=gws[1].url, timeout=60) as reader,
        ):
            spec = {"n": n, "every": 5, "pause_ms": 20}
            started = await producer.post(
                "/v1/streams", json={"headers": {"tenant": "t"}, "payload": spec}
            )
            assert started.status_code == 201, started.text
            sid = started.json()["stream_id"]
            # The producer shares the run just after answering the start.
            while (await reader.get(f"/v1/streams/{sid}/status")).status_code == 404:
                await asyncio.sleep(0.02)  # polling another process's state
            seqs: list[int] = []
            ends: list[str] = []
            async with reader.stream("GET", f"/v1/streams/{sid}") as response:
                assert response.status_code == 200
                async for _id, event, data in sse_events(response):
                    body = json.loads(data)
                    if event == "error":
                        ends.append(body["code"])
                        break
                    seqs.append(body["seq"])
                    if len(seqs) == 50:
                        await proxy.down()  # both gateways lose Redis for a while
                        await _ready_becomes(producer, 503)
                        await proxy.up()
                    if body["done"]:
                        ends.append("done")
                        break
            assert ends == ["done"]
            assert seqs == list(range(n + 1))
    finally:
        await proxy.down()


async def test_a_topic_publish_is_refused_while_the_engine_is_unreachable() -> None:
    """The engine numbers topics: without it a publish answers 503 and reaches
    nobody; afterwards the numbering goes on under the same epoch."""
    proxy = CuttableRedis()
    await proxy.up()
    url = proxy.url
    path = "/v1/topics/room.outage"
    try:
        async with (
            asyncio.timeout(60),
            cluster(1, redis_url=url) as gws,
            httpx.AsyncClient(base_url=gws[0].url, timeout=20) as client,
        ):
            first = (await client.post(path, json={"data": 0})).json()
            await proxy.down()
            await _ready_becomes(client, 503)
            refused = await client.post(path, json={"data": "lost"})
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "unavailable"
            await proxy.up()
            await _ready_becomes(client, 200)
            after = (await client.post(path, json={"data": 1})).json()
            assert (after["epoch"], after["offset"]) == (first["epoch"], first["offset"] + 1)
            params = {"from_offset": "0", "epoch": first["epoch"]}
            async with client.stream("GET", path, params=params) as response:
                assert response.status_code == 200
                data = []
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        data.append(json.loads(line[5:])["data"])
                        if len(data) == 2:
                            break
            assert data == [0, 1]
    finally:
        await proxy.down()
