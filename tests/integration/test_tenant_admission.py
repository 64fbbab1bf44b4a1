"""Admission between tenants over a real server (issue 15, findings 2, 3, 8 and 11).

Scaled-down reproductions: one tenant pipelining starts over several
WebSockets, flooding ``publish``, minting many subjects, or bursting into
congestion must be throttled itself while another tenant's start still
succeeds, and no refusal may reveal the server's global totals.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import jwt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from icefloe import Context, Limits, Message, Node, NodePolicy, create
from icefloe.core.congestion import CongestionState
from icefloe.runtime.flow import Flow
from icefloe.transport.app import EdgeSettings
from icefloe.transport.auth import ApiKeyAuthenticator, JwtAuthenticator
from icefloe.transport.limits import EdgeLimits

Serve = Any  # the serve fixture of conftest.py
JSON = "icefloe.v1.json"
ALL_SCOPES = ["streams:start", "streams:read", "topics:publish", "topics:read"]
KEY_A = "key-of-tenant-a-0123456789"
KEY_B = "key-of-tenant-b-0123456789"
KEYS = {
    KEY_A: {"tenant": "a", "scopes": ALL_SCOPES},
    KEY_B: {"tenant": "b", "scopes": ALL_SCOPES},
}
SECRET = "s" * 48


async def hold(msg: Message, ctx: Context) -> None:
    """One chunk, then held until the flow stops: each run keeps its slot."""
    await ctx.emit_chunk(parent=msg, text="held")
    await asyncio.Event().wait()


def holding_flow(limits: Limits | None = None, concurrency: int = 1000, queue: int = 1000) -> Flow:
    node = Node(hold, name="hold", policy=NodePolicy(max_concurrency=concurrency))
    return create(node.to(), limits=limits, queue_maxsize=queue)


def settings(**limits: Any) -> EdgeSettings:
    return EdgeSettings(authenticator=ApiKeyAuthenticator(KEYS), edge_limits=EdgeLimits(**limits))


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/v1/ws"


@asynccontextmanager
async def ws_as(base: str, token: str) -> AsyncIterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(ws_url(base), subprotocols=[JSON], additional_headers=headers) as ws:  # type: ignore[list-item]
        yield ws


async def send_ops(ws: ClientConnection, ops: list[dict[str, Any]]) -> None:
    """Pipeline ``ops`` (no waiting for answers), then a ping to mark the end."""
    for op in ops:
        await ws.send(json.dumps(op))
    await ws.send(json.dumps({"op": "ping", "ref": "end"}))


async def answers(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every ``started`` and ``error`` op up to the ``pong`` of :func:`send_ops`."""
    seen: list[dict[str, Any]] = []
    while True:
        msg = json.loads(await ws.recv())
        if msg["op"] == "pong" and msg.get("ref") == "end":
            return seen
        if msg["op"] in ("started", "error"):
            seen.append(msg)


def starts(prefix: str, n: int) -> list[dict[str, Any]]:
    return [{"op": "start", "ref": f"{prefix}{i}", "payload": i, "headers": {}} for i in range(n)]


async def post_start(base: str, key: str) -> httpx.Response:
    tenant = KEYS[key]["tenant"]
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        return await http.post(
            "/v1/streams",
            json={"payload": 0, "headers": {"tenant": tenant}},
            headers={"Authorization": f"Bearer {key}"},
        )


# -- stream slots (finding 3) ---------------------------------------------------------------


async def test_one_tenant_pipelining_starts_on_many_websockets_leaves_slots_for_another(
    serve: Serve,
) -> None:
    # Scaled down: 60 slots; the per-tenant cap is left at its default, a
    # quarter of them (2,500 of the default 10,000).
    flow = holding_flow(Limits(max_streams=60))
    async with (
        serve(flow, settings(requests_per_s=None)) as base,
        asyncio.timeout(30),
        AsyncExitStack() as stack,
    ):
        conns = [await stack.enter_async_context(ws_as(base, KEY_A)) for _ in range(4)]
        for i, ws in enumerate(conns):
            await send_ops(ws, starts(f"c{i}-", 20))
        got = [m for ws in conns for m in await answers(ws)]
        started = [m for m in got if m["op"] == "started"]
        refused = [m for m in got if m["op"] == "error"]
        # A pipelined every start it could: 15 got slots, the other 65 were refused.
        assert (len(started), len(refused)) == (15, 65)
        assert {m["code"] for m in refused} == {"overloaded"}
        assert {m["message"] for m in refused} == {
            "tenant 'a' has reached its stream limit (15); retry later"
        }
        # B's POST still gets a slot.
        response = await post_start(base, KEY_B)
        assert response.status_code == 201, response.text


async def test_a_refusal_at_the_server_s_capacity_reveals_no_totals(serve: Serve) -> None:
    flow = holding_flow(Limits(max_streams=4, max_streams_per_tenant=None))
    async with serve(flow, settings()) as base, asyncio.timeout(30):
        for _ in range(4):
            assert (await post_start(base, KEY_A)).status_code == 201
        response = await post_start(base, KEY_B)
        assert response.status_code == 503
        message = response.json()["error"]["message"]
        assert message == "the server is at capacity; retry later"
        assert not any(ch.isdigit() for ch in message)


