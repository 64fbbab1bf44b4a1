"""Hub topics across gateways through the Redis backplane (issue 12, item 3)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from cluster import Gateway, cluster, sse_events
from websockets.asyncio.client import connect

#: events each gateway publishes
PER_GATEWAY = 30


async def _subscribe(url: str, ready: asyncio.Event, want: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as client,
        client.stream("GET", "/v1/topics/room.%3E") as response,
    ):
        assert response.status_code == 200
        ready.set()
        async for _id, event, data in sse_events(response):
            assert event == "event", data
            got.append(json.loads(data))
            if len(got) >= want:
                break
    return got


async def _publish(gateway: Gateway, index: int) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        for n in range(PER_GATEWAY):
            answer = await client.post(
                f"/v1/topics/room.g{index}", json={"data": {"from": index, "n": n}}
            )
            assert answer.status_code == 201, answer.text


async def test_an_event_published_on_one_gateway_reaches_every_gateway_once() -> None:
    async with asyncio.timeout(60), cluster(3) as gws:
        want = PER_GATEWAY * len(gws)
        ready = [asyncio.Event() for _ in gws]
        readers = [
            asyncio.ensure_future(_subscribe(g.url, r, want))
            for g, r in zip(gws, ready, strict=True)
        ]
        await asyncio.gather(*(r.wait() for r in ready))
        await asyncio.gather(*(_publish(g, i) for i, g in enumerate(gws)))
        for reader in readers:
            events = await reader
            seen = [(e["data"]["from"], e["data"]["n"]) for e in events]
            assert sorted(seen) == sorted((i, n) for i in range(3) for n in range(PER_GATEWAY))
            for origin in range(3):  # each publisher's events keep their order
                ns = [n for i, n in seen if i == origin]
                assert ns == list(range(PER_GATEWAY))


async def test_a_websocket_publish_reaches_another_gateways_subscriber() -> None:
    async with asyncio.timeout(60), cluster(2) as gws:
        ready = asyncio.Event()
        reader = asyncio.ensure_future(_subscribe(gws[1].url, ready, 3))
        await ready.wait()
        url = gws[0].url.replace("http://", "ws://") + "/v1/ws"
        proto: Any = ["icefloe.v1.json"]
        async with connect(url, subprotocols=proto) as ws:
            for n in range(3):
                await ws.send(json.dumps({"op": "publish", "topic": "room.ws", "data": {"n": n}}))
        events = await reader
        assert [e["data"]["n"] for e in events] == [0, 1, 2]
