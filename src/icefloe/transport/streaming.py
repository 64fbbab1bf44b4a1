"""The body of ``GET /v1/streams/{id}``: a reader pumped onto one HTTP response.

One loop per connection, written against raw ASGI so that every limit is
explicit:

* Everything the reader holds is drained without waiting and goes out in one
  write, so a client that lags receives several events per write. Events are
  encoded once per stream and format (:mod:`icefloe.transport.shared`).
* Each write must finish within ``send_timeout_s``; a client that does not
  drain (uvicorn's ``send`` waits on the socket's write buffer) is cut and
  its reader freed; the cut is logged at INFO, aggregated
  (:data:`~icefloe.transport.logfilter.CUTS`).
* A heartbeat (SSE ``: ping`` comment, NDJSON empty line) goes out after
  ``heartbeat_s`` without data; a client that vanished fails those writes, so
  it is noticed within two heartbeats even when no token flows.
* A parallel watcher reads ASGI ``receive`` and ends the pump as soon as the
  client disconnects.
* ``PumpSettings.bytes_per_s`` caps the connection's body bytes per second
  with a token bucket: the pump waits before a write the bucket cannot pay
  for, the reader falls behind (and, past its lag limit, gets
  ``history_gone``), and nothing is dropped or reordered.
* ``Accept-Encoding: gzip`` is honoured with a sync flush per write, so
  compression never holds a token back.
* A draining gateway (issue 12, :mod:`icefloe.transport.drain`) hands the
  pump off: between two writes it sends a ``retry:`` hint and an ``event:
  reconnect`` (NDJSON: a ``{"reconnect": ...}`` line) and ends the body, so
  the client resumes with ``Last-Event-ID`` on another gateway. Nothing taken
  from the reader is left unwritten.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from icefloe.core.messages import StreamChunk
from icefloe.core.token_bucket import TokenBucket
from icefloe.exceptions import IcefloeError, StreamError
from icefloe.runtime.throttle import pace
from icefloe.transport.drain import DRAIN_SCOPE_KEY, Drain, reconnect_delay_ms
from icefloe.transport.encoding import (
    NDJSON_HEARTBEAT,
    SSE_PING,
    WireFormat,
    ndjson_chunk,
    ndjson_error,
    ndjson_reconnect,
    sse_chunk,
    sse_error,
    sse_reconnect,
    sse_retry,
)
from icefloe.transport.logfilter import CUTS, mark_response_cut
from icefloe.transport.shared import EncodedLog, Taken
from icefloe.transport.types import RAW_SEND, Receive, Scope, Send

__all__ = ["PumpSettings", "StreamPump"]


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
    #: body bytes per second on one connection (after gzip); None: no limit
    bytes_per_s: float | None = None
    #: the bucket's burst in bytes (None: a tenth of a second of ``bytes_per_s``,
    #: at least 1 KiB); writes are cut to it, so it also caps the write size
    burst_bytes: int | None = None

    def __post_init__(self) -> None:
        if not self.heartbeat_s > 0 or not self.send_timeout_s > 0 or self.retry_ms < 0:
            raise ValueError("heartbeat_s and send_timeout_s must be > 0, retry_ms >= 0")
        if self.max_write_bytes < 1:
            raise ValueError("max_write_bytes must be >= 1")
        rate = self.bytes_per_s
        if rate is not None and not (isinstance(rate, int | float) and 0 < rate < float("inf")):
            raise ValueError(f"bytes_per_s must be a finite number > 0 or None, got {rate!r}")
        if self.burst_bytes is not None and self.burst_bytes < 1:
            raise ValueError(f"burst_bytes must be >= 1 or None, got {self.burst_bytes!r}")

    def bucket(self) -> TokenBucket | None:
        """A fresh bytes/s bucket for one connection (None: no limit)."""
        rate = self.bytes_per_s
        if rate is None:
            return None
        burst = self.burst_bytes or max(1024, int(rate / 10))
        return TokenBucket(rate, burst, time.monotonic)


class PumpReader(Protocol):
    """What a pump reads: a stream :class:`Subscription` or a hub subscription."""

    def held(self) -> int: ...
    async def wait(self) -> None: ...
    def interrupt(self) -> None: ...
    def end_reason(self) -> IcefloeError | None: ...
    def close(self) -> None: ...


#: moves a reader past what it holds, up to a byte budget, and returns the bytes
Take = Callable[[Any, int], Taken | None]
#: the SSE id of a terminal (None: no id); see encoding.terminal_seq
TerminalSeq: TypeAlias = Callable[[StreamError], int | None]


class StreamPump:
    """An ASGI app streaming one reader as SSE or NDJSON.

    By default the reader is a stream :class:`Subscription` and ``log`` is
    the stream's :class:`EncodedLog` for this wire format, shared with the
    stream's other pumps (encode once; a private one when none is given).
    Any other :class:`PumpReader` comes with its own ``take`` (hub topics).
    ``terminal_seq`` gives an SSE ``error`` terminal its id (without it the
    terminal has none).

    Timers are armed lazily, never per write or per wait: the send watchdog
    and the heartbeat each fire at most once per period and re-arm from the
    time of the last write, so a busy stream pays two attribute stores per
    write for both limits.
    """

    def __init__(
        self,
        reader: PumpReader,
        fmt: WireFormat,
        settings: PumpSettings,
        *,
        gzip: bool = False,
        log: EncodedLog | None = None,
        take: Take | None = None,
        terminal_seq: TerminalSeq | None = None,
        on_chunks: Callable[[StreamChunk, int, int], None] | None = None,
        on_end: Callable[[str], None] | None = None,
        reconnect_event: bool = True,
    ) -> None:
        self.reader = reader
        self.fmt = fmt
        self.settings = settings
        self._gzip = zlib.compressobj(6, zlib.DEFLATED, 31) if gzip else None
        # Observability hooks: (first chunk of a write, chunks, bytes) and why it ended.
        self._on_chunks = on_chunks
        self._on_end = on_end
        self._terminal_seq = terminal_seq
        if fmt is WireFormat.SSE:
            self._beat = SSE_PING
            encode = sse_chunk
        else:
            self._beat = NDJSON_HEARTBEAT
            encode = ndjson_chunk
        if take is None:
            take = (log if log is not None else EncodedLog(encode)).take
        self._take: Take = take
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[str] | None = None
        #: loop time the current write started (None: not writing)
        self._writing_since: float | None = None
        self._last_write = 0.0
        self._slow = False
        self._beat_due = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._beater: asyncio.TimerHandle | None = None
        self._bucket = settings.bucket()
        #: seconds this connection waited on its bytes/s limit
        self.throttled_s = 0.0
        # Handed off by a draining gateway (issue 12): end with a reconnect hint;
        # an SSE body an AI SDK client parses gets a comment, not an event.
        self._handed_off = False
        self._reconnect_event = reconnect_event

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
        loop = self._loop = asyncio.get_running_loop()
        drain: Drain | None = scope.get(DRAIN_SCOPE_KEY)
        if drain is not None:
            drain.enlist(self)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            self._last_write = loop.time()
            # The server's own send, past middleware wrappers (see create_app).
            body_send: Send = scope.get(RAW_SEND, send)
            self._task = pump = asyncio.ensure_future(self._pump(body_send))
            watch = asyncio.ensure_future(_wait_disconnect(receive))
            self._beater = loop.call_at(self._last_write + self.settings.heartbeat_s, self._tick)
            try:
                await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (pump, watch):
                    task.cancel()
                await asyncio.gather(pump, watch, return_exceptions=True)
            if self._slow:
                outcome = "slow_client"
                # Expected and repeatable at will: one aggregated INFO line,
                # not uvicorn's ERROR for the response left unfinished.
                CUTS.refused(f"HTTP write over {self.settings.send_timeout_s:g} s (slow_client)")
                mark_response_cut()
            elif pump.done() and not pump.cancelled():
                exc = pump.exception()
                if exc is None:
                    outcome = pump.result()
                elif isinstance(exc, OSError):
                    outcome = "disconnected"
                else:
                    raise exc
        finally:
            for handle in (self._watchdog, self._beater):
                if handle is not None:
                    handle.cancel()
            if drain is not None:
                drain.leave(self)
            self.reader.close()
            if self._on_end is not None:
                self._on_end(outcome)

    def hand_off(self) -> None:
        """The gateway drains: end after the write in progress, with a reconnect hint."""
        self._handed_off = True
        self.reader.interrupt()

    def _reconnect(self) -> bytes:
        retry_ms = reconnect_delay_ms()
        if self.fmt is WireFormat.NDJSON:
            return ndjson_reconnect(retry_ms)
        return sse_reconnect(retry_ms, event=self._reconnect_event)

    async def _pump(self, send: Send) -> str:
        reader = self.reader
        take = self._take
        parts: list[bytes] = []
        if self.fmt is WireFormat.SSE:
            parts.append(sse_retry(self.settings.retry_ms))
        size = len(parts[0]) if parts else 0
        limit = self.settings.max_write_bytes
        if self._bucket is not None:
            # One write is one payment: never ask the bucket for more than it holds.
            limit = max(1, min(limit, int(self._bucket.burst)))
        while True:
            if self._handed_off:
                parts.append(self._reconnect())
                await self._write(send, parts, more=False)
                return "draining"
            outcome = None
            first: StreamChunk | None = None
            count = 0
            while size < limit:
                try:
                    taken = take(reader, limit - size)
                except StreamError as exc:
                    parts.append(self._terminal(exc))
                    outcome = exc.code.value
                    break
                if taken is None:
                    end = reader.end_reason()
                    if isinstance(end, StreamError):
                        parts.append(self._terminal(end))
                        outcome = end.code.value
                    elif end is not None:
                        outcome = "done"
                    break
                if first is None:
                    first = taken.first
                count += taken.chunks
                parts.append(taken.data)
                size += len(taken.data)
            if self._beat_due and not parts:
                parts.append(self._beat)
            self._beat_due = False
            if parts or outcome is not None:
                await self._write(send, parts, more=outcome is None)
                if first is not None and self._on_chunks is not None:
                    self._on_chunks(first, count, size)
                parts = []
                size = 0
            if outcome is not None:
                return outcome
            # A hand-off during the write found no wait to interrupt.
            if not reader.held() and not self._handed_off:
                await reader.wait()

    def _terminal(self, exc: StreamError) -> bytes:
        """An abnormal end in this pump's format (SSE: with its id, if known)."""
        if self.fmt is WireFormat.NDJSON:
            return ndjson_error(exc.code.value, exc.message)
        seq = None if self._terminal_seq is None else self._terminal_seq(exc)
        return sse_error(exc.code.value, exc.message, seq)

    async def _write(self, send: Send, parts: list[bytes], *, more: bool) -> None:
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        if self._gzip is not None:
            body = self._gzip.compress(body) + (
                self._gzip.flush(zlib.Z_SYNC_FLUSH) if more else self._gzip.flush()
            )
        if self._bucket is not None:
            self.throttled_s += await pace(self._bucket, len(body))
        assert self._loop is not None
        now = self._loop.time()
        self._writing_since = now
        if self._watchdog is None:
            self._watchdog = self._loop.call_at(now + self.settings.send_timeout_s, self._bark)
        await send({"type": "http.response.body", "body": body, "more_body": more})
        self._writing_since = None
        self._last_write = now

    def _bark(self) -> None:
        """The send watchdog: cut the client if the current write is overdue."""
        self._watchdog = None
        since = self._writing_since
        if since is None or self._loop is None:
            return  # not writing; the next write re-arms
        due = since + self.settings.send_timeout_s
        if self._loop.time() >= due:
            self._slow = True
            if self._task is not None:
                self._task.cancel()
        else:
            self._watchdog = self._loop.call_at(due, self._bark)

    def _tick(self) -> None:
        """The heartbeat clock: wake an idle pump to write a heartbeat."""
        assert self._loop is not None
        due = self._last_write + self.settings.heartbeat_s
        now = self._loop.time()
        if now >= due and self._writing_since is None:
            self._beat_due = True
            self.reader.interrupt()
            due = now + self.settings.heartbeat_s
        self._beater = self._loop.call_at(due, self._tick)


async def _wait_disconnect(receive: Receive) -> str:
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return "disconnected"
