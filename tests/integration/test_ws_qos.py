"""WebSocket QoS over a real socket: zstd, chunk batches, fair sharing by priority, pacing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import zstandard
from test_ws import close_draining
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from icefloe import Context, Limits, Message, Node, NodePolicy, create
from icefloe.core.wszstd import ZstdMessageDecompressor, compress_client_frame
from icefloe.runtime.flow import Flow
from icefloe.transport.app import EdgeSettings
from icefloe.transport.websocket import WsSettings

Serve = Any  # the serve fixture of conftest.py
JSON = "icefloe.v1.json"
MSGPACK = "icefloe.v1.msgpack"
ZSTD = "icefloe.v1.msgpack+zstd"
HEADERS = {"tenant": "acme"}
#: the text of every chunk: equal sizes make byte shares and chunk shares the same
PAD = "x" * 100


def padded_flow(buffer: int = 64) -> Flow:
    """Runs emit ``payload`` chunks of :data:`PAD` (then done), as fast as allowed."""

    async def emit(msg: Message, ctx: Context) -> None:
        for _ in range(int(msg.payload)):
            await ctx.emit_chunk(parent=msg, text=PAD)
        await ctx.emit_chunk(parent=msg, text="", done=True)

    policy = NodePolicy(max_concurrency=8)  # floods must not hold the only worker
    return create(Node(emit, name="emit", policy=policy).to(), limits=Limits(stream_buffer=buffer))


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/v1/ws"


class Client:
    """Ops in; decoded server ops out, a ``chunks`` op kept whole; bytes counted."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.fmt = ws.subprotocol
        self.inflate = ZstdMessageDecompressor() if self.fmt == ZSTD else None
        #: payload bytes of every message received (as on the wire, before inflating)
        self.wire_bytes = 0

    async def send(self, op: str, *, zstd: bool = False, **fields: Any) -> None:
        body = {"op": op, **fields}
        if self.fmt == JSON:
            await self.ws.send(msgspec.json.encode(body).decode())
            return
        frame = msgspec.msgpack.encode(body)
        await self.ws.send(compress_client_frame(frame) if zstd else frame)

    async def recv(self) -> dict[str, Any]:
        frame = await self.ws.recv()
        self.wire_bytes += len(frame)
        if isinstance(frame, str):
            decoded = msgspec.json.decode(frame)
        else:
            if self.inflate is not None:
                frame = self.inflate.decompress(frame)
            decoded = msgspec.msgpack.decode(frame)
        assert isinstance(decoded, dict)
        return decoded

    async def chunks(self) -> list[dict[str, Any]]:
        """The chunk/end ops of the next message that has any (a batch unpacked)."""
        while True:
            msg = await self.recv()
            if msg["op"] == "chunks":
                assert len(msg["chunks"]) >= 2  # a batch of one is sent as the op itself
                return list(msg["chunks"])
            if msg["op"] in ("chunk", "end"):
                return [msg]

    async def start(self, payload: Any, ref: str, priority: int = 0) -> str:
        headers = {**HEADERS, "priority": priority}
        await self.send("start", ref=ref, payload=payload, headers=headers)
        while True:
            msg = await self.recv()
            if msg["op"] == "started" and msg["ref"] == ref:
                return str(msg["stream_id"])


@asynccontextmanager
async def client(base: str, *subprotocols: str) -> AsyncIterator[Client]:
    offered = list(subprotocols) or [MSGPACK]
    ws = await connect(ws_url(base), subprotocols=offered, compression=None)  # type: ignore[arg-type]
    try:
        yield Client(ws)
    finally:
        await close_draining(ws)


# -- zstd --------------------------------------------------------------------------------


async def test_zstd_is_negotiated_and_every_message_inflates_in_order(serve: Serve) -> None:
    async with serve(padded_flow()) as base, client(base, ZSTD, MSGPACK) as c:
        async with asyncio.timeout(20):
            assert c.fmt == ZSTD
            await c.send("hello")  # a plain msgpack message is fine on zstd too
            assert (await c.recv())["op"] == "welcome"
            await c.send("start", zstd=True, ref="z", payload=200, headers=HEADERS)
            sid = (await c.recv())["stream_id"]
            got = [await c.recv() for _ in range(201)]
            assert [g["seq"] for g in got] == list(range(201))
            assert {g["stream_id"] for g in got} == {sid}
            assert got[-1]["op"] == "end"
            # The shared window makes a ~150-byte chunk message a few bytes on the wire.
            assert c.wire_bytes < 201 * 40


async def test_zstd_is_not_offered_when_turned_off(serve: Serve) -> None:
    settings = EdgeSettings(ws=WsSettings(zstd=False))
    async with serve(padded_flow(), settings) as base, client(base, ZSTD, MSGPACK) as c:
        async with asyncio.timeout(20):
            assert c.fmt == MSGPACK
            await c.send("ping", ref="p")
            assert await c.recv() == {"op": "pong", "ref": "p"}


