"""The in-memory WebSocket session: the edge's /v1/ws protocol end to end
(start, chunks in order, input, cancel), a denied handshake, and clean-up."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import pytest

import icefloe.testing
from icefloe import Context, Message, Node, create
from icefloe.testing import (
    FakeClock,
    WebSocketClosed,
    WebSocketDenied,
    WebSocketSession,
    websocket_connect,
)

Scope = MutableMapping[str, Any]


async def gated(msg: Message, ctx: Context) -> None:
    await ctx.emit_chunk(parent=msg, text="ask> ")
    async for data in ctx.inputs(parent=msg):
        await ctx.emit_chunk(parent=msg, text=f"[{data}]", done=True)
        return


async def next_op(ws: WebSocketSession, *ops: str) -> dict[str, Any]:
    """The next message whose op is one of ``ops``."""
    async with asyncio.timeout(10):
        while True:
            message = await ws.receive_json()
            assert isinstance(message, dict)
            if message["op"] in ops:
                return message


@pytest.mark.timeout(30)
async def test_start_read_and_input_over_the_in_memory_websocket() -> None:
    flow = create(Node(gated, name="gated").to())
    async with icefloe.testing.open(flow) as t, t.websocket() as ws:
        assert ws.subprotocol == "icefloe.v1.json"
        await ws.send_json({"op": "hello"})
        assert (await next_op(ws, "welcome"))["resumed"] is False
        await ws.send_json({"op": "start", "ref": "r1", "payload": "q", "headers": {"tenant": "t"}})
        sid = (await next_op(ws, "started"))["stream_id"]
        first = await next_op(ws, "chunk", "end")
        assert (first["op"], first["seq"], first["text"]) == ("chunk", 0, "ask> ")
        await ws.send_json({"op": "input", "stream_id": sid, "data": "a"})
        last = await next_op(ws, "chunk", "end")
        assert (last["op"], last["seq"], last["text"]) == ("end", 1, "[a]")


@pytest.mark.timeout(30)
async def test_cancel_over_the_websocket_ends_the_run_for_every_reader() -> None:
    flow = create(Node(gated, name="gated").to())
    async with icefloe.testing.open(flow) as t, t.websocket() as ws:
        await ws.send_json({"op": "start", "ref": "r1", "payload": "q", "headers": {"tenant": "t"}})
        sid = (await next_op(ws, "started"))["stream_id"]
        await next_op(ws, "chunk")
        await ws.send_json({"op": "cancel", "stream_id": sid})
        error = await next_op(ws, "error")
        assert (error["code"], error["stream_id"]) == ("cancelled", sid)
        brief = t.flow.brief(sid)
        assert brief is None or brief.state == "cancelled"


@pytest.mark.timeout(30)
async def test_leaving_the_session_disconnects_and_leaves_no_task() -> None:
    flow = create(Node(gated, name="gated").to())
    async with icefloe.testing.open(flow) as t:
        before = asyncio.all_tasks()
        async with t.websocket() as ws:
            await ws.send_json({"op": "ping", "ref": "p"})
            assert (await next_op(ws, "pong"))["ref"] == "p"
        assert asyncio.all_tasks() == before


async def refuses(scope: Scope, receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.close", "code": 4403, "reason": "go away"})


async def echo_then_close(scope: Scope, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    message = await receive()
    await send({"type": "websocket.send", "bytes": message["text"].encode()})
    await send({"type": "websocket.close", "code": 1000, "reason": "bye"})


async def deaf(scope: Scope, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    await asyncio.Event().wait()


@pytest.mark.timeout(30)
async def test_a_denied_handshake_raises_with_the_apps_close() -> None:
    with pytest.raises(WebSocketDenied) as caught:
        async with websocket_connect(refuses):
            pass
    assert (caught.value.code, caught.value.reason) == (4403, "go away")


@pytest.mark.timeout(30)
async def test_the_apps_close_is_raised_from_receive_with_its_code() -> None:
    async with websocket_connect(echo_then_close, "/x") as ws:
        await ws.send_text("hi")
        assert await ws.receive() == b"hi"
        with pytest.raises(WebSocketClosed) as caught:
            await ws.receive()
        assert (caught.value.code, caught.value.reason) == (1000, "bye")
        assert ws.closed == (1000, "bye")


def test_an_app_deaf_to_the_disconnect_is_cancelled_after_the_grace() -> None:
    async def main() -> float:
        before = asyncio.all_tasks()
        async with websocket_connect(deaf):
            pass
        assert asyncio.all_tasks() == before
        return asyncio.get_running_loop().time()

    assert FakeClock().run(main()) == 1.0  # CLOSE_GRACE_S
