"""WebSocket streams and sessions across gateways through the backplane (issue 12).

Real ``icefloe serve --backplane`` processes (:mod:`cluster`): a stream
produced on one gateway is subscribed over the WebSocket of another, and a
session opened on one gateway resumes on the others through the round-robin
proxy, each seq delivered once and in order.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from cluster import cluster, round_robin
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

JSON = "icefloe.v1.json"
TENANT = {"tenant": "t1"}


class Ws:
    """A JSON WebSocket client: ops in, decoded dicts out."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, op: str, **fields: Any) -> None:
        await self.ws.send(json.dumps({"op": op, **fields}))

    async def recv(self) -> dict[str, Any]:
        decoded = json.loads(await self.ws.recv())
        assert isinstance(decoded, dict)
        return decoded


@asynccontextmanager
async def ws_client(base: str, headers: dict[str, str] | None = None) -> AsyncIterator[Ws]:
    url = base.replace("http://", "ws://") + "/v1/ws"
    ws = await connect(url, subprotocols=[JSON], additional_headers=headers)  # type: ignore[list-item]
    try:
        yield Ws(ws)
    finally:
        closing = asyncio.ensure_future(ws.close())
        try:
            while True:
                await ws.recv()  # drain: the close reply may wait behind data
        except ConnectionClosed:
            pass
        await closing


async def drain(c: Ws) -> None:
    """Read until the connection closes."""
    while True:
        await c.recv()


async def start(url: str, payload: dict[str, Any]) -> str:
    async with httpx.AsyncClient(base_url=url) as client:
        answer = await client.post("/v1/streams", json={"headers": TENANT, "payload": payload})
        assert answer.status_code == 201, answer.text
        sid: str = answer.json()["stream_id"]
        return sid


async def read_acking(c: Ws, sid: str, seen: list[int], stop_after: int | None) -> bool:
    """Read chunks of ``sid`` (acking each, granting credit) into ``seen``;
    True once the ``end`` chunk came, False after ``stop_after`` chunks."""
    count = 0
    while True:
        msg = await c.recv()
        if msg["op"] == "error":
            raise AssertionError(msg)
        if msg["op"] not in ("chunk", "end"):
            continue
        assert msg["stream_id"] == sid
        seen.append(msg["seq"])
        await c.send("ack", stream_id=sid, seq=msg["seq"])
        if msg["seq"] % 64 == 0:
            await c.send("credit", stream_id=sid, n=64)
        if msg["op"] == "end":
            return True
        count += 1
        if stop_after is not None and count >= stop_after:
            return False


async def test_a_websocket_on_another_gateway_follows_the_stream_with_credit() -> None:
    async with asyncio.timeout(60), cluster(2) as gws:
        n = 600
        sid = await start(gws[0].url, {"n": n, "every": 20, "pause_ms": 5})
        async with ws_client(gws[1].url) as c:
            await c.send("hello")
            assert (await c.recv())["op"] == "welcome"
            await c.send("subscribe", stream_id=sid, from_seq=0)
            seen: list[int] = []
            assert await read_acking(c, sid, seen, None)
        assert seen == list(range(n + 1))


async def test_a_remote_stream_waits_for_credit_and_loses_nothing() -> None:
    async with asyncio.timeout(60), cluster(2, "--window", "10") as gws:
        n = 200
        sid = await start(gws[0].url, {"n": n})
        async with ws_client(gws[1].url) as c:
            await c.send("subscribe", stream_id=sid, from_seq=0)
            got = [await c.recv() for _ in range(10)]
            assert [g["seq"] for g in got] == list(range(10))
            # No credit left: nothing more comes until the client grants some.
            await c.send("ping", ref="p")
            assert await c.recv() == {"op": "pong", "ref": "p"}
            await c.send("credit", stream_id=sid, n=1000)
            seen = [g["seq"] for g in got]
            assert await read_acking(c, sid, seen, None)
        assert seen == list(range(n + 1))


async def test_a_session_resumes_on_every_gateway_with_each_seq_once() -> None:
    async with asyncio.timeout(90), cluster(3) as gws, round_robin(gws) as proxy:
        n = 300
        sid = await start(gws[0].url, {"n": n, "every": 5, "pause_ms": 5})
        seen: list[int] = []
        async with ws_client(proxy) as c:  # gateway 1
            await c.send("hello")
            session = (await c.recv())["session_id"]
            await c.send("subscribe", stream_id=sid, from_seq=0)
            done = await read_acking(c, sid, seen, 30)
        connections = 1
        while not done:
            async with ws_client(proxy) as c:  # the next gateway
                await c.send("hello", session_id=session, resume=True)
                welcome = await c.recv()
                assert (welcome["op"], welcome["resumed"]) == ("welcome", True), welcome
                done = await read_acking(c, sid, seen, 30)
            connections += 1
        assert seen == list(range(n + 1))
        assert connections >= 6  # every gateway resumed it at least twice


async def test_resuming_on_another_gateway_closes_the_old_connection_with_4000() -> None:
    async with asyncio.timeout(60), cluster(2) as gws:
        n = 100_000
        sid = await start(gws[0].url, {"n": n, "every": 1, "pause_ms": 2})
        seen: list[int] = []
        async with ws_client(gws[0].url) as old:
            await old.send("hello")
            session = (await old.recv())["session_id"]
            await old.send("subscribe", stream_id=sid, from_seq=0)
            assert not await read_acking(old, sid, seen, 20)
            # The pong comes after the acks were handled: none is still in flight
            # (acks in flight when the old connection is closed are lost, as locally).
            await old.send("ping", ref="acked")
            while (await old.recv()).get("ref") != "acked":
                pass
            async with ws_client(gws[1].url) as new:
                await new.send("hello", session_id=session, resume=True)
                welcome = await new.recv()
                assert (welcome["session_id"], welcome["resumed"]) == (session, True)
                with pytest.raises(ConnectionClosed) as closed:
                    await drain(old)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 4000
                # The new connection resumes after the last ack the old one had.
                first = await new.recv()
                while first["op"] != "chunk":
                    first = await new.recv()
                assert first["seq"] == seen[-1] + 1
                # A cancel on this gateway ends the run on the producing one.
                await new.send("cancel", stream_id=sid)
                end = await new.recv()
                while end["op"] != "error":
                    end = await new.recv()
                assert (end["code"], end["stream_id"]) == ("cancelled", sid)


async def test_a_session_whose_gateway_died_resumes_on_another_without_a_gap() -> None:
    async with asyncio.timeout(90), cluster(3) as gws:
        n = 300
        sid = await start(gws[0].url, {"n": n, "every": 5, "pause_ms": 10})
        seen: list[int] = []
        async with ws_client(gws[1].url) as c:
            await c.send("hello")
            session = (await c.recv())["session_id"]
            await c.send("subscribe", stream_id=sid, from_seq=0)
            assert not await read_acking(c, sid, seen, 50)
            await c.send("ping", ref="acked")
            while (await c.recv()).get("ref") != "acked":
                pass
            os.kill(gws[1].pid, signal.SIGKILL)  # the gateway holding the session dies
        async with ws_client(gws[2].url) as c:
            await c.send("hello", session_id=session, resume=True)
            welcome = await c.recv()
            assert (welcome["op"], welcome["resumed"]) == ("welcome", True), welcome
            again: list[int] = []
            assert await read_acking(c, sid, again, None)
        # From its last write of the acks on: a chunk acked just before the
        # kill may come again, none is missing.
        assert again[0] <= seen[-1] + 1
        assert sorted(set(seen) | set(again)) == list(range(n + 1))
        assert again == list(range(again[0], n + 1))
