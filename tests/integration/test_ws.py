"""The WebSocket contract over a real socket: ops, credit, pause, input, sessions, hygiene."""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from icefloe import Context, Limits, Message, Node, create
from icefloe.core.wire_errors import CloseReason, close_frame
from icefloe.runtime.flow import Flow
from icefloe.transport.app import EdgeSettings
from icefloe.transport.auth import ApiKeyAuthenticator
from icefloe.transport.limits import EdgeLimits
from icefloe.transport.websocket import WsSettings

Serve = Any  # the serve fixture of conftest.py
JSON = "icefloe.v1.json"
MSGPACK = "icefloe.v1.msgpack"
HEADERS = {"tenant": "acme"}


class Counter:
    """A flow whose runs emit 't0'..'t{n-1}' (payload n) then done, counting emits."""

    def __init__(self, buffer: int = 64) -> None:
        self.emitted = 0

        async def count(msg: Message, ctx: Context) -> None:
            for i in range(int(msg.payload)):
                await ctx.emit_chunk(parent=msg, text=f"t{i}")
                self.emitted += 1
            await ctx.emit_chunk(parent=msg, text="", done=True)

        self.flow = create(Node(count, name="count").to(), limits=Limits(stream_buffer=buffer))


def ws_url(base: str, query: str = "") -> str:
    return base.replace("http://", "ws://") + "/v1/ws" + (f"?{query}" if query else "")


class Client:
    """A thin test client: JSON or msgpack ops in, decoded dicts out."""

    def __init__(self, ws: ClientConnection, fmt: str) -> None:
        self.ws = ws
        self.fmt = fmt

    async def send(self, op: str, **fields: Any) -> None:
        body = {"op": op, **fields}
        if self.fmt == MSGPACK:
            await self.ws.send(msgspec.msgpack.encode(body))
        else:
            await self.ws.send(json.dumps(body))

    async def recv(self) -> dict[str, Any]:
        frame = await self.ws.recv()
        if isinstance(frame, bytes):
            decoded = msgspec.msgpack.decode(frame)
        else:
            decoded = json.loads(frame)
        assert isinstance(decoded, dict)
        return decoded

    async def until(self, op: str) -> dict[str, Any]:
        while True:
            msg = await self.recv()
            if msg["op"] == op:
                return msg

    async def start(self, payload: Any, ref: str = "r1") -> str:
        await self.send("start", ref=ref, payload=payload, headers=HEADERS)
        started = await self.recv()
        assert started == {"op": "started", "ref": ref, "stream_id": started["stream_id"]}
        return str(started["stream_id"])


@asynccontextmanager
async def client(
    base: str, fmt: str = JSON, *, query: str = "", **kwargs: Any
) -> AsyncIterator[Client]:
    ws = await connect(ws_url(base, query), subprotocols=[fmt], **kwargs)  # type: ignore[list-item]
    try:
        assert ws.subprotocol == fmt
        yield Client(ws, fmt)
    finally:
        await close_draining(ws)


async def close_draining(ws: ClientConnection) -> None:
    """Close, discarding what still arrives: the client stops reading when its
    queue is full, and the server's close reply would wait behind the data."""
    closing = asyncio.ensure_future(ws.close())
    try:
        while True:
            await ws.recv()
    except ConnectionClosed:
        pass
    await closing


async def test_start_streams_every_chunk_in_order_in_both_formats(serve: Serve) -> None:
    counter = Counter()
    async with serve(counter.flow) as base:
        for fmt in (JSON, MSGPACK):
            async with asyncio.timeout(20), client(base, fmt) as c:
                await c.send("hello")
                welcome = await c.recv()
                assert welcome["op"] == "welcome"
                assert welcome["window"] == 256
                sid = await c.start(100)
                chunks = [await c.recv() for _ in range(101)]
                assert [ch["seq"] for ch in chunks] == list(range(101))
                assert {ch["stream_id"] for ch in chunks} == {sid}
                assert [ch["text"] for ch in chunks[:-1]] == [f"t{i}" for i in range(100)]
                assert [ch["op"] for ch in chunks] == ["chunk"] * 100 + ["end"]
                await c.send("ping", ref="p")
                assert await c.recv() == {"op": "pong", "ref": "p"}


