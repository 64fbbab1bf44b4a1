"""HTTP edge scenarios: icefloe's ASGI app under uvicorn beside raw-asyncio servers.

Scenarios (sizes for a default run; ``--quick`` divides them by 10):

* ``sse_fan_out``: ONE stream of N = 2,000 chunks read by 1,000 SSE clients;
  delivered events/s = clients * N / elapsed. The floor is an
  ``asyncio.start_server`` that writes the same SSE bytes (encoded once with
  icefloe's own ``sse_chunk``, 64 events per write) to every connection.
* ``time_to_first_token``: POST a stream, GET it, until its first chunk event
  arrives; 200 sequential iterations on one keep-alive ``httpx.AsyncClient``;
  p50/p99 ms. The floor is the least that exchange costs: two bare asyncio TCP
  request/response round trips of the same sizes on one connection (its
  client is not httpx, so the ratio also holds httpx's client-side cost).
* ``sse_idle_memory``: server RSS per idle SSE connection, (RSS with 1,000
  more idle readers of one silent stream - RSS before) / 1,000, in KiB. The
  floor holds the same connections in an ``asyncio.start_server`` handler each.

Process layout, chosen for honest numbers on a 2-core machine: every server
(icefloe and floor alike) runs in a child interpreter of its own and every
client in the benchmark's process, so server and clients each get a core
and icefloe's figures are its server's, not its clients' event loop's (in
one loop, the 1,000 clients' reads would share icefloe's core and flatter
the ratio). A run's timed region starts when the child is told to let the
chunks flow (all readers attached) and ends when the last client saw
``end``. Servers start and stop with each scenario (``sse_idle_memory``:
with each run, so freed memory is never reused); all traffic is on
127.0.0.1 and every wait is bounded. The listening socket is made with
``IPPROTO_TCP``, as when uvicorn binds host:port itself, so asyncio sets
``TCP_NODELAY`` on accepted connections; the usual pre-bound socket (proto 0)
leaves Nagle on and adds ~40 ms to every response written in two parts.

Diagnostics beside the metrics (medians per variant): ``server_cpu_share``
and ``client_cpu_share`` (CPU seconds / elapsed) say which side was busy.
The fan-out floor's clients are busier than its server (near 1.0 on a quiet
machine), so the floor is a lower bound of raw asyncio and ``ratio`` an
upper bound; ``server_cpu_us_per_event`` compares the servers' work per
delivered event whatever else runs on the machine. ``time_to_first_token``
reports CPU ms per iteration on both sides (psutil: 10 ms ticks).

This file cannot be imported as ``http``: that is the standard library's
package, which httpx, starlette and uvicorn import. ``run.py`` loads it by
path; the server child is this file run as ``python -P bench/edge.py KIND SHAPE``,
so that this directory comes after the standard library on ``sys.path``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import resource
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

# For measure.py and server_child.py: the child runs with -P, run.py has put this directory last.
sys.path.append(str(Path(__file__).resolve().parent))

import httpx
import uvicorn

import server_child
from icefloe import Context, Message, Node, StreamChunk, create
from icefloe.transport.app import EdgeSettings, create_app
from icefloe.transport.encoding import sse_chunk, sse_retry
from icefloe.transport.limits import EdgeLimits
from icefloe.transport.streaming import PumpSettings
from measure import P50_MS, P99_MS, Metric, Sample, latency_ms_sample
from server_child import (
    COMMAND_TIMEOUT_S,
    LOOPBACK,
    STOP_TIMEOUT_S,
    TEXT,
    ServerProcess,
    UvicornChild,
    close_listener,
    cpu_spent,
    emit_gated,
    emit_one,
    loop_factory,
    serve_child,
)

__all__ = [
    "EVENTS_PER_S",
    "KIB_PER_CONNECTION",
    "LAYOUT",
    "P50_MS",
    "P99_MS",
    "HttpScenario",
    "ServerProcess",
    "http_scenarios",
    "serve_main",
    "spawned",
    "sse_blocks",
]

#: this file, run as the server child
THIS_FILE = Path(__file__).resolve()
#: SSE readers of ``sse_fan_out``, idle connections of ``sse_idle_memory``
CLIENTS = 1_000
#: chunks of the ``sse_fan_out`` stream
FAN_OUT_CHUNKS = 2_000
#: sequential start-and-read iterations of ``time_to_first_token``
TTFT_ITERATIONS = 200
#: interleaved rounds at most of the heavy scenarios (fan-out, memory) and of the light one
HEAVY_ROUNDS = 3
LIGHT_ROUNDS = 5
#: events per write of the raw fan-out floor (icefloe's stream window is 64 too)
RAW_EVENTS_PER_WRITE = 64
#: POSTs tried while the server sheds load (503 + Retry-After)
START_ATTEMPTS = 10
LISTEN_BACKLOG = 2048
#: bytes asked per client read (the reader buffers twice that before pausing the socket)
READ_SIZE = 256 * 1024
#: file descriptors wanted beyond the connections themselves
FD_HEADROOM = 512
#: seconds one run may take (the child's other timeouts are server_child's)
RUN_TIMEOUT_S = 180.0
#: seconds between two checks of the attached readers
POLL_S = 0.005
#: seconds given to just-attached readers to finish setting up before "attached"
SETTLE_S = 0.05

#: where everything runs, for the report's ``meta``
LAYOUT = (
    f"each server in a child interpreter (icefloe: uvicorn {uvicorn.__version__} with "
    f"{'httptools' if importlib.util.find_spec('httptools') else 'h11'}; floor: "
    "asyncio.start_server), every client in the benchmark's process, 127.0.0.1 only"
)

EVENTS_PER_S = Metric("events_per_s", higher_is_better=True, ratio_key="ratio", digits=0)
KIB_PER_CONNECTION = Metric(
    "kib_per_connection", higher_is_better=False, ratio_key="ratio", digits=2
)

Kind = Literal["icefloe", "raw"]
Shape = Literal["fan_out", "ttft", "idle"]
RunFn = Callable[[int], Awaitable[Sample]]
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]

# -- bytes on the wire ------------------------------------------------------------

#: the stream id in every byte the floors send (the same length as icefloe's)
RAW_STREAM_ID = "f" * 32
RETRY_MS = PumpSettings().retry_ms
START_BODY = b'{"payload":"go","headers":{"tenant":"bench"}}'
END_MARK = b"\nevent: end\n"
#: asks for uncompressed bodies (httpx asks for gzip by default)
IDENTITY = {"accept-encoding": "identity"}
#: a response head as uvicorn writes it for icefloe's SSE responses
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"date: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
    b"server: uvicorn\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache, no-transform\r\n"
    b"x-accel-buffering: no\r\n"
    b"transfer-encoding: chunked\r\n"
    b"\r\n"
)


def _chunked(body: bytes) -> bytes:
    """``body`` as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(body), body)


