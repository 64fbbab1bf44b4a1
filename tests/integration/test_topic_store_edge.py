"""With a topic store, every edge publish is kept (issue 11): HTTP posts, the
WebSocket ``publish`` op and relayed runs (``headers.topic``) all survive a
restart of the app on the same SQLite file, numbered on under one epoch."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from icefloe import Context, Message, Node, create
from icefloe.core.sse import SseParser
from icefloe.transport.app import EdgeSettings

Serve = Any


def counting_flow() -> Any:
    async def count(msg: Message, ctx: Context) -> None:
        for i in range(int(msg.payload)):
            await ctx.emit_chunk(parent=msg, text=f"t{i}")
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return create(Node(count, name="count").to())


async def read(client: httpx.AsyncClient, topic: str, want: int, **query: Any) -> list[Any]:
    got: list[Any] = []
    query.setdefault("buffer", "1024")
    async with client.stream("GET", f"/v1/topics/{topic}", params=query) as r:
        assert r.status_code == 200, await r.aread()
        parser = SseParser()
        async for data in r.aiter_bytes():
            parser.feed_data(data)
            for ev in parser.events_received():
                got.append(json.loads(ev.data))
                if len(got) == want:
                    return got
    return got


async def test_http_websocket_and_relayed_events_survive_a_restart(
    serve: Serve, tmp_path: Path
) -> None:
    settings = EdgeSettings(topic_store=f"sqlite:///{tmp_path / 'edge.db'}")
    topic = f"mix.{uuid.uuid4().hex[:10]}"
    async with asyncio.timeout(60):
        async with (
            serve(counting_flow(), settings) as base,
            httpx.AsyncClient(base_url=base, timeout=10) as client,
        ):
            first = await client.post(f"/v1/topics/{topic}", json={"data": "http"})
            epoch = first.json()["epoch"]
            assert first.json()["offset"] == 0
            watcher = asyncio.ensure_future(read(client, topic, 2 + 6, from_offset=0, epoch=epoch))
            url = base.replace("http://", "ws://") + "/v1/ws"
            async with connect(url, subprotocols=[Subprotocol("icefloe.v1.json")]) as ws:
                await ws.send(json.dumps({"op": "publish", "topic": topic, "data": "ws"}))
            # The WebSocket event is in (offset 1) before the relay starts.
            assert len(await read(client, topic, 2, from_offset=0, epoch=epoch)) == 2
            started = await client.post(
                "/v1/streams", json={"payload": 5, "headers": {"tenant": "acme", "topic": topic}}
            )
            assert started.status_code == 201, started.text
            live = await watcher
        async with (
            serve(counting_flow(), settings) as base,
            httpx.AsyncClient(base_url=base, timeout=10) as client,
        ):
            again = await read(client, topic, 8, from_offset=0, epoch=epoch)
            assert [(e["offset"], e["epoch"], e["data"]) for e in again] == [
                (e["offset"], e["epoch"], e["data"]) for e in live
            ]
            assert [e["offset"] for e in again] == list(range(8))
            assert again[0]["data"] == "http"
            assert again[1]["data"] == "ws"
            assert [e["data"]["text"] for e in again[2:]] == ["t0", "t1", "t2", "t3", "t4", ""]
            nxt = await client.post(f"/v1/topics/{topic}", json={"data": "after"})
            assert (nxt.json()["epoch"], nxt.json()["offset"]) == (epoch, 8)