async def test_credit_stops_the_stream_and_blocks_the_producer(serve: Serve) -> None:
    counter = Counter(buffer=16)
    # The producer may run stream_window chunks ahead of its (blocking) reader.
    settings = EdgeSettings(ws=WsSettings(window=10), stream_window=16)
    async with serve(counter.flow, settings) as base, client(base) as c:
        async with asyncio.timeout(20):
            sid = await c.start(10_000)
            got = [await c.recv() for _ in range(10)]
            assert [g["seq"] for g in got] == list(range(10))
            # The producer runs until the stream's buffer is full, then waits.
            await wait_for(lambda: stalled(counter.flow, sid))
            emitted = counter.emitted
            assert emitted <= 10 + 16 + 1
            held = counter.flow.lookup(sid)
            assert held is not None
            assert held.buffered <= 10 + 16 + 1
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await c.recv()  # nothing more without credit
            assert counter.emitted == emitted  # still blocked: memory flat
            await c.send("credit", stream_id=sid, n=5)
            more = [await c.recv() for _ in range(5)]
            assert [m["seq"] for m in more] == list(range(10, 15))
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await c.recv()
            await c.send("credit", stream_id=sid, n=1_000_000)
            rest = [await c.recv() for _ in range(10_001 - 15)]
            assert [r["seq"] for r in rest] == list(range(15, 10_001))
            assert rest[-1]["op"] == "end"


async def test_credit_past_the_cap_is_capped_not_refused(serve: Serve) -> None:
    counter = Counter()
    settings = EdgeSettings(ws=WsSettings(window=2))
    async with serve(counter.flow, settings) as base, client(base) as c, asyncio.timeout(20):
        sid = await c.start(50)
        assert [(await c.recv())["seq"] for _ in range(2)] == [0, 1]
        for _ in range(2):  # 2 * (2**31 - 1) in all: held at 2**31 - 1
            await c.send("credit", stream_id=sid, n=2**31 - 1, ref="big")
        rest = [await c.recv() for _ in range(49)]
        assert [r["seq"] for r in rest] == list(range(2, 51))  # no error among them
        assert rest[-1]["op"] == "end"


async def test_subscribing_to_a_stream_followed_already_is_a_conflict(serve: Serve) -> None:
    counter = Counter()
    async with serve(counter.flow) as base, client(base) as c, asyncio.timeout(20):
        sid = await c.start(1_000_000)
        await c.send("subscribe", stream_id=sid, from_seq=0, ref="again")
        err = await c.until("error")
        assert (err["code"], err["ref"]) == ("conflict", "again")
        await c.send("cancel", stream_id=sid)
        end = await c.until("error")
        assert (end["code"], end["stream_id"]) == ("cancelled", sid)  # still followed once


def stalled(flow: Flow, sid: str) -> bool:
    stats = flow.lookup(sid)
    return stats is not None and stats.credit == 0


async def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


async def test_pause_and_resume_lose_nothing(serve: Serve) -> None:
    counter = Counter()
    async with serve(counter.flow) as base, client(base) as c, asyncio.timeout(20):
        sid = await c.start(2000)
        seqs: list[int] = []

        async def take() -> None:
            msg = await c.recv()
            assert msg["op"] in ("chunk", "end")
            seqs.append(msg["seq"])
            if msg["seq"] % 200 == 0:  # keep credit ahead of the stream
                await c.send("credit", stream_id=sid, n=256)

        for _ in range(5):
            await take()
        await c.send("pause", stream_id=sid)
        # Chunks already in flight before the pause may still arrive; then silence.
        while True:
            try:
                async with asyncio.timeout(0.3):
                    await take()
            except TimeoutError:
                break
        paused_at = len(seqs)
        await c.send("resume", stream_id=sid)
        while seqs[-1] != 2000:
            await take()
        assert seqs == list(range(2001))
        assert paused_at < 2001


