"""A stream started with ``headers.topic`` is relayed into the hub: watchers see every chunk."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

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
GLOBEX = "globex-key-0123456789"
KEYS_TWO_TENANTS = {
    **KEYS,
    GLOBEX: {"tenant": "globex", "scopes": ["topics:read", "topics:publish"]},
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


async def ws_watch(base: str, pattern: str, headers: dict[str, str] | None = None) -> Any:
    """A WebSocket subscribed to ``pattern`` (a ping's pong proves the sub_topic ran)."""
    ws = await connect(
        base.replace("http://", "ws://") + "/v1/ws",
        subprotocols=["icefloe.v1.json"],  # type: ignore[list-item]
        additional_headers=headers,
    )
    await ws.send(json.dumps({"op": "sub_topic", "pattern": pattern}))
    await ws.send(json.dumps({"op": "ping", "ref": "subscribed"}))
    pong = json.loads(await ws.recv())
    assert (pong["op"], pong.get("ref")) == ("pong", "subscribed"), pong
    return ws


async def ws_relayed(ws: ClientConnection) -> list[dict[str, Any]]:
    """The relayed chunks a WebSocket receives, until the done chunk."""
    got: list[dict[str, Any]] = []
    while not (got and got[-1]["done"]):
        op = json.loads(await ws.recv())
        assert op["op"] == "event", op
        got.append(op["data"])
    return got


async def sse_replay(
    client: httpx.AsyncClient, topic: str, count: int, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The first ``count`` relayed chunks of ``topic``, replayed from offset 0."""
    got: list[dict[str, Any]] = []
    params = {"from_offset": "0"}
    async with client.stream("GET", f"/v1/topics/{topic}", params=params, headers=headers) as r:
        assert r.status_code == 200, (await r.aread()).decode()
        async for chunk in relayed_chunks(r):
            got.append(chunk)
            if len(got) == count:
                break
    return got


async def test_with_auth_off_a_relay_reaches_topic_subscribers_over_sse_and_ws(
    serve: Serve,
) -> None:
    """The demo's case: auth-off callers and the relays they start share one tenant."""
    async with (
        serve(counting_flow()) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        asyncio.timeout(15),
    ):
        ws = await ws_watch(base, "runs.>")
        try:
            body = {"payload": 5, "headers": {"tenant": "demo", "topic": "runs.r1"}}
            started = await client.post("/v1/streams", json=body)
            assert started.status_code == 201
            sid = started.json()["stream_id"]
            live = await ws_relayed(ws)
        finally:
            await ws.close()
        replayed = await sse_replay(client, "runs.r1", 6)
    for got in (live, replayed):
        assert [c["seq"] for c in got] == list(range(6))
        assert {c["stream_id"] for c in got} == {sid}


async def test_with_auth_on_a_relay_stays_in_its_tenant(serve: Serve) -> None:
    settings = EdgeSettings(authenticator=ApiKeyAuthenticator(KEYS_TWO_TENANTS))
    acme = {"Authorization": f"Bearer {RELAYER}"}
    globex = {"Authorization": f"Bearer {GLOBEX}"}
    async with (
        serve(counting_flow(), settings) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        asyncio.timeout(30),
    ):
        own = await ws_watch(base, "runs.>", acme)
        foreign = await ws_watch(base, "runs.>", globex)
        try:
            body = {"payload": 5, "headers": {"tenant": "acme", "topic": "runs.r1"}}
            started = await client.post("/v1/streams", json=body, headers=acme)
            assert started.status_code == 201
            live = await ws_relayed(own)
            # Published after the whole relay: were any relayed event visible to
            # globex, it would arrive before this one.
            await foreign.send(json.dumps({"op": "publish", "topic": "runs.mark", "data": 1}))
            first = json.loads(await foreign.recv())
        finally:
            await own.close()
            await foreign.close()
        replayed = await sse_replay(client, "runs.r1", 6, acme)
        hidden = await client.get("/v1/topics/runs.r1", params={"from_offset": "0"}, headers=globex)
    assert [c["seq"] for c in live] == list(range(6))
    assert [c["seq"] for c in replayed] == list(range(6))
    assert (first["op"], first["topic"], first["data"]) == ("event", "runs.mark", 1)
    assert hidden.status_code == 410