def _created() -> bytes:
    """A 201 answer to a POST, as uvicorn writes icefloe's."""
    body = b'{"stream_id":"%s","trace_id":"%s"}' % (RAW_STREAM_ID.encode(), RAW_STREAM_ID.encode())
    return (
        b"HTTP/1.1 201 Created\r\n"
        b"date: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
        b"server: uvicorn\r\n"
        b"content-length: %d\r\n"
        b"content-type: application/json\r\n"
        b"location: /v1/streams/%s\r\n"
        b"\r\n%s" % (len(body), RAW_STREAM_ID.encode(), body)
    )


CREATED = _created()
#: the SSE answer to a GET in two writes: head with the first chunk event, then the end
FIRST_EVENT = SSE_HEAD + _chunked(
    sse_retry(RETRY_MS) + sse_chunk(StreamChunk(RAW_STREAM_ID, 0, TEXT))
)
LAST_EVENT = _chunked(sse_chunk(StreamChunk(RAW_STREAM_ID, 1, "", done=True))) + b"0\r\n\r\n"


def _request(method: bytes, path: bytes, port: int, body: bytes = b"") -> bytes:
    """A request with the headers httpx sends (``Accept`` for SSE on a GET).

    ``Accept-Encoding: identity`` on every client: gzip is the client's choice
    (icefloe honours it), not part of these comparisons.
    """
    head = [
        b"%s %s HTTP/1.1" % (method, path),
        b"host: %s:%d" % (LOOPBACK.encode(), port),
        b"accept: text/event-stream" if method == b"GET" else b"accept: */*",
        b"accept-encoding: identity",
        b"connection: keep-alive",
        b"user-agent: python-httpx/%s" % httpx.__version__.encode(),
    ]
    if body:
        head += [b"content-length: %d" % len(body), b"content-type: application/json"]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def sse_blocks(chunks: int) -> list[bytes]:
    """What the raw fan-out floor writes to each connection, one item per write.

    The retry hint, ``chunks`` chunk events and the end event, encoded once
    with icefloe's ``sse_chunk``, :data:`RAW_EVENTS_PER_WRITE` events per HTTP
    chunk; the last write carries the terminating zero-length chunk.
    """
    events = [sse_chunk(StreamChunk(RAW_STREAM_ID, seq, TEXT)) for seq in range(chunks)]
    events.append(sse_chunk(StreamChunk(RAW_STREAM_ID, chunks, "", done=True)))
    per = RAW_EVENTS_PER_WRITE
    bodies = [b"".join(events[i : i + per]) for i in range(0, len(events), per)]
    bodies[0] = sse_retry(RETRY_MS) + bodies[0]
    blocks = [_chunked(body) for body in bodies]
    blocks[-1] += b"0\r\n\r\n"
    return blocks


