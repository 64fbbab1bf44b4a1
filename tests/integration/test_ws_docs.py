"""docs/websocket.md says what the server does: the ``event`` op's fields, the
scopes ``start`` needs, and where ``subscribe`` without ``from_seq`` begins."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from test_ws import HEADERS, client

from icefloe import Context, Message, Node, create
from icefloe.core.op_types import Subscribe
from icefloe.transport.app import EdgeSettings
from icefloe.transport.auth import ApiKeyAuthenticator

Serve = Any
WEBSOCKET_MD = Path(__file__).parents[2] / "docs" / "websocket.md"


def doc_row(op: str, section: str) -> str:
    """The row of ``op`` in the docs' op table under ``section``."""
    text = WEBSOCKET_MD.read_text(encoding="utf-8").split(section, 1)[1].split("\n### ", 1)[0]
    rows = [line for line in text.splitlines() if line.startswith(f"| `{op}` |")]
    assert len(rows) == 1, f"{op} in {section}"
    return rows[0]


def waiting_flow() -> Any:
    """Emits t0, t1, then waits for one input before t2 and done."""

    async def node(msg: Message, ctx: Context) -> None:
        await ctx.emit_chunk(parent=msg, text="t0")
        await ctx.emit_chunk(parent=msg, text="t1")
        async for _ in ctx.inputs(parent=msg):
            break
        await ctx.emit_chunk(parent=msg, text="t2")
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return create(Node(node, name="wait").to())


async def test_the_event_op_carries_exactly_the_documented_fields(serve: Serve) -> None:
    fields_column = doc_row("event", "### Server → client").split("|")[2]
    documented = set(re.findall(r"`(\w+)`: ", fields_column))
    async with (
        serve(waiting_flow()) as base,
        client(base) as reader,
        client(base) as writer,
        asyncio.timeout(20),
    ):
        await reader.send("sub_topic", pattern="jobs.>", sub_id="s1")
        # A ping answered means the subscription is in place (ops run in order).
        await reader.send("ping", ref="p")
        assert (await reader.until("pong"))["ref"] == "p"
        await writer.send("publish", topic="jobs.a", data={"ok": True})
        event = await reader.until("event")
    assert set(event) - {"op"} == documented
    assert (event["topic"], event["data"], event["headers"]) == ("jobs.a", {"ok": True}, {})
    assert isinstance(event["offset"], int)
    assert isinstance(event["ts"], int)


async def test_start_needs_the_scopes_the_doc_names(serve: Serve) -> None:
    documented = set(re.findall(r"`(streams:\w+)`", doc_row("start", "### Client → server")))
    keys = {
        "k-start-only-0123456": {"tenant": "acme", "scopes": ["streams:start"]},
        "k-start-read-0123456": {"tenant": "acme", "scopes": ["streams:start", "streams:read"]},
    }
    flow = waiting_flow()
    settings = EdgeSettings(authenticator=ApiKeyAuthenticator(keys))
    async with serve(flow, settings) as base, asyncio.timeout(20):
        async with client(base, query="access_token=k-start-only-0123456") as c:
            await c.send("start", ref="r1", headers=HEADERS)
            refused = await c.recv()
            assert (refused["op"], refused["code"], refused["ref"]) == ("error", "forbidden", "r1")
            assert "streams:read" in refused["message"]
            assert flow.streams() == []  # refused before any run started
        async with client(base, query="access_token=k-start-read-0123456") as c:
            await c.start(None)
    assert documented == {"streams:start", "streams:read"}


async def test_subscribe_without_from_seq_starts_at_the_live_head(serve: Serve) -> None:
    doc = doc_row("subscribe", "### Client → server")
    assert "optional (the live head)" in doc
    assert Subscribe.__doc__ is not None
    assert "live head" in Subscribe.__doc__
    async with (
        serve(waiting_flow()) as base,
        client(base) as starter,
        client(base) as late,
        asyncio.timeout(20),
    ):
        sid = await starter.start(None)
        assert [(await starter.until("chunk"))["seq"] for _ in range(2)] == [0, 1]
        await late.send("subscribe", stream_id=sid)
        await late.send("ping", ref="p")
        await late.until("pong")
        await starter.send("input", stream_id=sid, data="go")
        first = await late.recv()
        assert (first["op"], first["seq"], first["text"]) == ("chunk", 2, "t2")
        assert (await late.recv())["op"] == "end"
