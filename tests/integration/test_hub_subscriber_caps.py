"""Hub subscriber slots over a real socket (issue 15, item 2), scaled down.

The attack: tenant A opened 10 WebSocket connections and sent 1,000
``sub_topic {pattern: ">", filter: F}`` on each, F a 1,006-character filter
of 34 comparisons; the hub's subscriber slots filled and B's ``sub_topic``
was refused, and each of A's publishes held the loop for hundreds of ms.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from icefloe import Context, Message, Node, create
from icefloe.cli import app as cli
from icefloe.hub import Hub, HubLimits
from icefloe.runtime.flow import Flow
from icefloe.transport import app as transport_app
from icefloe.transport.app import EdgeSettings, create_app, server_options
from icefloe.transport.auth import ApiKeyAuthenticator
from servekit import serve_asgi

Serve = Any  # the serve fixture of conftest.py
SCOPES = ["topics:read", "topics:publish"]
A_KEY, B_KEY = "k-tenant-a-0123456789", "k-tenant-b-0123456789"
KEYS = {
    # A's request rate is off: this test is about hub slots, not the rate limit.
    A_KEY: {"tenant": "a", "scopes": SCOPES, "limits": {"requests_per_s": "off"}},
    B_KEY: {"tenant": "b", "scopes": SCOPES},
}
PATH = "data." + ".".join(["a"] * 8)
#: the event the issue's filter selects: data.a.a.a.a.a.a.a.a == 7
HIT = {"a": {"a": {"a": {"a": {"a": {"a": {"a": {"a": 7}}}}}}}}


def attack_filter(k: int = 0) -> str:
    """34 comparisons on PATH, 1,006 characters; distinct per ``k``."""
    return " or ".join([f"{PATH} == {i}" for i in range(33)] + [f"{PATH} == {-1 - k}"])


def idle_flow() -> Flow:
    async def idle(msg: Message, ctx: Context) -> None:
        pass

    return create(Node(idle, name="idle").to())


class Client:
    """JSON ops in, decoded dicts out."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, op: str, **fields: Any) -> None:
        await self.ws.send(json.dumps({"op": op, **fields}))

    async def recv(self) -> dict[str, Any]:
        decoded = json.loads(await self.ws.recv())
        assert isinstance(decoded, dict)
        return decoded

    async def errors_until_pong(self) -> list[dict[str, Any]]:
        """The ``error`` ops answering what was sent so far (a ping's pong ends them)."""
        await self.send("ping", ref="fence")
        errors = []
        while True:
            got = await self.recv()
            if got["op"] == "pong":
                return errors
            if got["op"] == "error":
                errors.append(got)


@asynccontextmanager
async def client(base: str, key: str | None = None) -> AsyncIterator[Client]:
    url = base.replace("http://", "ws://") + "/v1/ws"
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    proto: Any = ["icefloe.v1.json"]
    ws = await connect(url, subprotocols=proto, additional_headers=headers)
    try:
        yield Client(ws)
    finally:
        closing = asyncio.ensure_future(ws.close())
        try:
            while True:
                await ws.recv()
        except ConnectionClosed:
            pass
        await closing


@asynccontextmanager
async def serve_hub(hub: Hub, settings: EdgeSettings) -> AsyncIterator[str]:
    app = create_app(idle_flow(), settings, hub=hub)
    async with hub, serve_asgi(app, **server_options(settings)) as base:
        yield base


async def test_one_tenant_cannot_take_every_subscriber_slot() -> None:
    # The hub's slots scaled down to just over A's own default limit.
    hub = Hub(HubLimits(max_subscribers=1_050))
    settings = EdgeSettings(authenticator=ApiKeyAuthenticator(KEYS))
    async with serve_hub(hub, settings) as base, asyncio.timeout(60):
        refused: list[dict[str, Any]] = []
        async with connections(base, A_KEY, 11) as conns:
            for c, conn in enumerate(conns):
                for i in range(100):
                    await conn.send(
                        "sub_topic", pattern=">", filter=attack_filter(), ref=f"a{c}-{i}"
                    )
                refused += await conn.errors_until_pong()
            # A took its own limit, no more; B still subscribes and receives.
            assert len(refused) == 100, refused[:3]
            assert {e["code"] for e in refused} == {"limit_exceeded"}
            message = refused[0]["message"]
            assert "tenant 'a' has its limit of 1000 subscribers" in message
            assert "1050" not in message
            async with client(base, B_KEY) as b:
                await b.send("sub_topic", pattern=">", filter=attack_filter(), ref="b")
                assert await b.errors_until_pong() == []
                await b.send("publish", topic="t.x", data=HIT)
                event = await b.recv()
                assert (event["op"], event["topic"], event["data"]) == ("event", "t.x", HIT)


@asynccontextmanager
async def connections(base: str, key: str, count: int) -> AsyncIterator[list[Client]]:
    """``count`` connections with ``key``, closed together."""
    if count == 0:
        yield []
        return
    async with client(base, key) as first, connections(base, key, count - 1) as rest:
        yield [first, *rest]