async def test_input_reaches_the_running_node_and_changes_its_output(serve: Serve) -> None:
    async def echo(msg: Message, ctx: Context) -> None:
        await ctx.emit_chunk(parent=msg, text="ready")
        async for data in ctx.inputs(parent=msg):
            if data == {"action": "stop"}:
                break
            await ctx.emit_chunk(parent=msg, text=f"you said {data}")
        await ctx.emit_chunk(parent=msg, text="bye", done=True)

    flow = create(Node(echo, name="echo").to())
    async with serve(flow) as base, client(base) as c, asyncio.timeout(20):
        sid = await c.start(None)
        assert (await c.recv())["text"] == "ready"
        await c.send("input", stream_id=sid, data="hello")
        assert (await c.recv())["text"] == "you said hello"
        await c.send("input", stream_id=sid, data={"action": "stop"})
        end = await c.recv()
        assert (end["op"], end["text"]) == ("end", "bye")
        await c.send("input", stream_id=sid, data="too late", ref="late")
        err = await c.recv()
        assert err["op"] == "error"
        assert err["code"] in ("stream_closed", "not_found")
        assert err["ref"] == "late"


async def test_cancel_ends_the_stream_with_cancelled(serve: Serve) -> None:
    counter = Counter()
    async with serve(counter.flow) as base, client(base) as c, asyncio.timeout(20):
        sid = await c.start(1_000_000)
        await c.recv()
        await c.send("cancel", stream_id=sid)
        err = await c.until("error")
        assert (err["code"], err["stream_id"]) == ("cancelled", sid)


async def test_session_resume_over_1000_disconnects_gives_every_seq_once(serve: Serve) -> None:
    total = 10_000
    counter = Counter()
    rng = random.Random(7)
    cuts = sorted(rng.sample(range(1, total), int(os.environ.get("WS_CUTS", "1000"))))
    # A thousand reconnects in a few seconds: the per-address request rate is off.
    settings = EdgeSettings(edge_limits=EdgeLimits(requests_per_s=None))
    async with serve(counter.flow, settings) as base, asyncio.timeout(120):
        seen: list[int] = []
        async with client(base) as c:
            await c.send("hello")
            session = (await c.recv())["session_id"]
            sid = await c.start(total)
        for cut in [*cuts, total + 1]:
            async with client(base) as c:
                await c.send("hello", session_id=session, resume=True)
                welcome = await c.recv()
                assert welcome["resumed"] is True
                while not seen or seen[-1] < min(cut, total):
                    msg = await c.recv()
                    if msg["op"] not in ("chunk", "end"):
                        continue
                    seen.append(msg["seq"])
                    await c.send("ack", stream_id=sid, seq=msg["seq"])
                    if msg["seq"] % 128 == 0:
                        await c.send("credit", stream_id=sid, n=128)
        assert seen == list(range(total + 1))


async def test_resuming_a_session_held_elsewhere_closes_the_old_connection_with_4000(
    serve: Serve,
) -> None:
    counter = Counter()
    async with serve(counter.flow) as base, asyncio.timeout(20), client(base) as old:
        await old.send("hello")
        session = (await old.recv())["session_id"]
        async with client(base) as new:
            await new.send("hello", session_id=session, resume=True)
            welcome = await new.recv()
            assert (welcome["session_id"], welcome["resumed"]) == (session, True)
            with pytest.raises(ConnectionClosed) as closed:
                await old.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
                4000,
                "session resumed elsewhere",
            )
            await new.send("ping", ref="still")
            assert await new.recv() == {"op": "pong", "ref": "still"}


async def test_an_expired_or_unknown_session_gets_an_error_and_a_fresh_one(serve: Serve) -> None:
    counter = Counter()
    async with serve(counter.flow) as base, client(base) as c, asyncio.timeout(20):
        await c.send("hello", session_id="f" * 32, resume=True)
        err = await c.recv()
        assert err["op"] == "error"
        assert err["code"] == "session_expired"
        welcome = await c.recv()
        assert welcome["op"] == "welcome"
        assert welcome["resumed"] is False
        assert welcome["session_id"] != "f" * 32


