"""Slow and vanished SSE clients: bounded memory, cut as specified, others unharmed."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

import httpx

from icefloe import Context, Message, Node, NodePolicy, create
from icefloe.transport.app import EdgeSettings
from icefloe.transport.limits import EdgeLimits
from icefloe.transport.streaming import PumpSettings

Serve = Any  # the serve fixture of conftest.py: serve(flow, settings=None) -> url
CHUNK = "x" * 100
TOTAL = 40_000
UNLIMITED = EdgeLimits(requests_per_s=None, max_connections=None)
HISTORY = 512  # chunks; also each network reader's lag allowance


GATES: dict[str, asyncio.Event] = {}


def flood_flow() -> Any:
    """payload {"n", "gate"}: wait for the test to open the gate, then flood n chunks."""

    async def flood(msg: Message, ctx: Context) -> None:
        await GATES[msg.payload["gate"]].wait()
        for _ in range(int(msg.payload["n"])):
            await ctx.emit_chunk(parent=msg, text=CHUNK)
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return create(Node(flood, name="flood", policy=NodePolicy(max_concurrency=4)).to())


async def start(client: httpx.AsyncClient, n: int) -> tuple[str, asyncio.Event]:
    gate = asyncio.Event()
    key = str(len(GATES))
    GATES[key] = gate
    body = {"payload": {"n": n, "gate": key}, "headers": {"tenant": "t"}}
    r = await client.post("/v1/streams", json=body)
    assert r.status_code == 201
    return str(r.json()["stream_id"]), gate


async def open_sse(
    url: str, sid: str, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # Set before connecting, so the advertised window stays small: a slow
        # mobile client, not one whose kernel soaks up megabytes.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET /v1/streams/{sid} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def read_all(reader: asyncio.StreamReader) -> tuple[int, float]:
    """Events until the end event, and the seconds it took."""
    started = time.perf_counter()
    events = 0
    tail = b""
    while True:
        data = await reader.read(1 << 16)
        if not data:
            raise AssertionError("connection closed before the end event")
        block = tail + data
        events += block.count(b"\n\n")
        if b"event: end" in block:
            return events, time.perf_counter() - started
        tail = block[-16:]


async def wait_subscribers(client: httpx.AsyncClient, sid: str, n: int) -> None:
    async with asyncio.timeout(10):
        while (await client.get(f"/v1/streams/{sid}/status")).json()["subscribers"] != n:
            await asyncio.sleep(0.01)


async def solo_run(url: str, client: httpx.AsyncClient) -> float:
    """Seconds one fast client takes to read a whole stream alone."""
    sid, gate = await start(client, TOTAL)
    fast, fast_w = await open_sse(url, sid)
    await wait_subscribers(client, sid, 1)
    gate.set()
    _, seconds = await read_all(fast)
    fast_w.close()
    return seconds


async def crowded_run(url: str, client: httpx.AsyncClient, flow: Any) -> tuple[float, int]:
    """Seconds the fast client takes beside a slow and a vanished one; bytes held."""
    sid, gate = await start(client, TOTAL)
    slow, slow_w = await open_sse(url, sid, rcvbuf=4096)
    _gone, gone_w = await open_sse(url, sid)
    fast, fast_w = await open_sse(url, sid)
    await wait_subscribers(client, sid, 3)
    sock = gone_w.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    gone_w.close()  # RST: the client vanished
    gate.set()
    reading = asyncio.ensure_future(read_all(fast))

    async def trickle() -> None:
        while await slow.read(200):  # about one event per second
            await asyncio.sleep(1.0)

    trickler = asyncio.ensure_future(trickle())
    events, seconds = await reading
    fast_w.close()
    assert events >= TOTAL + 1
    stats = flow.lookup(sid)
    assert stats is not None
    # The vanished and the slow client are cut: their readers and responses end.
    async with asyncio.timeout(15):
        while "icefloe_http_stream_connections 0.0" not in (await client.get("/metrics")).text:
            await asyncio.sleep(0.05)
    assert (await client.get(f"/v1/streams/{sid}/status")).json()["subscribers"] == 0
    trickler.cancel()
    slow_w.close()
    return seconds, stats.buffered_bytes


async def test_slow_and_vanished_clients_do_not_hold_back_a_fast_one(serve: Serve) -> None:
    settings = EdgeSettings(
        history=HISTORY,
        pump=PumpSettings(heartbeat_s=0.25, send_timeout_s=1.0),
        edge_limits=UNLIMITED,  # the test polls status faster than the default rate
    )
    flow = flood_flow()
    ratios = []
    async with serve(flow, settings) as url, httpx.AsyncClient(base_url=url) as client:
        # Interleaved rounds, best ratio: the machine's noise hits both sides.
        for _ in range(3):
            solo_s = await solo_run(url, client)
            crowded_s, held = await crowded_run(url, client, flow)
            ratios.append(solo_s / crowded_s)
            # Memory stays within history plus window, whatever the slow client does.
            assert held <= (HISTORY + 64 + 32) * len(CHUNK)
        metrics = (await client.get("/metrics")).text
    assert max(ratios) >= 0.8, f"fast client at {max(ratios):.2f}x its solo rate"
    ends = {
        line.split('"')[1]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("icefloe_http_stream_ends_total{")
    }
    # Per round: solo and fast read to the end; slow and vanished were cut.
    assert ends.pop("done") == 6
    assert sum(ends.values()) == 6
    assert set(ends) <= {"disconnected", "slow_client", "history_gone"}


async def test_a_vanished_idle_client_is_noticed_within_two_heartbeats(serve: Serve) -> None:
    heartbeat = 0.3
    settings = EdgeSettings(
        pump=PumpSettings(heartbeat_s=heartbeat, send_timeout_s=1.0), edge_limits=UNLIMITED
    )
    gate = asyncio.Event()

    async def idle(msg: Message, ctx: Context) -> None:
        await gate.wait()
        await ctx.emit_chunk(parent=msg, text="", done=True)

    async with (
        serve(create(Node(idle, name="idle").to()), settings) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        r = await client.post("/v1/streams", json={"payload": 0, "headers": {"tenant": "t"}})
        sid = r.json()["stream_id"]
        _, writer = await open_sse(url, sid)
        await wait_subscribers(client, sid, 1)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        started = time.perf_counter()
        async with asyncio.timeout(10):
            while (await client.get(f"/v1/streams/{sid}/status")).json()["subscribers"]:
                await asyncio.sleep(0.02)
        noticed_s = time.perf_counter() - started
        gate.set()
    assert noticed_s <= 2 * heartbeat