def raise_fd_limit(needed: int) -> None:
    """Raise this process's soft ``RLIMIT_NOFILE`` to ``needed`` (at most the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# -- the server child -----------------------------------------------------------------


class _IcefloeServer(UvicornChild):
    """``create_app`` of a one-node flow under uvicorn, with the edge's limits off.

    ``fan_out``: the node (payload = chunk count) waits for the gate, then
    emits its chunks; ``ttft``: it emits one chunk and done at once;
    ``idle``: it waits forever, so its readers stay idle.
    """

    def __init__(self, shape: Shape, history: int) -> None:
        self.gate = asyncio.Event()
        self._never = asyncio.Event()
        bodies = {"fan_out": self._fan_out, "ttft": emit_one, "idle": self._idle}
        self.flow = create(Node(bodies[shape], name=shape).to())
        settings = EdgeSettings(
            history=history,
            edge_limits=EdgeLimits(requests_per_s=None, max_connections=None),
        )
        super().__init__(create_app(self.flow, settings), "http_protocol_class")

    async def _fan_out(self, msg: Message, ctx: Context) -> None:
        await emit_gated(self.gate, msg, ctx)

    async def _idle(self, msg: Message, ctx: Context) -> None:
        await self._never.wait()

    def readers(self) -> int:
        running = (s.subscribers for s in self.flow.streams() if s.state == "running")
        return max(running, default=0)

    def prepare(self, chunks: int) -> None:
        self.gate = asyncio.Event()


class _RawServer:
    """``asyncio.start_server`` doing each shape's least: canned bytes, no parsing."""

    description = "asyncio.start_server"

    def __init__(self, shape: Shape) -> None:
        self.gate = asyncio.Event()
        self.blocks: list[bytes] = []
        self.attached = 0
        handlers = {"fan_out": self._fan_out, "ttft": self._ttft, "idle": self._idle}
        self._handler = handlers[shape]
        self._server: asyncio.Server | None = None

    async def start(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(self._handler, sock=sock, backlog=LISTEN_BACKLOG)

    def readers(self) -> int:
        return self.attached

    def prepare(self, chunks: int) -> None:
        self.gate = asyncio.Event()
        self.blocks = sse_blocks(chunks)

    async def _fan_out(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        gate, blocks = self.gate, self.blocks
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(SSE_HEAD)
            self.attached += 1
            try:
                await gate.wait()
                for block in blocks:
                    writer.write(block)
                    await writer.drain()
            finally:
                self.attached -= 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _ttft(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if head.startswith(b"POST"):
                    await reader.readexactly(len(START_BODY))
                    writer.write(CREATED)
                else:
                    writer.write(FIRST_EVENT)
                    await writer.drain()
                    writer.write(LAST_EVENT)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _idle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(SSE_HEAD + _chunked(sse_retry(RETRY_MS)))
            self.attached += 1
            try:
                await reader.read(1)  # b"" when the client goes
            finally:
                self.attached -= 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        await close_listener(self._server)


Server = _IcefloeServer | _RawServer


async def _wait_readers(server: Server, count: int) -> None:
    for _ in range(int(COMMAND_TIMEOUT_S / POLL_S)):
        if server.readers() >= count:
            await asyncio.sleep(SETTLE_S)
            return
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"{server.readers()} of {count} readers attached")


async def _serve(kind: Kind, shape: Shape, history: int) -> None:
    server: Server = _IcefloeServer(shape, history) if kind == "icefloe" else _RawServer(shape)
    # ``prepare N``: a new gate, the floor encodes N chunks; ``attach K``: wait
    # until K readers are attached.
    await serve_child(
        server,
        {
            "prepare": lambda args: server.prepare(int(args[0])),
            "attach": lambda args: _wait_readers(server, int(args[0])),
        },
    )


def serve_main(argv: Sequence[str] | None = None) -> int:
    """The server child: ``python -P bench/edge.py KIND SHAPE [--history N] [--uvloop]``."""
    parser = argparse.ArgumentParser(description="a bench server driven over stdin")
    parser.add_argument("kind", choices=["icefloe", "raw"])
    parser.add_argument("shape", choices=["fan_out", "ttft", "idle"])
    parser.add_argument("--history", type=int, default=0, help="EdgeSettings.history")
    parser.add_argument("--connections", type=int, default=CLIENTS)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args(argv)
    raise_fd_limit(args.connections + FD_HEADROOM)
    with asyncio.Runner(loop_factory=loop_factory(args.uvloop)) as runner:
        runner.run(_serve(args.kind, args.shape, args.history))
    return 0


# -- the benchmark's side ---------------------------------------------------------------


def spawned(
    kind: Kind, shape: Shape, *, uvloop: bool, history: int = 0, connections: int = CLIENTS
) -> AbstractAsyncContextManager[ServerProcess]:
    """A server child serving ``shape`` as ``kind`` on 127.0.0.1, stopped on exit."""
    options = ("--history", str(history), "--connections", str(connections))
    return server_child.spawned(THIS_FILE, kind, shape, *options, uvloop=uvloop)


async def _start_stream(client: httpx.AsyncClient, payload: object) -> str:
    """POST a stream; its path.

    A server saturated by the previous run may shed the POST (503 while it
    is overloaded, about 2 s after the load ends): like any client, wait
    ``Retry-After`` and try again, a bounded number of times.
    """
    for _ in range(START_ATTEMPTS):
        created = await client.post(
            "/v1/streams", json={"payload": payload, "headers": {"tenant": "bench"}}
        )
        if created.status_code != 503:
            break
        await asyncio.sleep(float(created.headers.get("retry-after", "1")))
    if created.status_code != 201:
        raise RuntimeError(f"POST /v1/streams answered {created.status_code}: {created.text}")
    return f"/v1/streams/{created.json()['stream_id']}"


async def _connect(port: int, path: str, count: int) -> list[Conn]:
    """``count`` connections, each having sent its SSE GET of ``path``."""
    request = _request(b"GET", path.encode(), port)
    opened = await asyncio.gather(
        *(asyncio.open_connection(LOOPBACK, port, limit=2 * READ_SIZE) for _ in range(count)),
        return_exceptions=True,
    )
    conns = [c for c in opened if not isinstance(c, BaseException)]
    failed = [c for c in opened if isinstance(c, BaseException)]
    if failed:
        await _close(conns)
        raise failed[0]
    for _, writer in conns:
        writer.write(request)
    return conns


async def _close(conns: Sequence[Conn]) -> None:
    for _, writer in conns:
        writer.close()
    async with asyncio.timeout(STOP_TIMEOUT_S):
        await asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True)


async def _count_events(reader: asyncio.StreamReader) -> int:
    """Events (blocks ending in a blank line) up to and including ``end``.

    The lean client of ``sse_fan_out``: no parsing, one count per read. The
    retry hint that opens the stream is not counted.
    """
    read = reader.read
    events = 0
    tail = b""
    while True:
        data = await read(READ_SIZE)
        if not data:
            raise ConnectionError("the server closed the stream before its end event")
        if tail:
            data = tail + data
        cut = data.rfind(b"\n\n") + 2
        if cut == 1:  # no complete event yet
            tail = data
            continue
        events += data.count(b"\n\n", 0, cut)
        tail = data[cut:]
        if data.find(END_MARK, 0, cut) >= 0:
            return events - 1


async def _fan_out_run(
    server: ServerProcess, clients: int, chunks: int, open_stream: Callable[[], Awaitable[str]]
) -> Sample:
    """One stream of ``chunks`` chunks to ``clients`` readers; delivered events/s."""
    await server.command(f"prepare {chunks}")
    path = await open_stream()
    conns = await _connect(server.port, path, clients)
    try:
        readers = [asyncio.ensure_future(_count_events(reader)) for reader, _ in conns]
        try:
            await server.command(f"attach {clients}")
            await server.command("gc")
            with cpu_spent(server) as cpu:
                start = time.perf_counter()
                server.send("go")
                async with asyncio.timeout(RUN_TIMEOUT_S):
                    counts = await asyncio.gather(*readers)
                elapsed = time.perf_counter() - start
            await server.answer()
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
    finally:
        await _close(conns)
    short = [c for c in counts if c != chunks + 1]
    if short:
        raise RuntimeError(f"{len(short)} clients got {short[0]} events, expected {chunks + 1}")
    return {
        EVENTS_PER_S.name: clients * chunks / elapsed,
        **cpu.shares(elapsed),
        "server_cpu_us_per_event": 1e6 * cpu.server / (clients * chunks),
    }


@asynccontextmanager
async def fan_out_session(
    clients: int, chunks: int, uvloop: bool
) -> AsyncIterator[tuple[RunFn, RunFn]]:
    """Both fan-out servers for a scenario's runs; chunks <= ``chunks`` per run."""
    raise_fd_limit(clients + FD_HEADROOM)
    skip_sniffio_probe()
    async with (
        spawned("raw", "fan_out", uvloop=uvloop, connections=clients) as raw,
        spawned(
            "icefloe", "fan_out", uvloop=uvloop, history=chunks + 1, connections=clients
        ) as ice,
        httpx.AsyncClient(base_url=ice.url, timeout=COMMAND_TIMEOUT_S) as client,
    ):

        async def raw_path() -> str:
            return "/raw"

        async def floor(n: int) -> Sample:
            return await _fan_out_run(raw, clients, n, raw_path)

        async def icefloe(n: int) -> Sample:
            return await _fan_out_run(ice, clients, n, partial(_start_stream, client, n))

        yield floor, icefloe


async def _icefloe_ttft(client: httpx.AsyncClient, iterations: int) -> list[int]:
    """ns from sending the POST until the first chunk event of the GET is in."""
    clock = time.perf_counter_ns
    headers = {"content-type": "application/json"}
    latencies: list[int] = []
    for _ in range(iterations):
        start = clock()
        created = await client.post("/v1/streams", content=START_BODY, headers=headers)
        if created.status_code != 201:
            raise RuntimeError(f"POST /v1/streams answered {created.status_code}")
        first = 0
        seen = bytearray()
        async with client.stream("GET", f"/v1/streams/{created.json()['stream_id']}") as resp:
            if resp.status_code != 200:
                raise RuntimeError(f"GET /v1/streams/... answered {resp.status_code}")
            async for part in resp.aiter_raw():
                if not first:
                    seen += part
                    at = seen.find(b"\nevent: chunk\n")
                    if at >= 0 and seen.find(b"\n\n", at) >= 0:
                        first = clock()
        if not first:
            raise RuntimeError("the stream ended without a chunk event")
        latencies.append(first - start)
    return latencies


async def _raw_ttft(conn: Conn, port: int, iterations: int) -> list[int]:
    """ns for the same two exchanges as bare TCP round trips of the same sizes."""
    reader, writer = conn
    post = _request(b"POST", b"/v1/streams", port, START_BODY)
    get = _request(b"GET", b"/v1/streams/" + RAW_STREAM_ID.encode(), port)
    clock = time.perf_counter_ns
    latencies: list[int] = []
    for _ in range(iterations):
        start = clock()
        writer.write(post)
        await reader.readexactly(len(CREATED))
        writer.write(get)
        await reader.readuntil(b"\nevent: chunk\n")
        await reader.readuntil(b"\n\n")
        latencies.append(clock() - start)
        await reader.readuntil(b"0\r\n\r\n")
    return latencies


async def _ttft_run(
    server: ServerProcess, exchange: Callable[[int], Awaitable[list[int]]], iterations: int
) -> Sample:
    """p50/p99 of ``exchange``'s latencies, and CPU ms per iteration on both sides."""
    with cpu_spent(server) as cpu:
        async with asyncio.timeout(RUN_TIMEOUT_S):
            latencies = await exchange(iterations)
    return {**latency_ms_sample(latencies), **cpu.ms_per(iterations)}


def skip_sniffio_probe() -> None:
    """Record in ``sys.modules`` that sniffio is not installed, if it is not.

    httpcore 1.0 runs ``import sniffio`` on every request to name the async
    library; anyio 4 no longer brings sniffio, and a failed import is not
    cached, so without this every httpx request searches ``sys.path`` a few
    times (about 1.5 ms of client CPU per iteration here). A ``None`` entry
    makes the import fail at once; httpcore then assumes asyncio, as it must.
    """
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None


@asynccontextmanager
async def ttft_session(uvloop: bool) -> AsyncIterator[tuple[RunFn, RunFn]]:
    """Both servers and both clients (one keep-alive connection each) for a scenario."""
    skip_sniffio_probe()
    async with (
        spawned("raw", "ttft", uvloop=uvloop) as raw,
        spawned("icefloe", "ttft", uvloop=uvloop) as ice,
        httpx.AsyncClient(base_url=ice.url, timeout=COMMAND_TIMEOUT_S, headers=IDENTITY) as client,
    ):
        conn = await asyncio.open_connection(LOOPBACK, raw.port)
        try:
            floor = partial(_ttft_run, raw, partial(_raw_ttft, conn, raw.port))
            yield floor, partial(_ttft_run, ice, partial(_icefloe_ttft, client))
        finally:
            await _close([conn])


async def _idle_run(kind: Kind, uvloop: bool, connections: int) -> Sample:
    """Server RSS per idle SSE connection, in a fresh server child."""
    async with spawned(kind, "idle", uvloop=uvloop, connections=connections + 1) as server:
        if kind == "raw":
            path = "/raw"
        else:
            async with httpx.AsyncClient(base_url=server.url, timeout=COMMAND_TIMEOUT_S) as client:
                path = await _start_stream(client, None)
        # One reader first, so that the code paths of a connection are warm.
        conns = await _connect(server.port, path, 1)
        try:
            await server.command("attach 1")
            await server.command("gc")
            before = server.rss()
            conns += await _connect(server.port, path, connections)
            await server.command(f"attach {connections + 1}")
            await server.command("gc")
            after = server.rss()
        finally:
            await _close(conns)
    return {KIB_PER_CONNECTION.name: (after - before) / connections / 1024}


@asynccontextmanager
async def idle_session(connections: int, uvloop: bool) -> AsyncIterator[tuple[RunFn, RunFn]]:
    """Run functions starting a server child each (nothing runs between runs)."""
    raise_fd_limit(connections + FD_HEADROOM)
    yield partial(_idle_run, "raw", uvloop), partial(_idle_run, "icefloe", uvloop)


@dataclass(frozen=True, slots=True)
class HttpScenario:
    """One HTTP comparison; its servers live from ``session()`` entry to exit."""

    name: str
    #: chunks, iterations or connections per run
    size: int
    unit: str
    metrics: tuple[Metric, ...]
    #: yields the (floor, icefloe) run functions
    session: Callable[[], AbstractAsyncContextManager[tuple[RunFn, RunFn]]]
    #: whether one small unrecorded run of each variant precedes the rounds
    warm_up: bool
    #: interleaved rounds at most (``--rounds`` may ask for fewer)
    rounds: int
    #: further sizes, reported beside ``size``
    params: dict[str, int] = field(default_factory=dict)


def http_scenarios(divisor: int, uvloop: bool) -> tuple[HttpScenario, ...]:
    """The HTTP scenario table, sizes divided by ``divisor``."""
    clients = CLIENTS // divisor
    chunks = FAN_OUT_CHUNKS // divisor
    return (
        HttpScenario(
            "sse_fan_out",
            chunks,
            "events/s",
            (EVENTS_PER_S,),
            partial(fan_out_session, clients, chunks, uvloop),
            warm_up=True,
            rounds=HEAVY_ROUNDS,
            params={"clients": clients},
        ),
        HttpScenario(
            "time_to_first_token",
            TTFT_ITERATIONS // divisor,
            "ms",
            (P50_MS, P99_MS),
            partial(ttft_session, uvloop),
            warm_up=True,
            rounds=LIGHT_ROUNDS,
        ),
        HttpScenario(
            "sse_idle_memory",
            clients,
            "KiB/connection",
            (KIB_PER_CONNECTION,),
            partial(idle_session, clients, uvloop),
            warm_up=False,
            rounds=HEAVY_ROUNDS,
        ),
    )


if __name__ == "__main__":
    raise SystemExit(serve_main())