@pytest.mark.parametrize(
    "frame",
    [
        "{not json",
        '{"op": "warp"}',
        '{"op": "credit", "stream_id": "x", "n": "many"}',
        '{"op": "credit", "stream_id": "x", "n": -1}',
        "[1, 2, 3]",
        '"just a string"',
        "",
        b"\x00\x01binary on a json socket",
    ],
)
async def test_bad_messages_get_bad_request_and_the_connection_stays(
    serve: Serve, frame: str | bytes
) -> None:
    counter = Counter()
    async with serve(counter.flow) as base, client(base) as c, asyncio.timeout(20):
        await c.ws.send(frame)
        err = await c.recv()
        assert (err["op"], err["code"]) == ("error", "bad_request")
        await c.send("ping")
        assert (await c.recv())["op"] == "pong"


async def test_a_flood_of_bad_messages_closes_with_1008(serve: Serve) -> None:
    counter = Counter()
    async with serve(counter.flow) as base, client(base) as c, asyncio.timeout(20):
        with pytest.raises(ConnectionClosed) as closed:
            await send_bad_until_closed(c)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
        # The reason docs/websocket.md gives for it.
        assert closed.value.rcvd.reason == "too many malformed messages"
        assert close_frame(CloseReason.BAD_MESSAGE_FLOOD) == (1008, "too many malformed messages")


async def send_bad_until_closed(c: Client) -> None:
    for _ in range(1000):
        await c.ws.send("{bad")
        await c.recv()


async def test_a_frame_over_max_frame_closes_with_1009(serve: Serve) -> None:
    counter = Counter()
    settings = EdgeSettings(ws=WsSettings(max_frame=4096))
    async with serve(counter.flow, settings) as base, client(base) as c, asyncio.timeout(20):
        await c.send("input", stream_id="x", data="y" * 10_000)
        with pytest.raises(ConnectionClosed) as closed:
            await c.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009


async def test_deflate_is_negotiated_when_offered(serve: Serve) -> None:
    counter = Counter()
    async with (
        serve(counter.flow) as base,
        client(base, compression="deflate") as c,
        asyncio.timeout(20),
    ):
        assert "permessage-deflate" in (
            c.ws.response.headers.get("Sec-WebSocket-Extensions", "") if c.ws.response else ""
        )
        await c.start(50)
        chunks = [await c.recv() for _ in range(51)]
        assert chunks[-1]["op"] == "end"
        async with client(base, compression=None) as c:
            assert c.ws.response is not None
            assert "Sec-WebSocket-Extensions" not in c.ws.response.headers


async def test_unknown_subprotocol_only_is_refused(serve: Serve) -> None:
    counter = Counter()
    async with serve(counter.flow) as base, asyncio.timeout(20):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(base), subprotocols=["chat.v9"]):  # type: ignore[list-item]
                pass
        assert refused.value.response.status_code == 400


# -- security ------------------------------------------------------------------------

ACME, GLOBEX = "k-acme-0123456789", "k-globex-0123456789"
KEYS = {
    ACME: {"tenant": "acme", "scopes": ["streams:start", "streams:read", "streams:cancel"]},
    GLOBEX: {"tenant": "globex", "scopes": ["streams:start", "streams:read", "streams:cancel"]},
    "k-acme-readonly-0123": {"tenant": "acme", "scopes": ["streams:read"]},
}


def secured(**ws: Any) -> EdgeSettings:
    return EdgeSettings(authenticator=ApiKeyAuthenticator(KEYS), ws=WsSettings(**ws))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("token", [None, "wrong-key-0123456789"])
async def test_missing_or_bad_credentials_are_refused_at_the_handshake(
    serve: Serve, token: str | None
) -> None:
    counter = Counter()
    async with serve(counter.flow, secured()) as base, asyncio.timeout(20):
        headers = bearer(token) if token else {}
        with pytest.raises(InvalidStatus) as refused:
            async with client(base, additional_headers=headers):
                pass
        assert refused.value.response.status_code == 401


