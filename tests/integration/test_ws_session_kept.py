"""With a store, a WebSocket session's new subscription is kept before the
client hears of it: the ``started`` answer to a ``start`` and the first chunk
of a ``subscribe`` go out only once the store holds the session following
that stream. Acks stay written behind. Otherwise a crash in the few
milliseconds after ``started`` left a client holding a stream id and a
session id that the restarted server had never heard of (``session_expired``),
which the SIGKILL tests of tests/integration/test_durable_kill.py hit under
load. The store here answers each session write 0.3 s late."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from icefloe import Context, Message, Node, NodePolicy, create
from icefloe.store import MemoryStore, records
from icefloe.store.faults import Fault, FaultyStore

TENANT = {"tenant": "acme"}
LATE_S = 0.3
Serve = Any


def slow_session_store() -> FaultyStore:
    store = FaultyStore(MemoryStore())
    store.inject("put_session", Fault.delay(LATE_S))
    return store


def flow(store: FaultyStore) -> Any:
    async def words(msg: Message, ctx: Context) -> None:
        for i in range(5):
            await ctx.emit_chunk(parent=msg, text=f"w{i} ")
        await ctx.emit_chunk(parent=msg, text="", done=True)

    node = Node(words, name="words", policy=NodePolicy(reliability="at_least_once"))
    return create(node.to(), store=store)


async def kept_streams(store: FaultyStore, session: str) -> dict[str, int]:
    """The streams the stored ``session`` follows (empty: not stored)."""
    held = await store.inner.get_session(session)
    if held is None:
        return {}
    kept = msgspec.msgpack.decode(records.decode_session(held))
    return dict(kept["streams"])


@contextlib.asynccontextmanager
async def ws_client(url: str) -> AsyncIterator[ClientConnection]:
    ws = await connect(
        url.replace("http://", "ws://") + "/v1/ws", subprotocols=[Subprotocol("icefloe.v1.json")]
    )
    try:
        yield ws
    finally:
        closing = asyncio.ensure_future(ws.close())
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()
        await closing


async def test_started_goes_out_once_the_session_follows_the_stream_in_the_store(
    serve: Serve,
) -> None:
    store = slow_session_store()
    async with asyncio.timeout(20), serve(flow(store)) as url, ws_client(url) as ws:
        await ws.send(json.dumps({"op": "hello"}))
        session = json.loads(await ws.recv())["session_id"]
        await ws.send(json.dumps({"op": "start", "ref": "r", "headers": TENANT}))
        started = json.loads(await ws.recv())
        assert started["op"] == "started", started
        assert started["stream_id"] in await kept_streams(store, session)
        frames = [json.loads(await ws.recv()) for _ in range(6)]
    assert [f["seq"] for f in frames] == list(range(6))


async def test_a_subscribes_first_chunk_goes_out_once_the_session_is_kept(serve: Serve) -> None:
    store = slow_session_store()
    async with asyncio.timeout(20), serve(flow(store)) as url:
        async with ws_client(url) as starter:
            await starter.send(json.dumps({"op": "start", "ref": "r", "headers": TENANT}))
            sid = json.loads(await starter.recv())["stream_id"]
        async with ws_client(url) as ws:
            await ws.send(json.dumps({"op": "hello"}))
            session = json.loads(await ws.recv())["session_id"]
            await ws.send(json.dumps({"op": "subscribe", "stream_id": sid, "from_seq": 0}))
            first = json.loads(await ws.recv())
            assert first["op"] == "chunk", first
            assert (await kept_streams(store, session)).get(sid) == -1
            rest = [json.loads(await ws.recv()) for _ in range(5)]
    assert [f["seq"] for f in [first, *rest]] == list(range(6))
