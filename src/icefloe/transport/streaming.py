"""The body of ``GET /v1/streams/{id}``: a reader pumped onto one HTTP response.

One loop per connection, written against raw ASGI so that every limit is
explicit:

* Everything the reader holds is drained without waiting and goes out in one
  write, so a client that lags receives several events per write.
* Each write must finish within ``send_timeout_s``; a client that does not
  drain (uvicorn's ``send`` waits on the socket's write buffer) is cut and
  its reader freed.
* A heartbeat (SSE ``: ping`` comment, NDJSON empty line) goes out after
  ``heartbeat_s`` without data; a client that vanished fails those writes, so
  it is noticed within two heartbeats even when no token flows.
* A parallel watcher reads ASGI ``receive`` and ends the pump as soon as the
  client disconnects.
* ``Accept-Encoding: gzip`` is honoured with a sync flush per write, so
  compression never holds a token back.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from icefloe.core.messages import StreamChunk
from icefloe.exceptions import EndOfStream, StreamError, WouldBlock
from icefloe.runtime.subscription import Subscription
from icefloe.transport.encoding import (
    NDJSON_HEARTBEAT,
    SSE_PING,
    WireFormat,
    ndjson_chunk,
    ndjson_error,
    sse_chunk,
    sse_error,
    sse_retry,
)

__all__ = ["PumpSettings", "StreamPump"]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]


@dataclass(frozen=True, slots=True)
class PumpSettings:
    """Per-connection limits of a streaming response."""

    #: seconds without data before a heartbeat is written
    heartbeat_s: float = 15.0
    #: seconds one write may take before the client is cut
    send_timeout_s: float = 10.0
    #: the SSE ``retry:`` hint, milliseconds
    retry_ms: int = 2000
    #: bytes gathered into one write at most (a lagging client gets several writes)
    max_write_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        if not self.heartbeat_s > 0 or not self.send_timeout_s > 0 or self.retry_ms < 0:
            raise ValueError("heartbeat_s and send_timeout_s must be > 0, retry_ms >= 0")
        if self.max_write_bytes < 1:
            raise ValueError("max_write_bytes must be >= 1")


class SlowClient(Exception):
    """A write did not finish within ``send_timeout_s``."""


class StreamPump:
    """An ASGI app streaming one :class:`Subscription` as SSE or NDJSON."""

    def __init__(
        self,
        reader: Subscription,
        fmt: WireFormat,
        settings: PumpSettings,
        *,
        gzip: bool = False,
        on_chunks: Callable[[StreamChunk, int, int], None] | None = None,
        on_end: Callable[[str], None] | None = None,
    ) -> None:
        self.reader = reader
        self.fmt = fmt
        self.settings = settings
        self._gzip = zlib.compressobj(6, zlib.DEFLATED, 31) if gzip else None
        # Observability hooks: (first chunk of a write, chunks, bytes) and why it ended.
        self._on_chunks = on_chunks
        self._on_end = on_end
        if fmt is WireFormat.SSE:
            self._chunk, self._error, self._beat = sse_chunk, sse_error, SSE_PING
        else:
            self._chunk, self._error, self._beat = ndjson_chunk, ndjson_error, NDJSON_HEARTBEAT

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", f"{self.fmt.value}; charset=utf-8".encode()),
            (b"cache-control", b"no-cache, no-transform"),
            (b"x-accel-buffering", b"no"),
        ]
        if self._gzip is not None:
            headers.append((b"content-encoding", b"gzip"))
            headers.append((b"vary", b"accept-encoding"))
        outcome = "disconnected"
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            pump = asyncio.ensure_future(self._pump(send))
            watch = asyncio.ensure_future(_wait_disconnect(receive))
            try:
                await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (pump, watch):
                    task.cancel()
                await asyncio.gather(pump, watch, return_exceptions=True)
            if pump.done() and not pump.cancelled():
                exc = pump.exception()
                if exc is None:
                    outcome = pump.result()
                elif isinstance(exc, SlowClient):
                    outcome = "slow_client"
                elif isinstance(exc, OSError):
                    outcome = "disconnected"
                else:
                    raise exc
        finally:
            self.reader.close()
            if self._on_end is not None:
                self._on_end(outcome)

    async def _pump(self, send: Send) -> str:
        reader = self.reader
        encode = self._chunk
        out = bytearray(sse_retry(self.settings.retry_ms) if self.fmt is WireFormat.SSE else b"")
        limit = self.settings.max_write_bytes
        while True:
            outcome = None
            first: StreamChunk | None = None
            count = 0
            full = False
            while True:
                if len(out) >= limit:
                    full = True
                    break
                try:
                    chunk = reader.receive_nowait()
                except WouldBlock:
                    break
                except EndOfStream:
                    outcome = "done"
                    break
                except StreamError as exc:
                    out += self._error(exc.code.value, exc.message)
                    outcome = exc.code.value
                    break
                if first is None:
                    first = chunk
                out += encode(chunk)
                count += 1
            if out or outcome is not None:
                size = len(out)
                await self._write(send, out, more=outcome is None)
                out = bytearray()
                if first is not None and self._on_chunks is not None:
                    self._on_chunks(first, count, size)
            if outcome is not None:
                return outcome
            if full:
                continue
            try:
                async with asyncio.timeout(self.settings.heartbeat_s):
                    await reader.wait()
            except TimeoutError:
                out += self._beat

    async def _write(self, send: Send, data: bytearray, *, more: bool) -> None:
        body = bytes(data)
        if self._gzip is not None:
            body = self._gzip.compress(body) + (
                self._gzip.flush(zlib.Z_SYNC_FLUSH) if more else self._gzip.flush()
            )
        try:
            async with asyncio.timeout(self.settings.send_timeout_s):
                await send({"type": "http.response.body", "body": body, "more_body": more})
        except TimeoutError:
            raise SlowClient from None


async def _wait_disconnect(receive: Receive) -> str:
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return "disconnected"