async def test_a_connection_holds_at_most_its_topic_subscriptions(serve: Serve) -> None:
    async with serve(idle_flow()) as base, asyncio.timeout(30), client(base) as c:
        for i in range(101):
            await c.send("sub_topic", pattern=f"t.{i}", sub_id=f"s{i}", ref=f"r{i}")
        errors = await c.errors_until_pong()
        assert [(e["code"], e["ref"]) for e in errors] == [("limit_exceeded", "r100")]
        assert "this connection holds its limit of 100 topic subscriptions" in errors[0]["message"]
        await c.send("unsub_topic", sub_id="s0", ref="u")
        assert await c.recv() == {"op": "unsubscribed", "sub_id": "s0", "ref": "u"}
        await c.send("sub_topic", pattern="t.100", sub_id="s100", ref="again")
        assert await c.errors_until_pong() == []


async def test_costly_filters_stop_at_the_tenants_budget() -> None:
    settings = EdgeSettings(authenticator=ApiKeyAuthenticator(KEYS))
    async with (
        serve_hub(Hub(), settings) as base,
        asyncio.timeout(30),
        client(base, A_KEY) as a,
        client(base, B_KEY) as b,
    ):
        for k in range(100):
            await a.send("sub_topic", pattern=">", filter=attack_filter(k), ref=f"a{k}")
        errors = await a.errors_until_pong()
        # Each costs 442 units; the default budget of 40,000 takes 90 of them.
        assert [e["ref"] for e in errors] == [f"a{k}" for k in range(90, 100)]
        assert {e["code"] for e in errors} == {"limit_exceeded"}
        assert "budget of 40000 (max_filter_cost_per_tenant)" in errors[0]["message"]
        # B's own budget is untouched.
        await b.send("sub_topic", pattern=">", filter=attack_filter(), ref="b")
        assert await b.errors_until_pong() == []


async def test_get_topics_past_the_filter_budget_is_429() -> None:
    """Over HTTP: the second distinct costly filter of a tenant with a small budget."""
    hub = Hub(HubLimits(max_filter_cost_per_tenant=500))
    settings = EdgeSettings(authenticator=ApiKeyAuthenticator(KEYS))
    a_auth = {"authorization": f"Bearer {A_KEY}"}
    async with (
        serve_hub(hub, settings) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as http,
        asyncio.timeout(30),
    ):
        params = {"filter": attack_filter(0)}
        async with http.stream("GET", "/v1/topics/t.x", params=params, headers=a_auth) as held:
            assert held.status_code == 200
            # The same filter is shared, so it fits; a distinct one does not.
            async with http.stream("GET", "/v1/topics/t.y", params=params, headers=a_auth) as r:
                assert r.status_code == 200
            refused = await http.get(
                "/v1/topics/t.x", params={"filter": attack_filter(1)}, headers=a_auth
            )
            assert refused.status_code == 429, refused.text
            error = refused.json()["error"]
            assert error["code"] == "limit_exceeded"
            assert "costs 442 units" in error["message"]
            assert "budget of 500" in error["message"]


# -- the flags of icefloe serve ------------------------------------------------------


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[tuple[EdgeSettings, Hub]]:
    """The settings ``serve`` builds its app with, and the hub the app makes from
    them (uvicorn is not started)."""
    seen: list[tuple[EdgeSettings, Hub]] = []

    def build(flow: Any, settings: EdgeSettings, **options: Any) -> object:
        seen.append((settings, Hub(settings.hub_limits)))
        return object()

    monkeypatch.setattr(transport_app, "create_app", build)
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: None)
    return seen


def serve_with(*flags: str) -> Any:
    return CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow", *flags])


def test_serve_applies_the_subscriber_caps(served: list[tuple[EdgeSettings, Hub]]) -> None:
    result = serve_with()
    assert result.exit_code == 0, result.output
    settings, hub = served.pop()
    assert (hub.limits.max_subscribers_per_tenant, hub.limits.max_filter_cost_per_tenant) == (
        1000,
        40000,
    )
    assert settings.ws.max_topic_subs == 100
    flags = ["--max-subscribers-per-tenant", "5000", "--max-filter-cost-per-tenant", "off"]
    result = serve_with(*flags, "--max-topic-subs", "7")
    assert result.exit_code == 0, result.output
    settings, hub = served.pop()
    assert (hub.limits.max_subscribers_per_tenant, hub.limits.max_filter_cost_per_tenant) == (
        5000,
        None,
    )
    assert settings.ws.max_topic_subs == 7


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--max-subscribers-per-tenant", "10000"], "must be below max_subscribers"),
        (["--max-subscribers-per-tenant", "many"], "expected a number or 'off'"),
        (["--max-filter-cost-per-tenant", "-3"], "expected a number > 0 or 'off'"),
        (["--max-topic-subs", "0"], "Invalid value for '--max-topic-subs'"),
    ],
)
def test_serve_refuses_bad_subscriber_caps(
    served: list[tuple[EdgeSettings, Hub]], flags: list[str], named: str
) -> None:
    result = serve_with(*flags)
    assert result.exit_code == 2
    # Rich wraps the message in a box: read it as one line.
    assert named in " ".join(result.output.replace("│", " ").split())
    assert served == []
