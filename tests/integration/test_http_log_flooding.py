"""Expected events a client can repeat at will cost aggregated INFO lines, never an ERROR.

Issue 15, finding 6: each refused WebSocket handshake made uvicorn log ERROR
"ASGI callable returned without completing handshake", and each HTTP
slow-client cut ERROR "ASGI callable returned without completing response",
so a client could write an ERROR line into the log per connection. A
WebSocket slow consumer was never even disconnected: the close frame waited
for room in a socket the client did not read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from icefloe import Context, Message, Node, NodePolicy, create
from icefloe.transport.app import EdgeSettings
from icefloe.transport.limits import EdgeLimits
from icefloe.transport.logfilter import CUTS
from icefloe.transport.streaming import PumpSettings
from icefloe.transport.ws_handshake import REFUSALS
from icefloe.transport.ws_settings import WsSettings

Serve = Any  # the serve fixture of conftest.py: serve(flow, settings=None) -> url
CHUNK = "x" * 32_768
UNLIMITED = EdgeLimits(requests_per_s=None, max_connections=None)
#: far more than a stalled client's socket buffers hold: every stalled write times out
FLOOD = 2_000
BURST = 12
#: a run goes at most 32 chunks (1 MiB) ahead of its reader, and 64 are kept:
#: enough to stall a write, and the test holds a few MiB per stream at most
SMALL_STREAMS: dict[str, Any] = {"stream_window": 32, "history": 64}

GATE: dict[str, asyncio.Event] = {}


def flood_flow() -> Any:
    """payload {"gate"}: wait for the gate, then flood FLOOD chunks."""

    async def flood(msg: Message, ctx: Context) -> None:
        await GATE[msg.payload["gate"]].wait()
        for _ in range(FLOOD):
            await ctx.emit_chunk(parent=msg, text=CHUNK)
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return create(Node(flood, name="flood", policy=NodePolicy(max_concurrency=BURST)).to())


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


LOGGERS = ("uvicorn.error", "uvicorn", "icefloe.edge", "icefloe.ws")


@asynccontextmanager
async def recording() -> AsyncIterator[list[logging.LogRecord]]:
    """Every record of uvicorn's and icefloe's edge loggers, icefloe's at INFO.

    Entered once the server runs: uvicorn's logging set-up (at ``Config``)
    removes the handlers of its own loggers.
    """
    CUTS.flush()  # cuts and refusals of earlier tests are not this test's
    REFUSALS.flush()
    handler = _Records()
    loggers = [logging.getLogger(name) for name in LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        if logger.name.startswith("icefloe"):
            logger.setLevel(logging.INFO)
    try:
        yield handler.records
    finally:
        CUTS.flush()
        REFUSALS.flush()
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


async def stalled_socket(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection whose small receive window the test never reads."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    return await asyncio.open_connection(sock=sock)


async def open_stalled_sse(url: str, sid: str) -> asyncio.StreamWriter:
    _, writer = await stalled_socket(url)
    writer.write(f"GET /v1/streams/{sid} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    await writer.drain()
    return writer


def lines_with(records: list[logging.LogRecord], what: str = "cut") -> list[logging.LogRecord]:
    """icefloe's aggregated lines about ``what``."""
    return [r for r in records if r.name.startswith("icefloe") and what in r.getMessage()]


def counted(line: logging.LogRecord) -> int:
    """The count of an aggregated line ``what: N (last: reason)``."""
    return int(line.getMessage().split(": ")[1].split(" ")[0])


async def wait_for_metric(client: httpx.AsyncClient, line: str, seconds: float = 30) -> None:
    """Poll /metrics until it has ``line``."""
    text = ""
    try:
        async with asyncio.timeout(seconds):
            while line not in (text := (await client.get("/metrics")).text):
                await asyncio.sleep(0.05)
    except TimeoutError:
        seen = [x for x in text.splitlines() if x.startswith(line.split(" ")[0].split("{")[0])]
        raise AssertionError(f"timed out waiting for {line!r}: {seen}") from None


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
    for writer in writers:
        try:
            await writer.wait_closed()
        except OSError:
            pass  # the server reset it


