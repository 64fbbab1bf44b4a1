"""The edge inside a user's FastAPI app, under uvicorn on a real socket (docs/embedding.md).

Mounted with ``create_app(flow)``: the parent runs the edge's lifespan
(``lifespan``/``running``), or requests get a 503 that says how to fix it;
``Location`` keeps the mount prefix and ``root_path``. And a route of the
user's own streaming a ``Subscription`` with ``sse_response`` /
``stream_response``: resume headers, heartbeats, the reader freed on leave.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response

from icefloe import Context, Headers, Message, Node, create
from icefloe.core.sse import SseEvent, SseParser
from icefloe.runtime.flow import Flow
from icefloe.transport import (
    PumpSettings,
    WireFormat,
    create_app,
    lifespan,
    resume_point,
    running,
    sse_response,
    stream_response,
)
from servekit import serve_asgi

TENANT = {"tenant": "acme"}


def counting_flow(delay_s: float = 0.0) -> Flow:
    """payload = n: chunks 't0'..'t{n-1}', then done."""

    async def count(msg: Message, ctx: Context) -> None:
        for i in range(int(msg.payload)):
            await ctx.emit_chunk(parent=msg, text=f"t{i}")
            if delay_s:
                await asyncio.sleep(delay_s)
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return create(Node(count, name="count").to())


async def sse_events(
    client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None
) -> tuple[list[SseEvent], int]:
    """(events, heartbeat comments) of one SSE response read to its end."""
    parser = SseParser()
    events: list[SseEvent] = []
    pings = 0
    async with client.stream("GET", path, headers=headers or {}) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        async for data in r.aiter_bytes():
            pings += data.count(b": ping")
            parser.feed_data(data)
            events.extend(parser.events_received())
    return events, pings


def texts(events: list[SseEvent]) -> list[str]:
    return [json.loads(e.data)["text"] for e in events if e.event == "chunk"]


async def start_and_read(client: httpx.AsyncClient, prefix: str, n: int) -> list[str]:
    r = await client.post(f"{prefix}/v1/streams", json={"payload": n, "headers": TENANT})
    assert r.status_code == 201, r.text
    sid = r.json()["stream_id"]
    assert r.headers["location"] == f"{prefix}/v1/streams/{sid}"
    # Follow Location as a client would: it must lead to the stream.
    events, _ = await sse_events(client, r.headers["location"])
    assert events[-1].event == "end"
    return texts(events)


# -- create_app(flow) mounted in a FastAPI app ------------------------------------------


async def test_mounted_without_a_lifespan_the_503_says_how_to_fix_it() -> None:
    parent = FastAPI()
    parent.mount("/icefloe", create_app(counting_flow()))
    async with serve_asgi(parent) as url, httpx.AsyncClient(base_url=url) as client:
        r = await client.post("/icefloe/v1/streams", json={"payload": 1, "headers": TENANT})
        assert r.status_code == 503
        error = r.json()["error"]
        assert error["code"] == "unavailable"
        assert "icefloe.transport.lifespan" in error["message"]
        assert "docs/embedding.md" in error["message"]


async def test_the_lifespan_helper_runs_a_mounted_edge_and_location_keeps_the_prefix() -> None:
    flow = counting_flow()
    edge = create_app(flow)
    parent = FastAPI(lifespan=lifespan(edge))
    parent.mount("/icefloe", edge)

    @parent.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    async with serve_asgi(parent) as url, httpx.AsyncClient(base_url=url) as client:
        assert flow.running
        assert (await client.get("/hello")).json() == {"hello": "world"}
        assert await start_and_read(client, "/icefloe", 5) == [f"t{i}" for i in range(5)]
        assert (await client.get("/icefloe/readyz")).status_code == 200
        # The inspector page uses relative URLs: it works under the prefix.
        page = await client.get("/icefloe/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
    # The edge started the flow, so the parent's shutdown stopped it.
    assert not flow.running


async def test_running_inside_the_parents_own_lifespan() -> None:
    flow = counting_flow()
    edge = create_app(flow)
    seen: list[str] = []

    @asynccontextmanager
    async def own_lifespan(app: FastAPI) -> AsyncIterator[None]:
        seen.append("startup")
        async with running(edge):
            yield
        seen.append("shutdown")

    parent = FastAPI(lifespan=own_lifespan)
    parent.mount("/api/llm", edge)
    async with serve_asgi(parent) as url, httpx.AsyncClient(base_url=url) as client:
        assert await start_and_read(client, "/api/llm", 3) == ["t0", "t1", "t2"]
    assert seen == ["startup", "shutdown"]
    assert not flow.running


async def test_async_with_flow_in_the_parent_serves_a_mounted_edge() -> None:
    flow = counting_flow()

    @asynccontextmanager
    async def own_lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with flow:
            yield

    parent = FastAPI(lifespan=own_lifespan)
    parent.mount("/icefloe", create_app(flow))
    async with serve_asgi(parent) as url, httpx.AsyncClient(base_url=url) as client:
        assert await start_and_read(client, "/icefloe", 2) == ["t0", "t1"]


async def test_location_respects_the_servers_root_path() -> None:
    # Behind a proxy that strips /edge: uvicorn --root-path /edge.
    async with (
        serve_asgi(create_app(counting_flow()), root_path="/edge") as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        r = await client.post("/v1/streams", json={"payload": 1, "headers": TENANT})
        assert r.status_code == 201, r.text
        assert r.headers["location"] == f"/edge/v1/streams/{r.json()['stream_id']}"


# -- sse_response / stream_response from the user's own route ------------------------------


def chat_app(flow: Flow, settings: PumpSettings | None = None) -> FastAPI:
    """A user's app: GET /chat?n= runs the flow and streams it; GET /chat/{id} resumes."""

    @asynccontextmanager
    async def own_lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with flow:
            yield

    app = FastAPI(lifespan=own_lifespan)

    @app.get("/chat")
    async def chat(request: Request, n: int) -> Response:
        return sse_response(
            request,
            flow.stream(Message(payload=n, headers=Headers(tenant="acme"))),
            settings=settings,
        )

    @app.post("/chat")
    async def start_chat(n: int) -> dict[str, str]:
        message = Message(payload=n, headers=Headers(tenant="acme"))
        return {"stream_id": await flow.start(message, history=100)}

    @app.get("/chat/{stream_id}")
    async def resume(request: Request, stream_id: str) -> Response:
        return stream_response(request, flow.subscribe(stream_id, resume_point(request)))

    return app


