"""``icefloe tail`` follows a stream to its end and resumes after a cut."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import httpx
from rich.console import Console

from icefloe import Context, Message, Node, create
from icefloe.cli.tail import tail_stream
from icefloe.transport.app import EdgeSettings
from icefloe.transport.streaming import PumpSettings

Serve = Any  # the serve fixture of tests/conftest.py


def words_flow(gate: asyncio.Event) -> Any:
    async def words(msg: Message, ctx: Context) -> None:
        for i in range(int(msg.payload)):
            if i == 5:
                await gate.wait()  # the test cuts the connection here
            await ctx.emit_chunk(parent=msg, text=f"w{i} ")
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return create(Node(words, name="words").to())


async def test_tail_prints_every_token_once_across_a_reconnect(serve: Serve) -> None:
    gate = asyncio.Event()
    settings = EdgeSettings(pump=PumpSettings(retry_ms=50))
    flow = words_flow(gate)
    async with serve(flow, settings) as url, httpx.AsyncClient(base_url=url) as c:
        r = await c.post("/v1/streams", json={"payload": 12, "headers": {"tenant": "t"}})
        sid = r.json()["stream_id"]
        out, err = io.StringIO(), io.StringIO()
        tail = asyncio.ensure_future(
            tail_stream(f"{url}/v1/streams/{sid}", None, 0, Console(file=out), Console(file=err))
        )
        async with asyncio.timeout(10):
            while "w4" not in out.getvalue():
                await asyncio.sleep(0.01)
            # Cut the tail's response mid-stream from the server side: its
            # reader is closed, the body ends without an end event.
            state = flow._registry.get(sid)
            assert state is not None
            assert state.subscribers == 1
            (reader,) = state.readers()
            reader.close()
            gate.set()
            code = await tail
        ends = (await c.get("/metrics")).text
    assert code == 0
    assert out.getvalue().split() == [f"w{i}" for i in range(12)]
    assert err.getvalue() == ""
    # Two responses: the one cut at w4 and the resumed one that saw the end.
    assert 'icefloe_http_stream_ends_total{outcome="done"} 2.0' in ends