def sized_bomb() -> bytes:
    return zstandard.ZstdCompressor().compress(b"\0" * 20_000_000)


def unsized_bomb() -> bytes:
    stream = zstandard.ZstdCompressor().compressobj()
    return stream.compress(b"\0" * 20_000_000) + stream.flush()


@pytest.mark.parametrize("bomb", [sized_bomb, unsized_bomb])
async def test_a_zstd_bomb_closes_with_1009(serve: Serve, bomb: Any) -> None:
    settings = EdgeSettings(ws=WsSettings(max_frame=4096))
    async with serve(padded_flow(), settings) as base, client(base, ZSTD) as c:
        async with asyncio.timeout(20):
            frame = bomb()
            assert len(frame) < 4096  # small on the wire: only inflating it is too much
            await c.ws.send(frame)
            with pytest.raises(ConnectionClosed) as closed:
                await c.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1009, "message too big")


async def test_a_broken_zstd_frame_is_a_bad_request(serve: Serve) -> None:
    async with serve(padded_flow()) as base, client(base, ZSTD) as c, asyncio.timeout(20):
        good = compress_client_frame(msgspec.msgpack.encode({"op": "ping", "ref": "a"}))
        for broken in (good[:-2], good + b"junk", b"\x28\xb5\x2f\xfd" + b"\xff" * 16):
            await c.ws.send(broken)
            err = await c.recv()
            assert (err["op"], err["code"]) == ("error", "bad_request")
            assert "zstd" in err["message"]
        await c.ws.send(good)
        assert await c.recv() == {"op": "pong", "ref": "a"}


# -- batches -----------------------------------------------------------------------------


async def lagged_stream(c: Client, window: int, total: int) -> str:
    """Start a stream and let it pile up behind its exhausted credit."""
    sid = await c.start(total, ref="lag")
    first: list[dict[str, Any]] = []
    while len(first) < window:
        first += await c.chunks()
    assert [f["seq"] for f in first] == list(range(window))
    # No credit left: nothing more comes while the producer fills the stream's buffer.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await c.chunks()
    return sid


@pytest.mark.parametrize("fmt", [JSON, MSGPACK, ZSTD])
async def test_batches_pack_lagging_chunks_and_each_consumes_one_credit(
    serve: Serve, fmt: str
) -> None:
    settings = EdgeSettings(ws=WsSettings(window=5))
    async with serve(padded_flow(), settings) as base, client(base, fmt) as c:
        async with asyncio.timeout(20):
            await c.send("hello", batch=True)
            assert (await c.recv())["batch"] is True
            sid = await lagged_stream(c, 5, 500)
            # Exactly 7 more: credit is counted per chunk, batched or not.
            await c.send("credit", stream_id=sid, n=7)
            more: list[dict[str, Any]] = []
            while len(more) < 7:
                more += await c.chunks()
            assert [m["seq"] for m in more] == list(range(5, 12))
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await c.chunks()
            # A large grant: the held chunks leave packed, in order, each once.
            await c.send("credit", stream_id=sid, n=1_000)
            rest: list[dict[str, Any]] = []
            sizes: list[int] = []
            while not rest or rest[-1]["op"] != "end":
                batch = await c.chunks()
                sizes.append(len(batch))
                rest += batch
            assert [r["seq"] for r in rest] == list(range(12, 501))
            assert {r["stream_id"] for r in rest} == {sid}
            assert max(sizes) >= 10  # the lagging chunks went out together


async def test_without_batch_every_chunk_is_its_own_message(serve: Serve) -> None:
    settings = EdgeSettings(ws=WsSettings(window=5))
    async with serve(padded_flow(), settings) as base, client(base, JSON) as c:
        async with asyncio.timeout(20):
            await c.send("hello")
            assert "batch" not in await c.recv()
            sid = await lagged_stream(c, 5, 200)
            await c.send("credit", stream_id=sid, n=1_000)
            ops = [await c.recv() for _ in range(196)]
            assert [o["op"] for o in ops] == ["chunk"] * 195 + ["end"]
            assert [o["seq"] for o in ops] == list(range(5, 201))


# -- fair sharing by priority, and the bandwidth limit --------------------------------
#
# The assertions below are about counts and hard bounds, not about how fast a
# loaded machine runs: a slow machine only makes the client read less, later.


