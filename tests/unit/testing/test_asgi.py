"""The in-memory ASGI client: SSE events arrive as the app sends them, closing
the response tells the app (http.disconnect) and leaves no task behind, and
the app's lifespan runs around the client."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest

import icefloe.testing
from icefloe import Context, Message, Node, create
from icefloe.testing import FakeClock
from icefloe.testing.asgi import AppError, StreamingASGITransport, client, lifespan

Scope = MutableMapping[str, Any]


async def gated(msg: Message, ctx: Context) -> None:
    """One chunk, then nothing until the test sends an input: the run cannot
    end before the test says so."""
    await ctx.emit_chunk(parent=msg, text="first")
    async for data in ctx.inputs(parent=msg):
        await ctx.emit_chunk(parent=msg, text=str(data), done=True)
        return


async def events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, str]]:
    """SSE events (field -> value) from a response's lines."""
    event: dict[str, str] = {}
    async for line in lines:
        if not line:
            if "data" in event:  # skips the opening "retry:" advice
                yield event
            event = {}
            continue
        field, _, value = line.partition(":")
        event[field] = value.lstrip(" ")


async def start(http: httpx.AsyncClient) -> str:
    answer = await http.post("/v1/streams", json={"payload": "q", "headers": {"tenant": "t"}})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["stream_id"])


@pytest.mark.timeout(30)
async def test_the_first_sse_event_arrives_while_the_run_is_still_going() -> None:
    flow = create(Node(gated, name="gated").to())
    async with icefloe.testing.open(flow) as t, t.client() as http:
        sid = await start(http)
        url = f"/v1/streams/{sid}"
        async with http.stream("GET", url, headers={"accept": "text/event-stream"}) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            seen = events(resp.aiter_lines())
            async with asyncio.timeout(10):
                first = await anext(seen)
            assert json.loads(first["data"])["text"] == "first"
            brief = t.flow.brief(sid)
            assert brief is not None
            assert brief.state == "running"  # still: it waits for the input below
            t.flow.send_input(sid, "last")
            async with asyncio.timeout(10):
                last = await anext(seen)
            assert last["event"] == "end"
            assert json.loads(last["data"]) | {"ts": 0} == {
                "stream_id": sid,
                "seq": 1,
                "text": "last",
                "done": True,
                "meta": {},
                "data": None,
                "ts": 0,
            }


@pytest.mark.timeout(30)
async def test_closing_the_response_detaches_the_reader_and_leaves_no_task() -> None:
    flow = create(Node(gated, name="gated").to())
    async with icefloe.testing.open(flow) as t, t.client() as http:
        sid = await start(http)
        await asyncio.sleep(0)  # the node runs and waits for its input
        before = asyncio.all_tasks()
        url = f"/v1/streams/{sid}"
        async with http.stream("GET", url, headers={"accept": "text/event-stream"}) as resp:
            async with asyncio.timeout(10):
                await anext(events(resp.aiter_lines()))
            stats = t.flow.lookup(sid)
            assert stats is not None
            assert stats.subscribers == 1
            assert len(asyncio.all_tasks()) > len(before)
        assert asyncio.all_tasks() == before  # the app's request task ended
        stats = t.flow.lookup(sid)
        assert stats is not None
        assert stats.subscribers == 0
        assert stats.state == "running"  # a dropped reader is not a cancel: the run goes on


async def ticker(scope: Scope, receive: Any, send: Any) -> None:
    """A raw ASGI app: a line now, then the last line ten seconds later unless
    the client left before; records what it was told."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"now\n", "more_body": True})
    gone = asyncio.ensure_future(disconnect(receive))
    await asyncio.wait({gone}, timeout=10)
    if not gone.done():
        await send({"type": "http.response.body", "body": b"later\n", "more_body": False})
    TOLD.append(await gone)


async def disconnect(receive: Any) -> str:
    while (message := await receive())["type"] != "http.disconnect":
        pass  # the request's body
    return str(message["type"])


TOLD: list[str] = []


def test_ours_streams_where_httpx_asgi_transport_waits_for_the_end() -> None:
    async def first_line(transport: httpx.AsyncBaseTransport) -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://t") as http,
            http.stream("GET", "/") as resp,
        ):
            line = await anext(resp.aiter_lines())
            return line, loop.time()

    TOLD.clear()
    assert FakeClock().run(first_line(StreamingASGITransport(ticker))) == ("now", 0.0)
    assert TOLD == ["http.disconnect"]  # closing the response told the app
    # httpx's transport hands the body over once the app has sent all of it.
    assert FakeClock().run(first_line(httpx.ASGITransport(ticker))) == ("now", 10.0)


async def deaf(scope: Scope, receive: Any, send: Any) -> None:
    """Starts a response, then never listens nor ends."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.Event().wait()


def test_an_app_deaf_to_the_disconnect_is_cancelled_after_the_grace() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        before = asyncio.all_tasks()
        async with (
            httpx.AsyncClient(transport=StreamingASGITransport(deaf)) as http,
            http.stream("GET", "http://t/"),
        ):
            pass
        closed_at = loop.time()
        assert asyncio.all_tasks() == before
        return closed_at

    assert FakeClock().run(main()) == 1.0  # CLOSE_GRACE_S


async def crashes(scope: Scope, receive: Any, send: Any) -> None:
    raise RuntimeError("boom")


async def silent(scope: Scope, receive: Any, send: Any) -> None:
    return


@pytest.mark.timeout(30)
async def test_an_app_that_fails_before_answering_raises_from_the_request() -> None:
    async with httpx.AsyncClient(transport=StreamingASGITransport(crashes)) as http:
        with pytest.raises(RuntimeError, match="boom"):
            await http.get("http://t/")
    async with httpx.AsyncClient(transport=StreamingASGITransport(silent)) as http:
        with pytest.raises(AppError, match=r"ended without sending http\.response\.start"):
            await http.get("http://t/")


async def refuses_to_start(scope: Scope, receive: Any, send: Any) -> None:
    assert scope["type"] == "lifespan"
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "no database"})


@pytest.mark.timeout(30)
async def test_a_failed_lifespan_startup_is_raised_with_the_apps_message() -> None:
    with pytest.raises(AppError, match="lifespan startup failed: no database"):
        async with lifespan(refuses_to_start):
            pass


@pytest.mark.timeout(30)
async def test_the_edge_lifespan_runs_the_flow_and_stops_it() -> None:
    from icefloe.transport.app import create_app

    flow = create(Node(gated, name="gated").to())
    async with client(create_app(flow)) as http:
        assert flow.running
        assert (await http.get("/healthz")).status_code == 200
    assert not flow.running


def test_importing_icefloe_testing_loads_no_server_or_http_library() -> None:
    code = (
        "import sys, icefloe.testing; "
        "print([m for m in ('starlette', 'uvicorn', 'httpx') if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
