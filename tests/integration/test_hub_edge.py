"""The hub over a real socket: POST/GET /v1/topics (SSE) and WebSocket publish/sub_topic."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from icefloe import Context, Message, Node, create
from icefloe.core.sse import SseParser
from icefloe.transport.app import EdgeSettings
from icefloe.transport.auth import ApiKeyAuthenticator

Serve = Any


def idle_flow() -> Any:
    async def idle(msg: Message, ctx: Context) -> None:
        pass

    return create(Node(idle, name="idle").to())


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
    parser = SseParser()
    async for part in response.aiter_bytes():
        parser.feed_data(part)
        for event in parser.events_received():
            if event.event == "event":
                yield event.id, json.loads(event.data)


async def test_publish_and_subscribe_with_a_pattern_and_a_filter(serve: Serve) -> None:
    async with (
        serve(idle_flow()) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        asyncio.timeout(20),
    ):
        url = "/v1/topics/chat.*.tokens"
        params = {"filter": 'data.n >= 2 and headers.lang in ["en"]'}
        async with client.stream("GET", url, params=params) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = sse_events(r)
            offsets: dict[str, list[int]] = {"a": [], "b": []}
            for n in range(5):
                for room, lang in (("a", "en"), ("b", "fr")):
                    posted = await client.post(
                        f"/v1/topics/chat.{room}.tokens",
                        json={"data": {"n": n}, "headers": {"lang": lang}},
                    )
                    assert posted.status_code == 201
                    assert posted.json()["topic"] == f"chat.{room}.tokens"
                    offsets[room].append(posted.json()["offset"])
            await client.post("/v1/topics/other.x", json={"data": {"n": 9}})
            got = [await anext(events) for _ in range(3)]
        # Offsets are consecutive within a topic; the SSE id is the offset.
        for room_offsets in offsets.values():
            first = room_offsets[0]
            assert room_offsets == list(range(first, first + 5))
        assert [(i, e["topic"], e["data"]["n"]) for i, e in got] == [
            (str(offsets["a"][n]), "chat.a.tokens", n) for n in (2, 3, 4)
        ]
        assert got[0][1]["op"] == "event"


async def test_resume_by_offset_on_an_exact_topic(serve: Serve) -> None:
    async with (
        serve(idle_flow()) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        asyncio.timeout(20),
    ):
        offsets = [
            (await client.post("/v1/topics/news.eu", json={"data": n})).json()["offset"]
            for n in range(6)
        ]
        headers = {"last-event-id": str(offsets[3])}
        async with client.stream("GET", "/v1/topics/news.eu", headers=headers) as r:
            events = sse_events(r)
            got = [await anext(events) for _ in range(2)]
        assert [e["data"] for _, e in got] == [4, 5]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/topics/chat.*.tokens", {"filter": "data.n >>= 2"}),
        ("/v1/topics/chat.*.tokens", {"filter": "(" * 40 + "topic == 1" + ")" * 40}),
        ("/v1/topics/chat..tokens", {}),
        ("/v1/topics/chat.x", {"buffer": "0"}),
    ],
)
async def test_bad_patterns_filters_and_parameters_are_400(
    serve: Serve, path: str, params: dict[str, str]
) -> None:
    async with (
        serve(idle_flow()) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        asyncio.timeout(20),
    ):
        r = await client.get(path, params=params)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize(
    ("params", "named"),
    [
        # Issue 15, item 11: int() took "1_0" as 10; a query integer is ASCII digits.
        ({"buffer": "1_0"}, "buffer"),
        ({"buffer": "+10"}, "buffer"),
        ({"buffer": " 10"}, "buffer"),
        ({"buffer": "\u0661\u0660"}, "buffer"),  # ARABIC-INDIC digits: isdigit(), not ASCII
        # ... and a bad from_offset was reported as from_seq, a field topics do not have.
        ({"from_offset": "abc"}, "from_offset"),
        ({"from_offset": "1_0"}, "from_offset"),
    ],
)
async def test_bad_integer_parameters_are_400_naming_the_parameter(
    serve: Serve, params: dict[str, str], named: str
) -> None:
    async with (
        serve(idle_flow()) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        asyncio.timeout(20),
    ):
        r = await client.get("/v1/topics/chat.x", params=params)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "bad_request"
        assert error["message"].startswith(f"{named} must be"), error
        assert "from_seq" not in error["message"]


async def test_topics_are_per_tenant(serve: Serve) -> None:
    keys = {
        "k-acme-0123456789": {"tenant": "acme", "scopes": ["topics:publish", "topics:read"]},
        "k-globex-012345678": {"tenant": "globex", "scopes": ["topics:publish", "topics:read"]},
        "k-acme-read-012345": {"tenant": "acme", "scopes": ["topics:read"]},
    }
    settings = EdgeSettings(authenticator=ApiKeyAuthenticator(keys))
    acme = {"authorization": "Bearer k-acme-0123456789"}
    globex = {"authorization": "Bearer k-globex-012345678"}
    async with (
        serve(idle_flow(), settings) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        asyncio.timeout(20),
    ):
        async with client.stream("GET", "/v1/topics/alerts", headers=globex) as r:
            events = sse_events(r)
            await client.post("/v1/topics/alerts", json={"data": "acme's"}, headers=acme)
            await client.post("/v1/topics/alerts", json={"data": "globex's"}, headers=globex)
            _, first = await anext(events)
        assert first["data"] == "globex's"
        denied = await client.post(
            "/v1/topics/alerts",
            json={"data": 1},
            headers={"authorization": "Bearer k-acme-read-012345"},
        )
        assert denied.status_code == 403
        foreign = await client.post(
            "/v1/topics/alerts", json={"data": 1, "tenant": "globex"}, headers=acme
        )
        assert foreign.status_code == 403


async def test_websocket_publish_and_sub_topic(serve: Serve) -> None:
    async with serve(idle_flow()) as base, asyncio.timeout(20):
        url = base.replace("http://", "ws://") + "/v1/ws"
        proto: Any = ["icefloe.v1.json"]
        async with (
            connect(url, subprotocols=proto) as reader,
            connect(url, subprotocols=proto) as writer,
        ):
            await reader.send(
                json.dumps({"op": "sub_topic", "pattern": "jobs.>", "filter": "data.ok == true"})
            )
            await reader.send(
                json.dumps(
                    {"op": "sub_topic", "pattern": "jobs.*", "filter": "data.ok ==", "ref": "bad"}
                )
            )
            err = json.loads(await reader.recv())
            assert (err["op"], err["code"], err["ref"]) == ("error", "bad_request", "bad")
            for i, ok in enumerate((False, True, True)):
                await writer.send(
                    json.dumps({"op": "publish", "topic": f"jobs.q{i}", "data": {"ok": ok}})
                )
            got = [json.loads(await reader.recv()) for _ in range(2)]
            assert [(g["op"], g["topic"]) for g in got] == [
                ("event", "jobs.q1"),
                ("event", "jobs.q2"),
            ]
            await writer.send(
                json.dumps({"op": "publish", "topic": "bad..topic", "data": 1, "ref": "p"})
            )
            err = json.loads(await writer.recv())
            assert (err["code"], err["ref"]) == ("bad_request", "p")
