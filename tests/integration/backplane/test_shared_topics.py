"""Hub topics across gateways through the Redis backplane (issue 12, item 3)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from cluster import Gateway, cluster, joined, round_robin, sse_events
from websockets.asyncio.client import connect

#: events each gateway publishes
PER_GATEWAY = 30


async def _subscribe(
    url: str, ready: asyncio.Event, want: int, path: str = "/v1/topics/room.%3E", **query: Any
) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as client,
        client.stream("GET", path, params=query) as response,
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


async def test_every_gateway_numbers_a_topic_alike() -> None:
    """One offset sequence and one epoch per topic, whichever gateway publishes."""
    topic = "room.shared"
    async with asyncio.timeout(60), cluster(3) as gws:
        want = PER_GATEWAY * len(gws)
        ready = [asyncio.Event() for _ in gws]
        readers = [
            asyncio.ensure_future(_subscribe(g.url, r, want, f"/v1/topics/{topic}"))
            for g, r in zip(gws, ready, strict=True)
        ]
        await asyncio.gather(*(r.wait() for r in ready))

        async def publish(gateway: Gateway, index: int) -> list[tuple[str, int]]:
            async with httpx.AsyncClient(base_url=gateway.url) as client:
                answers = []
                for n in range(PER_GATEWAY):
                    answer = await client.post(
                        f"/v1/topics/{topic}", json={"data": {"from": index, "n": n}}
                    )
                    assert answer.status_code == 201, answer.text
                    answers.append((answer.json()["epoch"], answer.json()["offset"]))
                return answers

        answers = [
            a
            for one in await asyncio.gather(*(publish(g, i) for i, g in enumerate(gws)))
            for a in one
        ]
        epochs = {epoch for epoch, _ in answers}
        assert len(epochs) == 1
        assert sorted(offset for _, offset in answers) == list(range(want))
        views = [await reader for reader in readers]
        for events in views:
            assert [e["offset"] for e in events] == list(range(want))
            assert {e["epoch"] for e in events} == epochs
        # Offset N is the same event on every gateway.
        first = [(e["data"]["from"], e["data"]["n"]) for e in views[0]]
        for events in views[1:]:
            assert [(e["data"]["from"], e["data"]["n"]) for e in events] == first


async def test_a_client_resumes_a_topic_on_another_gateway() -> None:
    """Resume by (offset, epoch) through a round-robin proxy: each event once."""
    topic = "room.resume"
    async with asyncio.timeout(60), cluster(3) as gws, round_robin(gws) as proxy:
        answers = []
        for n in range(20):
            # A new connection each time: the proxy spreads the publishes.
            async with httpx.AsyncClient(base_url=proxy) as client:
                answer = await client.post(f"/v1/topics/{topic}", json={"data": {"n": n}})
                assert answer.status_code == 201, answer.text
                answers.append((answer.json()["epoch"], answer.json()["offset"]))
        epoch = answers[0][0]
        assert answers == [(epoch, n) for n in range(20)]
        path = f"/v1/topics/{topic}"
        seen: list[dict[str, Any]] = []
        for _ in range(4):  # every reconnect lands on the next gateway
            start = len(seen)
            more = await _subscribe(proxy, asyncio.Event(), 5, path, from_offset=start, epoch=epoch)
            seen += more
        assert [(e["offset"], e["data"]["n"], e["epoch"]) for e in seen] == [
            (n, n, epoch) for n in range(20)
        ]
        # A resume under an epoch the engine never gave is history_gone on any gateway.
        for gateway in gws:
            async with httpx.AsyncClient(base_url=gateway.url) as client:
                gone = await client.get(path, params={"from_offset": 3, "epoch": "0123456789ab"})
                assert gone.status_code == 410, gone.text


async def test_a_gateway_started_later_resumes_a_topic_from_the_engine() -> None:
    """A new gateway reads what the engine holds before it serves: a client
    resumes there with the (offset, epoch) another gateway gave it."""
    topic = "room.late"
    async with asyncio.timeout(60), cluster(1) as gws:
        async with httpx.AsyncClient(base_url=gws[0].url) as client:
            answers = []
            for n in range(10):
                answer = await client.post(f"/v1/topics/{topic}", json={"data": {"n": n}})
                answers.append((answer.json()["epoch"], answer.json()["offset"]))
        epoch = answers[0][0]
        assert answers == [(epoch, n) for n in range(10)]
        async with joined(gws[0]) as late:
            path = f"/v1/topics/{topic}"
            got = await _subscribe(late.url, asyncio.Event(), 7, path, from_offset=3, epoch=epoch)
            assert [(e["offset"], e["data"]["n"], e["epoch"]) for e in got] == [
                (n, n, epoch) for n in range(3, 10)
            ]
            # and it numbers on with the others
            async with httpx.AsyncClient(base_url=late.url) as client:
                answer = await client.post(path, json={"data": {"n": 10}})
                assert (answer.json()["epoch"], answer.json()["offset"]) == (epoch, 10)
