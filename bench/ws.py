"""WebSocket edge scenarios: ``/v1/ws`` under uvicorn beside a bare ``websockets`` server.

docs/benchmarks.md ("WebSocket scenarios") says what each measures and how
to read it. In short:

* ``ws_{json,msgpack}_{1,100}[_deflate]``: chunks/s delivered over ONE
  connection, N = 20,000 frames per run (``--quick``: 2,000) on 1 stream or
  on 100 streams multiplexed (N/100 each), in either subprotocol, with or
  without permessage-deflate (the client offers it or not; both servers
  compress every message, 12 window bits, memLevel 5). icefloe:
  ``create_app`` of a one-node flow under uvicorn with ``server_options``;
  the client grants ``credit {stream_id, n: 10**9}`` after each
  ``started`` (``--window`` stays 256) and syncs with ``ping``; each run of
  the node waits at a gate. Floor: ``websockets.asyncio.server.serve``
  answering ``start``/``ping`` the same way, then ``await ws.send(frame)``
  per frame, the frames made in advance with ``ops.encode_chunk`` (same
  sizes, count and stream order as icefloe's, see :data:`RUN`). Timed from
  opening the gate to the last ``end``.
* ``ws_msgpack_{1,100}_zstd``: the same over ``icefloe.v1.msgpack+zstd``
  (every server message is the next flushed piece of one zstd stream, see
  docs/websocket.md); the floor compresses each frame the same way as it
  sends it (a ``ZstdMessageCompressor`` per connection), the client inflates
  each message. ``wire_bytes_per_frame`` against the plain and ``_deflate``
  rows gives the bytes saved; ``server_cpu_us_per_frame`` the CPU it costs.
* ``ws_first_chunk``: ``start`` sent to first ``chunk`` received, 200
  sequential starts on one JSON connection, p50/p99 ms; the floor answers
  each ``start`` with ``started``, ``chunk`` and ``end`` made in advance.

Process layout, as in ``bench/edge.py``: each server in a child interpreter
(this file run as ``python -P bench/ws.py KIND SHAPE``, driven by one-line
commands on stdin), the client (:class:`LeanClient`, the same for both) in
the benchmark's process, 127.0.0.1 only. Diagnostics (medians per variant):
``server_cpu_share`` / ``client_cpu_share`` (CPU seconds / elapsed),
``server_cpu_us_per_frame``, ``wire_bytes_per_frame`` (what the client
read) and ``frames_per_run`` (frames of one stream in a row): the last two
equal on both sides show they sent the same thing. ``ws_first_chunk``
reports CPU ms per start (psutil reads 10 ms ticks).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import socket
import sys
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

# For edge.py, measure.py and server_child.py: the child runs with -P, run.py has put
# this directory first.
sys.path.append(str(Path(__file__).resolve().parent))

import msgspec
import uvicorn
import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

import server_child
from icefloe import Context, Message, Node, NodePolicy, StreamChunk, create
from icefloe.core.codec import Format
from icefloe.core.messages import new_id
from icefloe.core.ops import (
    SUBPROTOCOL_MSGPACK_ZSTD,
    SUBPROTOCOLS,
    Ack,
    Credit,
    Ping,
    Pong,
    Start,
    Started,
    StartHeaders,
    encode_chunk,
    encode_client,
    encode_server,
)
from icefloe.core.wszstd import ZstdMessageCompressor, ZstdMessageDecompressor
from icefloe.transport.app import EdgeSettings, create_app, server_options
from icefloe.transport.limits import EdgeLimits
from measure import CHUNKS_PER_S, P50_MS, P99_MS, Sample, latency_ms_sample
from server_child import COMMAND_TIMEOUT_S, LOOPBACK, STOP_TIMEOUT_S, ServerProcess, UvicornChild

# bench/edge.py (and its httpx) is imported where the benchmark's side needs it:
# the server child uses none of it and starts faster without it.
if TYPE_CHECKING:
    from edge import HttpScenario

__all__ = ["LAYOUT", "ws_scenarios"]

THIS_FILE = Path(__file__).resolve()
TENANT = "bench"
#: chunk and end frames per throughput run, whatever the number of streams
FRAMES = 20_000
#: streams of the multiplexed scenarios
MANY = 100
#: frames of one stream in a row, at most, in the floor's order: icefloe's pumps send
#: what their stream holds, which at full speed comes in runs of up to 256 frames
#: (the report's ``frames_per_run`` shows both orders)
RUN = 256
#: credit the client grants each stream up front (the server caps credit at 2**31 - 1)
CREDIT = 10**9
#: sequential starts per ``ws_first_chunk`` run
FIRST_CHUNK_ITERATIONS = 200
#: interleaved rounds at most of the throughput scenarios and of ``ws_first_chunk``
STREAM_ROUNDS = 5
FIRST_CHUNK_ROUNDS = 5
#: seconds one run may take (the child's other timeouts are server_child's)
RUN_TIMEOUT_S = 120.0
#: bytes asked per client read
READ_SIZE = 256 * 1024
#: what RFC 7692 strips from the end of every compressed message
DEFLATE_TAIL = b"\x00\x00\xff\xff"

LAYOUT = (
    f"each server in a child interpreter (icefloe: uvicorn {uvicorn.__version__}, "
    f"websockets {websockets.__version__} sans-I/O; floor: websockets.asyncio.server.serve), "
    "the client (a minimal one, bench/ws.py LeanClient) in the benchmark's process, "
    "127.0.0.1 only"
)

Kind = Literal["icefloe", "raw"]
Shape = Literal["stream", "first"]
RunFn = Callable[[int], Awaitable[Sample]]
FORMATS = {"json": Format.JSON, "msgpack": Format.MSGPACK}
SUBPROTOCOL = {fmt: name for name, fmt in SUBPROTOCOLS.items()}

# -- frames ------------------------------------------------------------------------


def _bytes(frame: bytes | str) -> bytes:
    return frame.encode() if isinstance(frame, str) else frame


def _op_prefix(op: str, fmt: Format) -> bytes:
    """The bytes a server frame of ``op`` starts with (icefloe encodes ``op`` first).

    msgpack: from the second byte on (the first, the map header, counts the fields).
    """
    if fmt is Format.JSON:
        return b'{"op":"%s"' % op.encode()
    return msgspec.msgpack.encode("op") + msgspec.msgpack.encode(op)


def stream_frames(fmt: Format, streams: int, chunks: int) -> tuple[list[str], list[bytes | str]]:
    """Stream ids and what icefloe sends for them, in the order it sends them.

    ``chunks`` chunks and one end per stream, encoded with ``encode_chunk``;
    the streams take turns, :data:`RUN` frames each.
    """
    ids = [new_id() for _ in range(streams)]
    encoded = [
        [
            encode_chunk(StreamChunk(sid, seq, server_child.TEXT, done=seq == chunks), fmt)
            for seq in range(chunks + 1)
        ]
        for sid in ids
    ]
    return ids, [
        frame
        for start in range(0, chunks + 1, RUN)
        for one in encoded
        for frame in one[start : start + RUN]
    ]


def _id_offset(op: str, fmt: Format) -> int:
    """Where the stream id starts in a server frame of ``op`` (``chunk`` or ``end``)."""
    sample = _bytes(encode_chunk(StreamChunk("#" * 32, 0, "", done=op == "end"), fmt))
    return sample.index(b"#" * 32)


def _start_op(fmt: Format, ref: str, payload: object) -> bytes | str:
    return encode_client(Start(ref=ref, payload=payload, headers=StartHeaders(tenant=TENANT)), fmt)


# -- the server child -----------------------------------------------------------------


class _IcefloeWs(UvicornChild):
    """``create_app`` of one node under uvicorn, with the edge's rate limits off.

    ``stream``: each run (payload = chunk count) waits at the gate, then emits;
    ``first``: each run emits one chunk and its end at once.
    """

    def __init__(self, shape: Shape) -> None:
        self.gate = asyncio.Event()
        body = self._stream if shape == "stream" else server_child.emit_one
        policy = NodePolicy(max_concurrency=MANY)
        # Load shedding off: a saturated loop must not refuse the next run's starts.
        self.flow = create(Node(body, name=shape, policy=policy).to(), congestion=None)
        settings = EdgeSettings(
            edge_limits=EdgeLimits(requests_per_s=None, max_connections=None),
        )
        app = create_app(self.flow, settings)
        super().__init__(app, "ws_protocol_class", **server_options(settings))

    async def _stream(self, msg: Message, ctx: Context) -> None:
        await server_child.emit_gated(self.gate, msg, ctx)

    def prepare(self, fmt: Format, streams: int, chunks: int) -> None:
        self.gate = asyncio.Event()


class _RawWs:
    """A bare ``websockets`` server sending pre-encoded frames; no icefloe at run time."""

    description = f"websockets {websockets.__version__} asyncio.server.serve"

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.gate = asyncio.Event()
        self.ids: list[str] = []
        self.frames: list[bytes | str] = []
        self._server: websockets.asyncio.server.Server | None = None

    def prepare(self, fmt: Format, streams: int, chunks: int) -> None:
        self.gate = asyncio.Event()
        self.ids, self.frames = stream_frames(fmt, streams, chunks)

    async def start(self, sock: socket.socket) -> None:
        # compression="deflate" is the default: used when the client offers it.
        self._server = await serve(
            self._handler,
            sock=sock,
            subprotocols=[*SUBPROTOCOLS, SUBPROTOCOL_MSGPACK_ZSTD],
            compression="deflate",
        )

    async def _handler(self, ws: ServerConnection) -> None:
        zstd = ws.subprotocol == SUBPROTOCOL_MSGPACK_ZSTD
        fmt = Format.MSGPACK if zstd else SUBPROTOCOLS[ws.subprotocol or ""]
        decode = msgspec.json.decode if fmt is Format.JSON else msgspec.msgpack.decode
        if zstd:
            # One zstd stream per connection, every message compressed as it goes.
            squeeze = ZstdMessageCompressor().compress
            send = ws.send
            ws.send = lambda frame: send(squeeze(frame))  # type: ignore[assignment,method-assign,arg-type]
        try:
            if self.shape == "first":
                await self._first(ws, fmt, decode)
                return
            answering = asyncio.ensure_future(self._answer(ws, fmt, decode))
            try:
                await self.gate.wait()
                for frame in self.frames:
                    await ws.send(frame)
                await answering  # until the client closes
            finally:
                answering.cancel()
        except ConnectionClosed:
            pass

    async def _answer(self, ws: ServerConnection, fmt: Format, decode: Callable[..., dict]) -> None:
        """``started`` for each ``start`` (the prepared ids in turn), ``pong`` for ``ping``."""
        ids = iter(self.ids)
        async for frame in ws:
            op = decode(frame)
            if op["op"] == "start":
                await ws.send(encode_server(Started(ref=op["ref"], stream_id=next(ids)), fmt))
            elif op["op"] == "ping":
                await ws.send(encode_server(Pong(ref=op.get("ref")), fmt))

    async def _first(self, ws: ServerConnection, fmt: Format, decode: Callable[..., dict]) -> None:
        """``started``, ``chunk`` and ``end`` for each ``start``, encoded once per ``ref``."""
        sid = new_id()
        chunk = encode_chunk(StreamChunk(sid, 0, server_child.TEXT), fmt)
        end = encode_chunk(StreamChunk(sid, 1, "", done=True), fmt)
        started: dict[str, bytes | str] = {}
        async for frame in ws:
            op = decode(frame)
            if op["op"] == "start":
                ref = op["ref"]
                if ref not in started:
                    started[ref] = encode_server(Started(ref=ref, stream_id=sid), fmt)
                await ws.send(started[ref])
                await ws.send(chunk)
                await ws.send(end)

    async def stop(self) -> None:
        await server_child.close_listener(self._server)


Server = _IcefloeWs | _RawWs


async def _serve(kind: Kind, shape: Shape) -> None:
    server: Server = _IcefloeWs(shape) if kind == "icefloe" else _RawWs(shape)
    # ``prepare FORMAT STREAMS CHUNKS``: a new gate; the floor encodes its frames.
    await server_child.serve_child(
        server,
        {"prepare": lambda args: server.prepare(FORMATS[args[0]], int(args[1]), int(args[2]))},
    )


def serve_main(argv: Sequence[str] | None = None) -> int:
    """The server child: ``python -P bench/ws.py KIND SHAPE [--uvloop]``."""
    parser = argparse.ArgumentParser(description="a WebSocket bench server driven over stdin")
    parser.add_argument("kind", choices=["icefloe", "raw"])
    parser.add_argument("shape", choices=["stream", "first"])
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=server_child.loop_factory(args.uvloop)) as runner:
        runner.run(_serve(args.kind, args.shape))
    return 0


# -- the benchmark's side ---------------------------------------------------------------


def spawned(
    kind: Kind, shape: Shape, *, uvloop: bool
) -> AbstractAsyncContextManager[ServerProcess]:
    """A server child serving ``shape`` as ``kind`` on 127.0.0.1, stopped on exit."""
    return server_child.spawned(THIS_FILE, kind, shape, uvloop=uvloop)


class LeanClient:
    """A WebSocket client doing the least per received frame, for both servers alike.

    The handshake is written by hand (one subprotocol, permessage-deflate
    offered or not); frames are parsed straight from the socket's bytes, a
    read of up to :data:`READ_SIZE` at a time, with no per-frame objects, so
    the client's core is not what limits either server (the ``websockets``
    client costs about 11 µs per frame here, and with it the floor ran at the
    client's pace). Messages it sends are masked and never compressed (RFC 7692 lets
    a client choose per message). Server messages must not be fragmented
    (neither server fragments small ones); pings are answered.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fmt: Format,
        zstd: bool = False,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.fmt = fmt
        self.subprotocol = SUBPROTOCOL_MSGPACK_ZSTD if zstd else SUBPROTOCOL[fmt]
        #: set on icefloe.v1.msgpack+zstd: every server message is a piece of one zstd stream
        self.unzstd = ZstdMessageDecompressor().decompress if zstd else None
        self._opcode = 0x1 if fmt is Format.JSON else 0x2
        #: set when the server accepted permessage-deflate
        self.inflate: Callable[[bytes], bytes] | None = None
        self._buffer = b""
        self._pending: list[bytes] = []
        #: bytes read from the socket so far (frames as sent, compressed or not)
        self.wire_bytes = 0

    @classmethod
    async def open(cls, port: int, fmt: Format, deflate: bool, zstd: bool = False) -> LeanClient:
        reader, writer = await asyncio.open_connection(LOOPBACK, port, limit=2 * READ_SIZE)
        client = cls(reader, writer, fmt, zstd)
        try:
            await client._handshake(port, deflate)
        except BaseException:
            writer.close()
            raise
        return client

    async def _handshake(self, port: int, deflate: bool) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET /v1/ws HTTP/1.1",
            f"Host: {LOOPBACK}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            f"Sec-WebSocket-Protocol: {self.subprotocol}",
        ]
        if deflate:
            lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            head = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        if not head.startswith("http/1.1 101"):
            raise RuntimeError(f"handshake refused: {head.splitlines()[0]!r}")
        accepted = "permessage-deflate" in head
        if accepted != deflate:
            raise RuntimeError(f"permessage-deflate asked {deflate}, accepted {accepted}")
        if accepted:
            # The server keeps its context between messages unless it says otherwise;
            # one decompressor with the largest window reads either way.
            inflater = zlib.decompressobj(wbits=-15)
            self.inflate = lambda payload: inflater.decompress(payload + DEFLATE_TAIL)

    # -- sending -----------------------------------------------------------------------

    def _write_frame(self, opcode: int, payload: bytes) -> None:
        size = len(payload)
        if size < 126:
            head = bytes((0x80 | opcode, 0x80 | size))
        elif size < 1 << 16:
            head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
        else:
            head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
        mask = os.urandom(4)
        keystream = (mask * (size // 4 + 1))[:size]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(
            size, "big"
        )
        self._writer.write(head + mask + masked)

    async def send(self, frame: bytes | str) -> None:
        self._write_frame(self._opcode, _bytes(frame))
        await self._writer.drain()

    # -- receiving ---------------------------------------------------------------------

    def _split(self, data: bytes) -> list[bytes]:
        """Every complete data message in what was buffered plus ``data``.

        Control frames are handled here: ping gets a pong, close ends the run.
        """
        buffer = self._buffer + data if self._buffer else data
        end = len(buffer)
        inflate = self.inflate
        unzstd = self.unzstd
        messages: list[bytes] = []
        pos = 0
        while end - pos >= 2:
            first, size = buffer[pos], buffer[pos + 1]
            head = 2
            if size >= 126:
                if size > 127:
                    raise RuntimeError("the server masked a frame")
                head = 4 if size == 126 else 10
                if end - pos < head:
                    break
                size = int.from_bytes(buffer[pos + 2 : pos + head], "big")
            stop = pos + head + size
            if stop > end:
                break
            payload = buffer[pos + head : stop]
            pos = stop
            opcode = first & 0x0F
            if opcode in (0x1, 0x2):
                if not first & 0x80:
                    raise RuntimeError("the server fragmented a message")
                if first & 0x40:
                    if inflate is None:
                        raise RuntimeError("compressed frame without permessage-deflate")
                    payload = inflate(payload)
                if unzstd is not None:
                    payload = unzstd(payload)
                messages.append(payload)
            elif opcode == 0x9:
                self._write_frame(0xA, payload)
            elif opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if payload else 1005
                raise ConnectionError(f"the server closed the connection: {code} {payload[2:]!r}")
            elif opcode != 0xA:
                raise RuntimeError(f"unexpected frame opcode {opcode:#x}")
        self._buffer = buffer[pos:]
        return messages

    async def _read(self) -> list[bytes]:
        data = await self._reader.read(READ_SIZE)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.wire_bytes += len(data)
        return self._split(data)

    async def recv(self) -> bytes:
        """The next data message (decompressed)."""
        while not self._pending:
            self._pending = await self._read()
        return self._pending.pop(0)

    async def expect(self, op: str) -> dict[str, object]:
        """The next message, which must be ``op``, decoded."""
        frame = await self.recv()
        if self.fmt is Format.JSON:
            decoded = msgspec.json.decode(frame)
        else:
            decoded = msgspec.msgpack.decode(frame)
        if not isinstance(decoded, dict) or decoded.get("op") != op:
            raise RuntimeError(f"expected {op}, got {frame[:300]!r}")
        return decoded

    async def count_frames(self, streams: int) -> tuple[int, int]:
        """``chunk`` and ``end`` messages until every stream's ``end``; anything else fails.

        Returns the messages and the runs among them (a run: consecutive
        messages of one stream).
        """
        fmt = self.fmt
        chunk, end = _op_prefix("chunk", fmt), _op_prefix("end", fmt)
        at = 0 if fmt is Format.JSON else 1
        chunk_id, end_id = _id_offset("chunk", fmt), _id_offset("end", fmt)
        frames = ends = runs = 0
        last = b""
        batch, self._pending = self._pending, []
        while True:
            for message in batch:
                if message.startswith(chunk, at):
                    sid = message[chunk_id : chunk_id + 32]
                elif message.startswith(end, at):
                    sid = message[end_id : end_id + 32]
                    ends += 1
                else:
                    raise RuntimeError(f"unexpected message {message[:300]!r}")
                if sid != last:
                    runs += 1
                    last = sid
            frames += len(batch)
            if ends >= streams:
                return frames, runs
            batch = await self._read()

    async def close(self) -> None:
        """Close handshake (1000), bounded; the socket is closed whatever happens."""
        try:
            self._write_frame(0x8, (1000).to_bytes(2, "big"))
            async with asyncio.timeout(STOP_TIMEOUT_S):
                while True:
                    await self._read()
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()


@asynccontextmanager
async def _connected(
    server: ServerProcess, fmt: Format, deflate: bool, zstd: bool = False
) -> AsyncIterator[LeanClient]:
    client = await LeanClient.open(server.port, fmt, deflate, zstd)
    try:
        yield client
    finally:
        await client.close()


async def _open_streams(client: LeanClient, streams: int, chunks: int) -> None:
    """``start`` each stream, grant its credit, and ``ping`` until the server took it all.

    One ``start`` at a time: a burst of them would find the flow's ingress
    queue (64 runs) full and get ``overloaded``.
    """
    fmt = client.fmt
    for i in range(streams):
        await client.send(_start_op(fmt, f"s{i}", chunks))
        started = await client.expect("started")
        await client.send(encode_client(Credit(stream_id=str(started["stream_id"]), n=CREDIT), fmt))
    await client.send(encode_client(Ping(ref="sync"), fmt))
    await client.expect("pong")


async def _stream_run(
    server: ServerProcess, fmt: Format, streams: int, deflate: bool, zstd: bool, frames: int
) -> Sample:
    """``frames`` chunk and end messages over one connection, on ``streams`` streams."""
    chunks = max(1, frames // streams - 1)
    expected = streams * (chunks + 1)
    fmt_name = "json" if fmt is Format.JSON else "msgpack"
    await server.command(f"prepare {fmt_name} {streams} {chunks}")
    async with _connected(server, fmt, deflate, zstd) as client:
        await _open_streams(client, streams, chunks)
        await server.command("gc")
        with server_child.cpu_spent(server) as cpu:
            wire_bytes = client.wire_bytes
            start = time.perf_counter()
            server.send("go")
            async with asyncio.timeout(RUN_TIMEOUT_S):
                got, runs = await client.count_frames(streams)
            elapsed = time.perf_counter() - start
            wire_bytes = client.wire_bytes - wire_bytes
        await server.answer()
    if got != expected:
        raise RuntimeError(f"got {got} frames, expected {expected}")
    return {
        CHUNKS_PER_S.name: got / elapsed,
        **cpu.shares(elapsed),
        "server_cpu_us_per_frame": 1e6 * cpu.server / got,
        "wire_bytes_per_frame": wire_bytes / got,
        "frames_per_run": got / runs,
    }


async def _first_chunk_run(server: ServerProcess, iterations: int) -> Sample:
    """ns from sending ``start`` until its first ``chunk`` is in, ``iterations`` times."""
    fmt = Format.JSON
    chunk, end = _op_prefix("chunk", fmt), _op_prefix("end", fmt)
    start_op = _start_op(fmt, "f", None)
    clock = time.perf_counter_ns
    latencies: list[int] = []
    async with _connected(server, fmt, deflate=False) as client:
        with server_child.cpu_spent(server) as cpu:
            async with asyncio.timeout(RUN_TIMEOUT_S):
                for _ in range(iterations):
                    begin = clock()
                    await client.send(start_op)
                    started = await client.recv()
                    first = await client.recv()
                    latencies.append(clock() - begin)
                    last = await client.recv()
                    if not (first.startswith(chunk) and last.startswith(end)):
                        raise RuntimeError(f"expected chunk and end, got {first!r}, {last!r}")
                    sid = msgspec.json.decode(started)["stream_id"]
                    await client.send(encode_client(Ack(stream_id=sid, seq=1), fmt))
    return {**latency_ms_sample(latencies), **cpu.ms_per(iterations)}


@asynccontextmanager
async def _session(
    shape: Shape, uvloop: bool
) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    """Both server children of a scenario, started at the same time, both stopped on exit."""
    async with contextlib.AsyncExitStack() as stack:
        raw, ice = await asyncio.gather(
            stack.enter_async_context(spawned("raw", shape, uvloop=uvloop)),
            stack.enter_async_context(spawned("icefloe", shape, uvloop=uvloop)),
        )
        yield raw, ice


@asynccontextmanager
async def stream_session(
    fmt: Format, streams: int, deflate: bool, uvloop: bool, zstd: bool = False
) -> AsyncIterator[tuple[RunFn, RunFn]]:
    async with _session("stream", uvloop) as (raw, ice):
        yield (
            partial(_stream_run, raw, fmt, streams, deflate, zstd),
            partial(_stream_run, ice, fmt, streams, deflate, zstd),
        )


@asynccontextmanager
async def first_chunk_session(uvloop: bool) -> AsyncIterator[tuple[RunFn, RunFn]]:
    async with _session("first", uvloop) as (raw, ice):
        yield partial(_first_chunk_run, raw), partial(_first_chunk_run, ice)


def ws_scenarios(divisor: int, uvloop: bool) -> tuple[HttpScenario, ...]:
    """The WebSocket scenario table, sizes divided by ``divisor``."""
    from edge import HttpScenario

    frames = FRAMES // divisor
    table = [
        HttpScenario(
            f"ws_{fmt_name}_{streams}{'_deflate' if deflate else ''}",
            frames,
            "chunks/s",
            (CHUNKS_PER_S,),
            partial(stream_session, fmt, streams, deflate, uvloop),
            warm_up=True,
            rounds=STREAM_ROUNDS,
            params={"streams": streams, "deflate": int(deflate)},
        )
        for fmt_name, fmt in FORMATS.items()
        for streams in (1, MANY)
        for deflate in (False, True)
    ]
    table += [
        HttpScenario(
            f"ws_msgpack_{streams}_zstd",
            frames,
            "chunks/s",
            (CHUNKS_PER_S,),
            partial(stream_session, Format.MSGPACK, streams, False, uvloop, True),
            warm_up=True,
            rounds=STREAM_ROUNDS,
            params={"streams": streams, "zstd": 1},
        )
        for streams in (1, MANY)
    ]
    table.append(
        HttpScenario(
            "ws_first_chunk",
            FIRST_CHUNK_ITERATIONS // divisor,
            "ms",
            (P50_MS, P99_MS),
            partial(first_chunk_session, uvloop),
            warm_up=True,
            rounds=FIRST_CHUNK_ROUNDS,
        )
    )
    return tuple(table)


if __name__ == "__main__":
    raise SystemExit(serve_main())