async def test_a_burst_of_http_slow_client_cuts_logs_no_error_and_few_info_lines(
    serve: Serve,
) -> None:
    settings = EdgeSettings(
        pump=PumpSettings(heartbeat_s=5.0, send_timeout_s=0.3),
        edge_limits=UNLIMITED,
        **SMALL_STREAMS,
    )
    loop = asyncio.get_running_loop()
    writers: list[asyncio.StreamWriter] = []
    async with (
        serve(flood_flow(), settings) as url,
        httpx.AsyncClient(base_url=url) as client,
        asyncio.timeout(90),
        recording() as log_records,
    ):
        try:
            GATE["http"] = gate = asyncio.Event()
            body = {"payload": {"gate": "http"}, "headers": {"tenant": "t"}}
            # A stream each: a stalled reader that is its stream's only one
            # holds the run back (window), so it never falls out of history.
            for _ in range(BURST):
                r = await client.post("/v1/streams", json=body)
                assert r.status_code == 201
                sid = r.json()["stream_id"]
                writers.append(await open_stalled_sse(url, sid))
                async with asyncio.timeout(30):
                    while not (await client.get(f"/v1/streams/{sid}/status")).json()["subscribers"]:
                        await asyncio.sleep(0.02)
            began = loop.time()
            gate.set()
            ends = f'icefloe_http_stream_ends_total{{outcome="slow_client"}} {BURST}.0'
            await wait_for_metric(client, ends)
            # uvicorn logs its line when the app returns, just after the count
            await wait_for_metric(client, "icefloe_http_stream_connections 0.0")
            await asyncio.sleep(0.2)
            elapsed = loop.time() - began
        finally:
            await close_all(writers)
    errors = [r.getMessage() for r in log_records if r.levelno >= logging.WARNING]
    assert errors == []
    lines = lines_with(log_records)
    assert all(r.levelno == logging.INFO for r in lines)
    # one line a second at most (plus the first and the final flush)
    assert 1 <= len(lines) <= elapsed + 2, [r.getMessage() for r in lines]
    assert sum(map(counted, lines)) == BURST
    assert "slow_client" in lines[-1].getMessage()


async def ws_handshake(url: str) -> asyncio.StreamWriter:
    """A JSON WebSocket connection (raw socket, small receive window) that
    starts one stream and then never reads."""
    reader, writer = await stalled_socket(url)
    host = url.removeprefix("http://")
    writer.write(
        (
            f"GET /v1/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return writer


def ws_text(payload: dict[str, Any]) -> bytes:
    """One masked text frame (clients must mask)."""
    data = json.dumps(payload).encode()
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    assert len(data) < 126
    return bytes([0x81, 0x80 | len(data)]) + mask + masked


async def test_a_burst_of_websocket_slow_consumer_cuts_logs_no_error_and_few_info_lines(
    serve: Serve,
) -> None:
    ws = WsSettings(send_timeout_s=0.3, window=4096)
    settings = EdgeSettings(edge_limits=UNLIMITED, ws=ws, **SMALL_STREAMS)
    loop = asyncio.get_running_loop()
    writers: list[asyncio.StreamWriter] = []
    async with (
        serve(flood_flow(), settings) as url,
        httpx.AsyncClient(base_url=url) as client,
        asyncio.timeout(90),
        recording() as log_records,
    ):
        try:
            GATE["ws"] = gate = asyncio.Event()
            for i in range(BURST):
                writer = await ws_handshake(url)
                writers.append(writer)
                start = {"op": "start", "ref": f"r{i}", "payload": {"gate": "ws"}}
                writer.write(ws_text(start | {"headers": {"tenant": "t"}}))
                await writer.drain()
            await wait_for_metric(client, f"icefloe_streams_active {BURST}.0")
            began = loop.time()
            gate.set()
            await wait_for_metric(client, "icefloe_ws_connections 0.0")
            await asyncio.sleep(0.2)
            elapsed = loop.time() - began
        finally:
            await close_all(writers)
    errors = [r.getMessage() for r in log_records if r.levelno >= logging.WARNING]
    assert errors == []
    lines = lines_with(log_records)
    assert all(r.levelno == logging.INFO for r in lines)
    assert 1 <= len(lines) <= elapsed + 2, [r.getMessage() for r in lines]
    assert sum(map(counted, lines)) == BURST
    assert "slow consumer" in lines[-1].getMessage()


async def test_a_burst_of_refused_handshakes_logs_no_error_and_few_info_lines(
    serve: Serve,
) -> None:
    refused = 100
    loop = asyncio.get_running_loop()
    async with (
        serve(flood_flow(), EdgeSettings(edge_limits=UNLIMITED)) as url,
        asyncio.timeout(60),
        recording() as log_records,
    ):
        host = url.removeprefix("http://")
        began = loop.time()
        for _ in range(refused):
            reader, writer = await asyncio.open_connection(*host.split(":"))
            writer.write(
                (
                    f"GET /v1/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\nOrigin: http://evil.example\r\n\r\n"
                ).encode()
            )
            head = await reader.readuntil(b"\r\n")
            assert head.startswith(b"HTTP/1.1 403"), head
            await close_all([writer])
        elapsed = loop.time() - began
    errors = [r.getMessage() for r in log_records if r.levelno >= logging.WARNING]
    assert errors == []
    lines = lines_with(log_records, "handshakes refused")
    assert all(r.levelno == logging.INFO for r in lines)
    assert 1 <= len(lines) <= elapsed + 2, [r.getMessage() for r in lines]
    assert sum(map(counted, lines)) == refused
    assert "403 origin not allowed" in lines[-1].getMessage()