async def test_sse_response_streams_a_subscription_from_a_user_route() -> None:
    async with serve_asgi(chat_app(counting_flow())) as url, httpx.AsyncClient(base_url=url) as c:
        events, _ = await sse_events(c, "/chat?n=4")
    assert [e.event for e in events] == ["chunk"] * 4 + ["end"]
    assert [e.id for e in events] == ["0", "1", "2", "3", "4"]
    assert texts(events) == ["t0", "t1", "t2", "t3"]


async def test_resume_headers_last_event_id_and_from_seq() -> None:
    flow = counting_flow()
    async with serve_asgi(chat_app(flow)) as url, httpx.AsyncClient(base_url=url) as c:
        sid = (await c.post("/chat", params={"n": 6})).json()["stream_id"]
        events, _ = await sse_events(c, f"/chat/{sid}", {"Last-Event-ID": "2"})
        assert texts(events) == ["t3", "t4", "t5"]
        events, _ = await sse_events(c, f"/chat/{sid}?from_seq=5")
        assert texts(events) == ["t5"]
        bad = await c.get(f"/chat/{sid}", headers={"Last-Event-ID": "x"})
        assert bad.status_code == 400
        # NDJSON when the client asks for it.
        r = await c.get(f"/chat/{sid}?from_seq=4", headers={"Accept": WireFormat.NDJSON.value})
        assert r.headers["content-type"].startswith(WireFormat.NDJSON.value)
        lines = [json.loads(line) for line in r.text.splitlines() if line]
        assert [(x["seq"], x["text"], x["done"]) for x in lines] == [
            (4, "t4", False),
            (5, "t5", False),
            (6, "", True),
        ]


async def test_heartbeats_while_no_token_flows() -> None:
    # One token per 0.3 s and a heartbeat every 0.05 s: comments in between.
    app = chat_app(counting_flow(delay_s=0.3), PumpSettings(heartbeat_s=0.05))
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url) as c:
        events, pings = await sse_events(c, "/chat?n=3")
    assert texts(events) == ["t0", "t1", "t2"]
    assert pings >= 3


async def test_a_client_that_leaves_cancels_the_run_it_owned() -> None:
    flow = counting_flow(delay_s=0.05)
    async with serve_asgi(chat_app(flow)) as url, httpx.AsyncClient(base_url=url) as c:
        async with c.stream("GET", "/chat?n=100000") as r:
            parser = SseParser()
            async for data in r.aiter_bytes():
                parser.feed_data(data)
                if any(e.event == "chunk" for e in parser.events_received()):
                    break
            assert len(flow.streams()) == 1
        # The pump sees the disconnect and closes the owner reader: the run is cancelled.
        async with asyncio.timeout(5):
            while flow.streams():
                await asyncio.sleep(0.02)


async def test_a_client_that_does_not_drain_is_cut_after_the_send_timeout() -> None:
    async def flood(msg: Message, ctx: Context) -> None:
        for _ in range(int(msg.payload)):
            await ctx.emit_chunk(parent=msg, text="x" * 1000)
        await ctx.emit_chunk(parent=msg, text="", done=True)

    flow = create(Node(flood, name="flood").to())
    app = chat_app(flow, PumpSettings(send_timeout_s=0.3))
    async with serve_asgi(app) as url:
        host, port = url.removeprefix("http://").split(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small receive window, set before connecting, and never read.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        _reader, writer = await asyncio.open_connection(sock=sock)
        try:
            writer.write(b"GET /chat?n=1000000 HTTP/1.1\r\nHost: t\r\n\r\n")
            await writer.drain()
            # Well within the default send timeout (10 s): it is the 0.3 s one that cuts.
            async with asyncio.timeout(5):
                while not flow.streams():
                    await asyncio.sleep(0.02)
                # Cut: its owner reader is closed, which cancels the run.
                while flow.streams():
                    await asyncio.sleep(0.02)
        finally:
            writer.close()


def test_the_helpers_refuse_nothing_at_import() -> None:
    # The embedding names are the package's, loaded on demand.
    import icefloe.transport as transport

    assert {"create_app", "lifespan", "running", "sse_response", "stream_response"} <= set(
        transport.__all__
    )
    with pytest.raises(AttributeError):
        _ = transport.no_such_name
