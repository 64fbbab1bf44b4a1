"""``unsubscribe`` and ``unsub_topic`` over a real socket: following stops, the run goes on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from test_ws import close_draining
from websockets.asyncio.client import ClientConnection, connect

from icefloe import Context, Limits, Message, Node, NodePolicy, create
from icefloe.runtime.flow import Flow
from icefloe.transport.app import EdgeSettings
from icefloe.transport.auth import ApiKeyAuthenticator

Serve = Any  # the serve fixture of conftest.py
HEADERS = {"tenant": "acme"}
SCOPES = ["streams:start", "streams:read", "streams:cancel", "topics:read", "topics:publish"]
ACME, GLOBEX = "k-acme-unsub-0123456789", "k-globex-unsub-0123456789"
KEYS = {ACME: {"tenant": "acme", "scopes": SCOPES}, GLOBEX: {"tenant": "globex", "scopes": SCOPES}}


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

    async def until(self, op: str) -> list[dict[str, Any]]:
        """Every message up to and including the first ``op``."""
        got: list[dict[str, Any]] = []
        while not got or got[-1]["op"] != op:
            got.append(await self.recv())
        return got

    async def start(self, payload: Any, ref: str = "r1") -> str:
        await self.send("start", ref=ref, payload=payload, headers=HEADERS)
        started = await self.recv()
        assert (started["op"], started["ref"]) == ("started", ref)
        return str(started["stream_id"])

    async def quiet(self, ref: str = "q") -> None:
        """Assert that nothing but the ``pong`` comes back to a ``ping``."""
        await self.send("ping", ref=ref)
        assert await self.recv() == {"op": "pong", "ref": ref}


@asynccontextmanager
async def client(base: str, key: str | None = None) -> AsyncIterator[Client]:
    url = base.replace("http://", "ws://") + "/v1/ws"
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    ws = await connect(url, subprotocols=["icefloe.v1.json"], additional_headers=headers)  # type: ignore[list-item]
    try:
        yield Client(ws)
    finally:
        await close_draining(ws)


def echo_flow() -> Flow:
    """Runs that emit 'ready', then one chunk per input, and end on input 'stop';
    several at once (each holds a worker while it waits for input)."""

    async def echo(msg: Message, ctx: Context) -> None:
        await ctx.emit_chunk(parent=msg, text="ready")
        async for data in ctx.inputs(parent=msg):
            if data == "stop":
                break
            await ctx.emit_chunk(parent=msg, text=str(data))
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return create(Node(echo, name="echo", policy=NodePolicy(max_concurrency=8)).to())


def counter_flow() -> Flow:
    async def count(msg: Message, ctx: Context) -> None:
        for i in range(int(msg.payload)):
            await ctx.emit_chunk(parent=msg, text=f"t{i}")
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return create(Node(count, name="count").to(), limits=Limits(stream_buffer=64))


def chunks_of(messages: list[dict[str, Any]], sid: str) -> list[dict[str, Any]]:
    return [m for m in messages if m["op"] in ("chunk", "end") and m["stream_id"] == sid]


async def test_unsubscribe_stops_this_connection_and_the_other_reader_gets_everything(
    serve: Serve,
) -> None:
    async with (
        serve(echo_flow()) as base,
        asyncio.timeout(20),
        client(base) as a,
        client(base) as b,
    ):
        sid = await a.start(None)
        assert (await a.recv())["text"] == "ready"
        await b.send("subscribe", stream_id=sid, from_seq=0)
        assert (await b.recv())["text"] == "ready"
        await a.send("input", stream_id=sid, data="one")
        assert (await a.recv())["text"] == "one"
        assert (await b.recv())["text"] == "one"
        await a.send("unsubscribe", stream_id=sid, ref="u")
        assert await a.recv() == {"op": "unsubscribed", "stream_id": sid, "ref": "u"}
        for word in ("two", "three", "stop"):
            await b.send("input", stream_id=sid, data=word)
        rest = [await b.recv() for _ in range(3)]
        assert [(m["op"], m["seq"], m["text"]) for m in rest] == [
            ("chunk", 2, "two"),
            ("chunk", 3, "three"),
            ("end", 4, ""),
        ]
        await a.quiet()  # nothing of the stream reached the unsubscribed connection
        # Ops crossing the unsubscribe on the wire are no-ops, as across an end.
        await a.send("credit", stream_id=sid, n=5)
        await a.send("ack", stream_id=sid, seq=1)
        await a.quiet("after")


async def test_unsubscribe_mid_flood_drops_the_queue_and_the_run_goes_on(serve: Serve) -> None:
    total = 5000
    async with (
        serve(counter_flow()) as base,
        asyncio.timeout(30),
        client(base) as a,
        client(base) as b,
    ):
        sid = await a.start(total)
        await b.send("subscribe", stream_id=sid, from_seq=0)
        await a.send("credit", stream_id=sid, n=10**6)
        first = await a.recv()
        assert (first["op"], first["seq"]) == ("chunk", 0)
        await a.send("unsubscribe", stream_id=sid)
        before = await a.until("unsubscribed")
        seqs = [m["seq"] for m in chunks_of(before, sid)]
        assert seqs == list(range(1, len(seqs) + 1))  # in order, then nothing
        assert before[-1] == {"op": "unsubscribed", "stream_id": sid}
        await a.quiet()
        seen: list[int] = []
        while not seen or seen[-1] != total:
            msg = await b.recv()
            assert msg["op"] in ("chunk", "end"), msg
            seen.append(msg["seq"])
            if msg["seq"] % 128 == 0:
                await b.send("credit", stream_id=sid, n=128)
        assert seen == list(range(total + 1))
        await a.quiet("end")


async def test_an_unsubscribed_stream_is_not_restored_on_resume(serve: Serve) -> None:
    async with serve(echo_flow()) as base, asyncio.timeout(20):
        async with client(base) as c:
            await c.send("hello")
            session = (await c.recv())["session_id"]
            dropped = await c.start(None, ref="s1")
            assert (await c.recv())["stream_id"] == dropped
            kept = await c.start(None, ref="s2")
            assert (await c.recv())["stream_id"] == kept
            await c.send("unsubscribe", stream_id=dropped)
            assert (await c.recv())["op"] == "unsubscribed"
        async with client(base) as c:
            await c.send("hello", session_id=session, resume=True)
            welcome = await c.recv()
            assert (welcome["op"], welcome["resumed"]) == ("welcome", True)
            # The kept stream is resent from seq 0 (nothing was acked); then nothing else.
            got = await c.until("chunk")
            assert [(m["stream_id"], m["text"]) for m in got] == [(kept, "ready")]
            await c.quiet()
            await c.send("unsubscribe", stream_id=dropped, ref="x")
            err = await c.recv()
            assert (err["op"], err["code"], err["ref"]) == ("error", "not_found", "x")
            for sid in (dropped, kept):
                await c.send("input", stream_id=sid, data="stop")
            got = await c.until("end")
            assert {m["stream_id"] for m in got if m["op"] in ("chunk", "end")} == {kept}
            await c.quiet("last")


async def test_unknown_or_ended_streams(serve: Serve) -> None:
    async with serve(counter_flow()) as base, asyncio.timeout(20), client(base) as c:
        await c.send("unsubscribe", stream_id="no-such-stream", ref="u1")
        err = await c.recv()
        assert (err["op"], err["code"], err["ref"]) == ("error", "not_found", "u1")
        sid = await c.start(3)
        assert [(await c.recv())["seq"] for _ in range(4)] == [0, 1, 2, 3]
        # Crossing the end on the wire: answered, no error; and again (idempotent).
        for ref in ("u2", "u3"):
            await c.send("unsubscribe", stream_id=sid, ref=ref)
            assert await c.recv() == {"op": "unsubscribed", "stream_id": sid, "ref": ref}
        await c.send("unsubscribe", stream_id="bad id")
        assert (await c.recv())["code"] == "bad_request"
        # A stream can be followed again after an unsubscribe.
        live = await c.start(1_000_000, ref="r2")
        await c.recv()
        await c.send("unsubscribe", stream_id=live)
        await c.until("unsubscribed")
        await c.send("subscribe", stream_id=live, from_seq=1)
        msg = await c.recv()
        assert (msg["op"], msg["stream_id"], msg["seq"]) == ("chunk", live, 1)


async def publish(writer: Client, topic: str, data: Any) -> None:
    await writer.send("publish", topic=topic, data=data)
    await writer.quiet()  # ops are handled in order: the event is in the hub


async def test_unsub_topic_stops_its_events_only(serve: Serve) -> None:
    async with (
        serve(echo_flow()) as base,
        asyncio.timeout(20),
        client(base) as reader,
        client(base) as writer,
    ):
        await reader.send("sub_topic", pattern="jobs.>", sub_id="named")
        await reader.send("sub_topic", pattern="jobs.*")  # no sub_id: as before
        await reader.send("sub_topic", pattern="x", sub_id="named", ref="dup")
        err = await reader.recv()  # also: both subscriptions are in place
        assert (err["code"], err["ref"]) == ("conflict", "dup")
        await publish(writer, "jobs.a", 1)
        events = [await reader.recv() for _ in range(2)]
        assert [(e["op"], e["topic"]) for e in events] == [("event", "jobs.a")] * 2
        await reader.send("unsub_topic", sub_id="named", ref="u")
        assert await reader.recv() == {"op": "unsubscribed", "sub_id": "named", "ref": "u"}
        await publish(writer, "jobs.b", 2)
        event = await reader.recv()
        assert (event["op"], event["topic"]) == ("event", "jobs.b")
        await reader.send("unsub_topic", sub_id="named", ref="again")
        err = await reader.recv()  # the pong-like barrier: no second jobs.b came before it
        assert (err["op"], err["code"], err["ref"]) == ("error", "not_found", "again")
        await reader.quiet()
        # The name is free again.
        await reader.send("sub_topic", pattern="jobs.b", sub_id="named")
        await reader.quiet("sub")
        await publish(writer, "jobs.b", 3)
        events = [await reader.recv() for _ in range(2)]
        assert [e["data"] for e in events] == [3, 3]


async def test_another_tenant_cannot_unsubscribe_anything(serve: Serve) -> None:
    settings = EdgeSettings(authenticator=ApiKeyAuthenticator(KEYS))
    async with (
        serve(echo_flow(), settings) as base,
        asyncio.timeout(20),
        client(base, ACME) as owner,
        client(base, GLOBEX) as other,
    ):
        await owner.send("hello")
        session = (await owner.recv())["session_id"]
        sid = await owner.start(None)
        assert (await owner.recv())["text"] == "ready"
        await owner.send("sub_topic", pattern="news", sub_id="n1")
        await owner.quiet()
        await other.send("sub_topic", pattern="news", sub_id="n2")
        await other.quiet()
        await other.send("unsubscribe", stream_id=sid, ref="x")
        await other.send("unsub_topic", sub_id="n1", ref="y")
        errors = [await other.recv() for _ in range(2)]
        assert [(e["code"], e["ref"]) for e in errors] == [("not_found", "x"), ("not_found", "y")]
        await other.send("hello", session_id=session, resume=True)  # foreign: refused
        assert (await other.recv())["code"] == "session_expired"
        assert (await other.recv())["resumed"] is False
        await other.send("unsubscribe", stream_id=sid, ref="z")
        assert (await other.recv())["code"] == "not_found"
        # The owner still follows both.
        await owner.send("input", stream_id=sid, data="still")
        assert (await owner.recv())["text"] == "still"
        await owner.send("publish", topic="news", data="hi")
        event = await owner.recv()
        assert (event["op"], event["data"]) == ("event", "hi")
        await other.quiet("g")  # globex's subscription of the same name saw nothing of acme's