async def test_token_in_the_query_string_is_accepted(serve: Serve) -> None:
    counter = Counter()
    async with (
        serve(counter.flow, secured()) as base,
        client(base, query=f"access_token={ACME}") as c,
        asyncio.timeout(20),
    ):
        await c.start(3)
        assert [(await c.recv())["seq"] for _ in range(4)] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("origin", "allowed", "ok"),
    [
        ("https://evil.example", (), False),
        ("https://evil.example", ("https://app.example",), False),
        ("https://app.example", ("https://app.example",), True),
        (None, (), True),
    ],
)
async def test_origin_is_checked_against_allow_origin(
    serve: Serve, origin: str | None, allowed: tuple[str, ...], ok: bool
) -> None:
    counter = Counter()
    settings = EdgeSettings(allow_origins=allowed)
    async with serve(counter.flow, settings) as base, asyncio.timeout(20):
        kwargs: dict[str, Any] = {"origin": origin} if origin else {}
        if ok:
            async with client(base, **kwargs) as c:
                await c.send("ping")
                assert (await c.recv())["op"] == "pong"
        else:
            with pytest.raises(InvalidStatus) as refused:
                async with client(base, **kwargs):
                    pass
            assert refused.value.response.status_code == 403


async def test_same_origin_is_allowed_without_allow_origin(serve: Serve) -> None:
    counter = Counter()
    async with (
        serve(counter.flow) as base,
        client(base, origin=base) as c,  # type: ignore[arg-type]
        asyncio.timeout(20),
    ):
        await c.send("ping")
        assert (await c.recv())["op"] == "pong"


@pytest.mark.parametrize("op", ["subscribe", "cancel", "input", "credit", "pause", "ack"])
async def test_another_tenants_stream_is_not_found_for_every_op(serve: Serve, op: str) -> None:
    counter = Counter()
    async with (
        serve(counter.flow, secured()) as base,
        client(base, additional_headers=bearer(ACME)) as owner,
        asyncio.timeout(20),
    ):
        await owner.send("start", ref="a", payload=1_000_000, headers=HEADERS)
        sid = (await owner.recv())["stream_id"]
        async with client(base, additional_headers=bearer(GLOBEX)) as other:
            fields: dict[str, Any] = {"stream_id": sid, "ref": "x"}
            fields.update({"input": {"data": 1}, "credit": {"n": 5}, "ack": {"seq": 0}}.get(op, {}))
            await other.send(op, **fields)
            err = await other.until("error")
            assert (err["code"], err["ref"]) == ("not_found", "x")
        status = counter.flow.lookup(sid)
        assert status is not None
        assert status.state == "running"  # the foreign cancel did nothing


async def test_starting_for_another_tenant_is_forbidden(serve: Serve) -> None:
    counter = Counter()
    async with (
        serve(counter.flow, secured()) as base,
        client(base, additional_headers=bearer(ACME)) as c,
        asyncio.timeout(20),
    ):
        await c.send("start", ref="s", payload=1, headers={"tenant": "globex"})
        err = await c.recv()
        assert (err["code"], err["ref"]) == ("forbidden", "s")


async def test_a_missing_scope_is_forbidden_per_op(serve: Serve) -> None:
    counter = Counter()
    async with (
        serve(counter.flow, secured()) as base,
        client(base, additional_headers=bearer("k-acme-readonly-0123")) as c,
        asyncio.timeout(20),
    ):
        await c.send("start", ref="s", payload=1, headers=HEADERS)
        err = await c.recv()
        assert (err["code"], err["ref"]) == ("forbidden", "s")


async def test_credit_and_ack_crossing_the_end_are_no_ops(serve: Serve) -> None:
    counter = Counter()
    async with serve(counter.flow) as base, client(base) as c, asyncio.timeout(20):
        sid = await c.start(3)
        chunks = [await c.recv() for _ in range(4)]
        assert chunks[-1]["op"] == "end"
        for op, extra in (("credit", {"n": 5}), ("pause", {}), ("ack", {"seq": 3})):
            await c.send(op, stream_id=sid, **extra)
        await c.send("ack", stream_id=sid, seq=3)  # after the end was acked
        await c.send("ping", ref="after")
        assert await c.recv() == {"op": "pong", "ref": "after"}  # no error came first


async def test_a_start_over_the_stream_limit_starts_nothing(serve: Serve) -> None:
    counter = Counter()
    settings = EdgeSettings(ws=WsSettings(max_streams=1))
    async with serve(counter.flow, settings) as base, client(base) as c, asyncio.timeout(20):
        await c.start(1_000_000)
        await c.send("start", ref="second", payload=1, headers=HEADERS)
        err = await c.until("error")
        assert (err["code"], err["ref"]) == ("limit_exceeded", "second")
        assert counter.flow.stats().streams.admitted == 1
