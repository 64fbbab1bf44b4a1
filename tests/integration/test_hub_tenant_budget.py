"""Issue 15, finding 1, over a real server: one tenant fills the hub's byte
budget with WebSocket publishes; another still publishes, reads
``GET /v1/topics/b.>`` and subscribes over WebSocket; once the first has left
and ``topic_idle_s`` has passed, its bytes are freed (``icefloe_hub_bytes_held``
drops). Also finding 8: per-topic offsets, and an epoch that tells a
re-created topic from the one a client read.

Scaled down from the report (4 x 250 KiB to each of 300 topics against
256 MiB): 2 x 8 KiB to each of 20 topics against 256 KiB. The hub's clock
is injected, so "topic_idle_s passes" takes no time.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from icefloe import Context, Message, Node, create
from icefloe.core.sse import SseParser
from icefloe.hub import Hub, HubLimits
from icefloe.transport.app import EdgeSettings, create_app, server_options
from icefloe.transport.auth import ApiKeyAuthenticator
from servekit import serve_asgi

KIB = 1024
SCOPES = ["topics:publish", "topics:read"]
KEYS = {
    "k-tenant-a-0123456789": {"tenant": "a", "scopes": SCOPES},
    "k-tenant-b-0123456789": {"tenant": "b", "scopes": SCOPES},
    "k-admin-000123456789": {"tenant": "ops", "scopes": ["admin"]},
}
A = {"authorization": "Bearer k-tenant-a-0123456789"}
B = {"authorization": "Bearer k-tenant-b-0123456789"}
ADMIN = {"authorization": "Bearer k-admin-000123456789"}
#: only limits the hub had before issue 15, so that this fails on the old hub
LIMITS = HubLimits(
    max_bytes_total=256 * KIB,
    max_event_bytes=8 * KIB,
    history_bytes_per_topic=16 * KIB,
    topic_idle_s=60,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def idle_flow() -> Any:
    async def idle(msg: Message, ctx: Context) -> None:
        pass

    return create(Node(idle, name="idle").to())


@asynccontextmanager
async def server(clock: Clock, limits: HubLimits = LIMITS) -> AsyncIterator[str]:
    async with Hub(limits, clock=clock) as hub:
        settings = EdgeSettings(authenticator=ApiKeyAuthenticator(KEYS))
        app = create_app(idle_flow(), settings, hub=hub)
        async with serve_asgi(app, **server_options(settings)) as base:
            yield base


@asynccontextmanager
async def ws(base: str, headers: dict[str, str]) -> AsyncIterator[ClientConnection]:
    url = base.replace("http://", "ws://") + "/v1/ws"
    async with connect(url, subprotocols=["icefloe.v1.json"], additional_headers=headers) as c:  # type: ignore[list-item]
        yield c


async def send(c: ClientConnection, op: str, **fields: Any) -> None:
    await c.send(json.dumps({"op": op, **fields}))


async def until_op(c: ClientConnection, op: str) -> dict[str, Any]:
    while True:
        message = json.loads(await c.recv())
        if message["op"] == op:
            return message  # type: ignore[no-any-return]
        assert message["op"] != "error", message


async def fill(base: str, topics: int) -> int:
    """Tenant a publishes 2 x 8 KiB to each of ``topics`` topics over one
    WebSocket; returns how many publishes were refused (``overloaded``)."""
    async with ws(base, A) as c:
        body = "x" * (8 * KIB - 64)
        for i in range(topics):
            for _ in range(2):
                await send(c, "publish", topic=f"fill.t{i}", data=body)
        # Ops run in order: the pong comes after every publish was handled.
        await send(c, "ping", ref="done")
        refused = 0
        while (message := json.loads(await c.recv()))["op"] != "pong":
            assert (message["op"], message["code"]) == ("error", "overloaded"), message
            refused += 1
        return refused


async def bytes_held(client: httpx.AsyncClient) -> int:
    text = (await client.get("/metrics", headers=ADMIN)).text
    match = re.search(r"^icefloe_hub_bytes_held (\S+)$", text, re.MULTILINE)
    assert match is not None
    return int(float(match.group(1)))


async def first_sse_event(response: httpx.Response) -> dict[str, Any]:
    parser = SseParser()
    async for part in response.aiter_bytes():
        parser.feed_data(part)
        for event in parser.events_received():
            if event.event == "event":
                return json.loads(event.data)  # type: ignore[no-any-return]
    raise AssertionError("the stream ended")


async def test_a_tenant_that_fills_the_hub_leaves_room_for_others_and_is_freed_when_idle() -> None:
    clock = Clock()
    async with (
        server(clock) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        asyncio.timeout(60),
    ):
        assert await fill(base, 20) > 0  # a reached its share of the full hub
        held = await bytes_held(client)
        assert held >= LIMITS.max_bytes_total  # type: ignore[operator]
        # b is served: a publish to a new topic, a GET of its topics, a sub_topic.
        posted = await client.post("/v1/topics/b.new", json={"data": 1}, headers=B)
        assert posted.status_code == 201, posted.text
        async with (
            client.stream("GET", "/v1/topics/b.>", headers=B) as r,
            ws(base, B) as c,
        ):
            assert r.status_code == 200
            await send(c, "sub_topic", pattern="b.>", sub_id="s")
            await send(c, "ping", ref="subscribed")
            await until_op(c, "pong")
            assert (await client.post("/v1/topics/b.x", json={"data": 2}, headers=B)).is_success
            assert (await first_sse_event(r))["data"] == 2
            assert (await until_op(c, "event"))["data"] == 2
        # a, holding past its share of a full hub, is refused, and told only its own.
        refused = await client.post("/v1/topics/fill.more", json={"data": 1}, headers=A)
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert error["code"] == "overloaded"
        assert "tenant 'a'" in error["message"]
        assert str(LIMITS.max_bytes_total) not in error["message"]
        # a has left; once topic_idle_s passes its topics go, without it doing anything.
        clock.now = 61
        after = await bytes_held(client)
        assert after < 8 * KIB < held
        assert (await client.post("/v1/topics/fill.more", json={"data": 1}, headers=A)).is_success


async def test_a_tenant_budget_refuses_that_tenant_only() -> None:
    limits = HubLimits(
        max_bytes_per_tenant=64 * KIB,
        max_event_bytes=8 * KIB,
        history_bytes_per_topic=16 * KIB,
    )
    async with (
        server(Clock(), limits) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        asyncio.timeout(60),
    ):
        # 4 x 16 KiB spend a's budget of 64 KiB: the fifth topic is refused.
        assert await fill(base, 5) == 2
        refused = await client.post("/v1/topics/fill.more", json={"data": 1}, headers=A)
        assert refused.status_code == 503
        assert "at its limit of 65536" in refused.json()["error"]["message"]
        async with client.stream("GET", "/v1/topics/fill.>", headers=A) as r:
            assert r.status_code == 503
            assert r.headers["retry-after"] == "1"
        assert (await client.post("/v1/topics/b.new", json={"data": 1}, headers=B)).is_success


async def test_offsets_are_per_topic_and_an_epoch_detects_a_recreated_topic() -> None:
    clock = Clock()
    async with (
        server(clock) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        asyncio.timeout(60),
    ):
        for i in range(5):
            await client.post("/v1/topics/other", json={"data": i}, headers=A)
            await client.post("/v1/topics/mine.a", json={"data": i}, headers=B)
        first = (await client.post("/v1/topics/mine.b", json={"data": "x"}, headers=B)).json()
        assert first["offset"] == 0  # not the hub's count of 10 publishes
        epoch = first["epoch"]
        # Resuming with the right epoch replays; the SSE data carries it.
        params = {"from_offset": "0", "epoch": epoch}
        async with client.stream("GET", "/v1/topics/mine.b", params=params, headers=B) as r:
            event = await first_sse_event(r)
        assert (event["offset"], event["epoch"], event["data"]) == (0, epoch, "x")
        # mine.b goes idle, is evicted, and is created again under a new epoch.
        clock.now = 61
        await bytes_held(client)  # any use of the hub sweeps idle topics
        again = (await client.post("/v1/topics/mine.b", json={"data": "y"}, headers=B)).json()
        assert (again["offset"], again["epoch"] != epoch) == (0, True)
        gone = await client.get("/v1/topics/mine.b", params=params, headers=B)
        assert gone.status_code == 410
        assert gone.json()["error"]["code"] == "history_gone"
        async with ws(base, B) as c:
            await send(c, "sub_topic", pattern="mine.b", from_offset=0, epoch=epoch, ref="old")
            error = await until_op_or_error(c)
            assert (error["op"], error["code"], error["ref"]) == ("error", "history_gone", "old")
            await send(c, "sub_topic", pattern="mine.b", from_offset=0, epoch=again["epoch"])
            replayed = await until_op(c, "event")
            assert (replayed["offset"], replayed["epoch"], replayed["data"]) == (
                0,
                again["epoch"],
                "y",
            )


async def until_op_or_error(c: ClientConnection) -> dict[str, Any]:
    return json.loads(await c.recv())  # type: ignore[no-any-return]