async def test_a_high_priority_stream_is_not_starved_by_a_low_priority_flood(
    serve: Serve,
) -> None:
    rate = 50_000
    settings = EdgeSettings(ws=WsSettings(bytes_per_s=rate, burst_bytes=2048))
    async with serve(padded_flow(), settings) as base, client(base) as c:
        async with asyncio.timeout(60):
            low = await c.start(10**6, ref="low", priority=0)
            await c.send("credit", stream_id=low, n=10**9)
            # The flood fills its queue on the connection: 32 KiB, ~170 chunks.
            await c.chunks()
            high = await c.start(10**6, ref="high", priority=3)
            await c.send("credit", stream_id=high, n=10**9)
            got: dict[str, int] = {low: 0, high: 0}
            while not got[high]:
                for op in await c.chunks():
                    got[op["stream_id"]] += 1
            # FIFO would send the whole queued flood (~170 chunks) first; DRR about
            # one run (2 KiB, ~12 chunks) and one turn of the low stream.
            assert got[low] < 80, got
            got = {low: 0, high: 0}
            while sum(got.values()) < 400:
                for op in await c.chunks():
                    got[op["stream_id"]] += 1
            share = got[high] / (got[high] + got[low])
            # Weights 2**3 : 2**0 give the high stream 8/9 of the bytes (the chunks
            # are of one size); FIFO or plain round robin would give it about half.
            assert 0.75 <= share <= 0.97, got
            assert got[low] > 0  # the low stream is slowed, not starved
            for sid in (low, high):
                await c.send("cancel", stream_id=sid)


async def test_the_bandwidth_limit_holds_the_delivered_rate(serve: Serve) -> None:
    rate, burst = 200_000, 4096
    settings = EdgeSettings(ws=WsSettings(bytes_per_s=rate, burst_bytes=burst))
    async with serve(padded_flow(), settings) as base:
        connecting = time.monotonic()  # the connection's budget starts after this
        async with client(base) as c, asyncio.timeout(60):
            sid = await c.start(10**6, ref="bw")
            await c.send("credit", stream_id=sid, n=10**9)
            began, counted = time.monotonic(), c.wire_bytes
            while time.monotonic() - began < 1.5:
                await c.chunks()
                # The hard bound: never more than the burst plus the rate since the
                # connection opened (every message counts, control ops too).
                assert c.wire_bytes <= burst + rate * (time.monotonic() - connecting), c.wire_bytes
            measured = (c.wire_bytes - counted) / (time.monotonic() - began)
            assert measured > rate / 2, measured  # a loose floor: the limit is not far lower
            await c.send("cancel", stream_id=sid)


async def round_trip(c: Client, ref: str) -> float:
    """Seconds from sending ``ping`` to its ``pong``, whatever comes in between."""
    sent = time.monotonic()
    await c.send("ping", ref=ref)
    while True:
        msg = await c.recv()
        if msg["op"] == "pong":
            assert msg["ref"] == ref
            return time.monotonic() - sent


async def test_control_ops_do_not_wait_for_paced_runs(serve: Serve) -> None:
    # At 10 kB/s the queued events (200 kB) and chunks take ~25 s to go out: a
    # pong or a cancel stuck behind them would be seconds late, not milliseconds.
    settings = EdgeSettings(ws=WsSettings(bytes_per_s=10_000, burst_bytes=4096))
    flow = padded_flow()
    async with serve(flow, settings) as base, client(base) as c, asyncio.timeout(60):
        await c.send("sub_topic", pattern="load.>")
        sid = await c.start(10**6, ref="flood")
        await c.send("credit", stream_id=sid, n=10**9)
        for i in range(200):
            await c.send("publish", topic=f"load.{i % 4}", data="y" * 1000)
        while (await c.recv())["op"] != "event":
            pass  # the topic pump is sending: its backlog is paced from now on
        # Generous for a loaded machine, and still far below the backlog's 25 s.
        assert await round_trip(c, "p1") < 3.0
        await c.send("cancel", stream_id=sid)
        assert await round_trip(c, "p2") < 3.0  # ops are handled in order: cancel was
        brief = flow.brief(sid)
        assert brief is None or brief.state == "cancelled", brief


async def test_what_zstd_messages_inflate_to_is_paced(serve: Serve) -> None:
    # Each frame is ~130 bytes on the wire and a valid ~1 MB ping once inflated
    # (one ``ref`` key repeated: the last one wins).
    n = 60_000
    rate, burst = 2_000_000, 1_000_000
    settings = EdgeSettings(ws=WsSettings(inflate_bytes_per_s=rate, inflate_burst_bytes=burst))
    assert WsSettings().inflate_bytes_per_s == 8 * 1024 * 1024  # the documented default
    async with serve(padded_flow(), settings) as base, client(base, ZSTD) as c:
        async with asyncio.timeout(60):
            frames = []
            for i in range(5):
                entry = msgspec.msgpack.encode("ref") + msgspec.msgpack.encode(f"bomb{i:08}")
                op = b"\xdf" + n.to_bytes(4, "big") + msgspec.msgpack.encode("op")
                op += msgspec.msgpack.encode("ping") + entry * (n - 1)
                frames.append(compress_client_frame(op))
            inflated = len(op)
            assert inflated > 1000 * max(map(len, frames))
            began = time.monotonic()
            for frame in frames:
                await c.ws.send(frame)
            for i in range(5):
                assert await c.recv() == {"op": "pong", "ref": f"bomb{i:08}"}
            elapsed = time.monotonic() - began
            # The fifth is inflated once the budget has earned back the first four
            # (less the burst): a lower bound, which a slow machine only helps.
            assert elapsed >= (4 * inflated - burst) / rate * 0.95, elapsed
