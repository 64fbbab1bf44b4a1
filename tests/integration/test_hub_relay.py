"""A stream started with ``headers.topic`` is relayed into the hub: watchers see every chunk."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from icefloe import Context, Headers, Message, Node, create
from icefloe.core.sse import SseParser
from icefloe.hub import Hub, HubLimits, relay_stream
from icefloe.transport.app import EdgeSettings
from icefloe.transport.auth import ApiKeyAuthenticator

Serve = Any
CHUNKS = 300
RELAYER = "relay-key-0123456789"
NO_PUBLISH = "nopub-key-0123456789"
KEYS = {
    RELAYER: {
        "tenant": "acme",
        "scopes": ["streams:start", "streams:read", "topics:read", "topics:publish"],
    },
    NO_PUBLISH: {"tenant": "acme", "scopes": ["streams:start", "streams:read", "topics:read"]},
}


def counting_flow() -> Any:
    async def count(msg: Message, ctx: Context) -> None:
        for i in range(int(msg.payload)):
            # Newlines and "data:" inside a token must survive the relay.
            await ctx.emit_chunk(parent=msg, text=f"t{i}\ndata: {i}")
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return create(Node(count, name="count").to())


async def relayed_chunks(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    parser = SseParser()
    async for part in response.aiter_bytes():
        parser.feed_data(part)
        for event in parser.events_received():
            if event.event == "event":
                yield json.loads(event.data)["data"]


async def watch(client: httpx.AsyncClient, ready: asyncio.Event) -> list[dict[str, Any]]:
    """Every chunk relayed to ``runs.*`` until the done chunk."""
    got: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {RELAYER}"}
    # Room for the whole run: with at_most_once events a full buffer drops the oldest.
    params = {"buffer": str(CHUNKS + 1)}
    async with client.stream("GET", "/v1/topics/runs.*", headers=headers, params=params) as r:
        assert r.status_code == 200
        ready.set()  # the hub subscribed before it answered
        async for chunk in relayed_chunks(r):
            got.append(chunk)
            if chunk["done"]:
                return got
    raise AssertionError("the topic ended before the done chunk")


async def test_two_watchers_of_the_topic_get_every_chunk_once_in_order(serve: Serve) -> None:
    settings = EdgeSettings(authenticator=ApiKeyAuthenticator(KEYS))
    async with (
        serve(counting_flow(), settings) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        asyncio.timeout(30),
    ):
        ready = [asyncio.Event(), asyncio.Event()]
        watchers = [asyncio.ensure_future(watch(client, r)) for r in ready]
        await asyncio.gather(*(r.wait() for r in ready))
        started = await client.post(
            "/v1/streams",
            json={"payload": CHUNKS, "headers": {"tenant": "acme", "topic": "runs.r1"}},
            headers={"Authorization": f"Bearer {RELAYER}"},
        )
        assert started.status_code == 201
        sid = started.json()["stream_id"]
        for got in await asyncio.gather(*watchers):
            assert [c["seq"] for c in got] == list(range(CHUNKS + 1))
            assert {c["stream_id"] for c in got} == {sid}
            assert [c["text"] for c in got[:-1]] == [f"t{i}\ndata: {i}" for i in range(CHUNKS)]


async def test_a_relay_topic_needs_a_valid_name_and_the_publish_scope(serve: Serve) -> None:
    settings = EdgeSettings(authenticator=ApiKeyAuthenticator(KEYS))
    async with (
        serve(counting_flow(), settings) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
    ):

        async def start(key: str, topic: str) -> httpx.Response:
            body = {"payload": 3, "headers": {"tenant": "acme", "topic": topic}}
            return await client.post(
                "/v1/streams", json=body, headers={"Authorization": f"Bearer {key}"}
            )

        refused = await start(NO_PUBLISH, "runs.r2")
        assert refused.status_code == 403
        assert "topics:publish" in refused.json()["error"]["message"]
        bad = await start(RELAYER, "runs.*")
        assert bad.status_code == 400
        assert bad.json()["error"]["message"].startswith("headers.topic")
        # Nothing was started by the refused requests.
        listed = await client.get("/v1/streams", headers={"Authorization": f"Bearer {RELAYER}"})
        assert listed.json()["streams"] == []


async def test_relay_stream_reports_an_abnormal_end_as_a_last_event() -> None:
    async def fail(msg: Message, ctx: Context) -> None:
        await ctx.emit_chunk(parent=msg, text="a")
        raise RuntimeError("boom")

    flow = create(Node(fail, name="fail").to())
    hub = Hub()
    async with asyncio.timeout(10):
        flow.run()
        try:
            watcher = hub.subscribe("runs.>", tenant="acme")
            sid = await flow.start(
                Message(payload=None, headers=Headers(tenant="acme")), history=16
            )
            relayed = await relay_stream(flow, hub, sid, "runs.x", tenant="acme")
            first = await anext(watcher)
            last = await anext(watcher)
        finally:
            await hub.aclose()
            await flow.stop()
    assert relayed == (1, 0)
    assert first.data.text == "a"
    assert last.data["stream_id"] == sid
    assert last.data["error"]["code"] == "failed"


async def test_an_event_the_hub_refuses_is_skipped_and_the_relay_goes_on() -> None:
    async def sizes(msg: Message, ctx: Context) -> None:
        for text in ("small", "x" * 4096, "small again"):
            await ctx.emit_chunk(parent=msg, text=text)
        await ctx.emit_chunk(parent=msg, text="", done=True)

    flow = create(Node(sizes, name="sizes").to())
    hub = Hub(HubLimits(max_event_bytes=1024))
    async with asyncio.timeout(10):
        flow.run()
        try:
            watcher = hub.subscribe("runs.>", tenant="acme")
            message = Message(payload=None, headers=Headers(tenant="acme"))
            sid = await flow.start(message, history=16)
            result = await relay_stream(flow, hub, sid, "runs.y", tenant="acme")
            got = [(await anext(watcher)).data for _ in range(3)]
        finally:
            await hub.aclose()
            await flow.stop()
    assert result == (3, 1)
    assert [c.text for c in got] == ["small", "small again", ""]
    assert [c.seq for c in got] == [0, 2, 3]


def paced_flow() -> Any:
    async def paced(msg: Message, ctx: Context) -> None:
        for i in range(int(msg.payload)):
            await ctx.emit_chunk(parent=msg, text=str(i))
            await asyncio.sleep(0.005)  # the run's own pace (about 1 s), not a sync
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return create(Node(paced, name="paced").to())


async def test_a_relayed_run_nobody_watches_is_cancelled_as_unread(serve: Serve) -> None:
    settings = EdgeSettings(authenticator=ApiKeyAuthenticator(KEYS), unread_timeout_s=0.2)
    auth = {"Authorization": f"Bearer {RELAYER}"}
    async with (
        serve(paced_flow(), settings) as base,
        httpx.AsyncClient(base_url=base, timeout=10, headers=auth) as client,
        asyncio.timeout(20),
    ):
        ready = asyncio.Event()
        watched = asyncio.ensure_future(watch(client, ready))
        await ready.wait()

        async def start(topic: str) -> str:
            body = {"payload": 200, "headers": {"tenant": "acme", "topic": topic}}
            r = await client.post("/v1/streams", json=body)
            assert r.status_code == 201
            return str(r.json()["stream_id"])

        unwatched = await start("elsewhere.r1")  # no subscriber matches it
        kept = await start("runs.r9")  # the watcher's runs.* matches it
        got = await watched  # the whole run: it outlived the unread timeout
        status = (await client.get(f"/v1/streams/{unwatched}/status")).json()
    assert [c["seq"] for c in got] == list(range(201))
    assert {c["stream_id"] for c in got} == {kept}
    assert status["state"] == "cancelled"