async def test_websocket_starts_count_against_the_request_rate(serve: Serve) -> None:
    flow = holding_flow()
    # A refill too slow to matter within the test: the burst is all there is.
    limits = {"requests_per_s": 0.01, "request_burst": 10}
    async with serve(flow, settings(**limits)) as base, asyncio.timeout(30):
        async with ws_as(base, KEY_A) as ws:  # the handshake is one request
            await send_ops(ws, starts("s", 30))
            got = await answers(ws)
        started = [m for m in got if m["op"] == "started"]
        refused = [m for m in got if m["op"] == "error"]
        assert (len(started), len(refused)) == (9, 21)
        assert {m["code"] for m in refused} == {"rate_limited"}
        assert all(m["ref"].startswith("s") for m in refused)
        # The principal's rate is spent for HTTP too: one bucket for every way to start.
        assert (await post_start(base, KEY_A)).status_code == 429
        assert (await post_start(base, KEY_B)).status_code == 201


# -- WebSocket publish and sub_topic (finding 2) ------------------------------------------------


async def test_a_websocket_publish_flood_is_rate_limited_and_the_connection_stays(
    serve: Serve,
) -> None:
    limits = {"requests_per_s": 0.01, "request_burst": 20}
    async with serve(holding_flow(), settings(**limits)) as base, asyncio.timeout(30):
        async with ws_as(base, KEY_A) as ws:
            flood = [
                {"op": "publish", "ref": f"p{i}", "topic": "news.a", "data": {"i": i}}
                for i in range(200)
            ]
            await send_ops(ws, flood)
            refused = await answers(ws)
            assert len(refused) == 181  # the handshake and 19 publishes had tokens
            assert {m["code"] for m in refused} == {"rate_limited"}
            assert refused[0]["message"].startswith("too many requests; retry after ")
            # sub_topic is counted the same way; the connection is still open.
            await send_ops(ws, [{"op": "sub_topic", "ref": "t1", "pattern": "news.>"}])
            (error,) = await answers(ws)
            assert (error["code"], error["ref"]) == ("rate_limited", "t1")
        # Tenant B's own rate is untouched.
        async with ws_as(base, KEY_B) as ws:
            await send_ops(ws, [{"op": "publish", "ref": "b", "topic": "news.b", "data": 1}])
            assert await answers(ws) == []


# -- many subjects of one tenant (finding 11) ------------------------------------------------


def token(tenant: str, subject: str) -> str:
    claims = {"sub": subject, "tenant": tenant, "scope": " ".join(ALL_SCOPES)}
    claims["exp"] = int(time.time()) + 600  # type: ignore[assignment]
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def test_many_subjects_of_one_tenant_are_capped_by_the_tenant_layer(serve: Serve) -> None:
    edge = EdgeSettings(
        authenticator=JwtAuthenticator(secret=SECRET),
        edge_limits=EdgeLimits(
            max_connections=2,
            tenant_max_connections=3,
            requests_per_s=0.01,
            request_burst=5,
            tenant_requests_per_s=0.01,
            tenant_request_burst=12,
        ),
    )
    async with serve(holding_flow(), edge) as base, asyncio.timeout(30):
        statuses: list[int] = []
        async with AsyncExitStack() as stack:
            for i in range(6):  # six subjects, one connection each
                try:
                    await stack.enter_async_context(ws_as(base, token("acme", f"user{i}")))
                    statuses.append(101)
                except InvalidStatus as exc:
                    statuses.append(exc.response.status_code)
            # Each subject is within its own cap of 2; the tenant's 3 are taken.
            assert statuses == [101, 101, 101, 429, 429, 429]
            # Another tenant is not affected.
            async with ws_as(base, token("globex", "user0")):
                pass
        # The request rate: 12 for the tenant however many subjects ask (6 spent above).
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            codes = [
                (
                    await http.get(
                        "/v1/streams",
                        headers={"Authorization": f"Bearer {token('acme', f'rate{i}')}"},
                    )
                ).status_code
                for i in range(12)
            ]
        assert codes.count(200) == 6
        assert codes.count(429) == 6


# -- congestion (finding 3) ---------------------------------------------------------------------


async def test_congestion_from_one_tenant_s_burst_does_not_refuse_another_s_start(
    serve: Serve,
) -> None:
    # Two workers and an inbox of four: a's pipelined burst fills the inbox and the
    # load watch goes congested, then overloaded.
    flow = holding_flow(concurrency=2, queue=4)
    assert flow.load is not None
    overloaded = asyncio.Event()
    flow.load.add_listener(
        lambda _old, new: overloaded.set() if new is CongestionState.OVERLOADED else None
    )
    async with serve(flow, settings()) as base, asyncio.timeout(30), ws_as(base, KEY_A) as ws:
        await send_ops(ws, starts("a", 40))
        first = await answers(ws)
        # Started, unless the watch caught the burst in the act (then refused).
        assert len([m for m in first if m["op"] == "started"]) >= 10
        assert {m["code"] for m in first if m["op"] == "error"} <= {"overloaded"}
        await overloaded.wait()
        # a's next starts are refused: a holds every run in flight.
        await send_ops(ws, starts("again", 3))
        again = await answers(ws)
        assert [m.get("code") for m in again] == ["overloaded"] * 3
        # b holds nothing: its start is admitted although the flow is overloaded.
        assert flow.congestion is CongestionState.OVERLOADED
        response = await post_start(base, KEY_B)
        assert response.status_code == 201, response.text
