"""The send path of one WebSocket connection: fair, packed, paced and compressed.

Everything a :class:`~icefloe.transport.websocket.WsConnection` sends goes
through one :class:`WsSender`, in one of two ways:

* **Control ops** (``welcome``, ``started``, ``pong``, op errors, topic
  ``event`` ops) are sent at once with :meth:`WsSender.send`.
* **Stream chunks** are queued per stream by the stream's pump
  (:meth:`WsSender.push_chunks`) and written by one writer task, which takes
  them in weighted fair order: deficit round robin
  (:class:`~icefloe.core.drr.DeficitRoundRobin`) keyed by stream, weight
  ``2 ** priority`` (:func:`~icefloe.runtime.fair.priority_weight`), cost the
  encoded bytes. A stream flooding the connection gets its share and no
  more; a more urgent stream on the same connection gets ``2 ** Δpriority``
  times the bytes while both have chunks ready, and waits at most about one
  turn of every other backlogged stream. A stream's terminal ``error`` is
  queued behind its chunks (:meth:`WsSender.push_tail`), so it never
  overtakes them.

Whatever the writer finds queued at once (the connection lags) it takes as
one run, at most ``batch_bytes`` per run; when the client asked for batches
(``hello {batch: true}``), the chunks of the run are packed into ``chunks``
ops, one WebSocket message (and one transport write) for many chunks. Each
chunk keeps its own seq and has already consumed its own credit. Topic
``event`` ops take the same paced path (:meth:`WsSender.send_bulk`), in
runs of the same size.

Then each message is compressed (``icefloe.v1.msgpack+zstd``) and sent under
the write lock, within the send timeout. The connection's bandwidth limit (a
:class:`~icefloe.core.token_bucket.TokenBucket` over the bytes handed to the
WebSocket layer, paid through :func:`~icefloe.runtime.throttle.pace`) is waited
for *before* the write lock is taken: a paced run reserves its bytes, waits
until the budget covers them, and only then takes the lock to write, so a
control op never waits for the limit, only for the write in progress. Paced
runs wait for their turn one at a time (a second lock, ``_bulk``), so runs
go out in the order they were taken. Control ops are charged to the budget
without waiting. The pacing wait does not count against the send timeout.

Bounds: each stream queues at most ``stream_queue_bytes`` of encoded chunks
(plus one chunk); its pump waits for room. The DRR holds nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from icefloe.core.codec import Format
from icefloe.core.drr import DeficitRoundRobin
from icefloe.core.ops import encode_chunks
from icefloe.core.token_bucket import TokenBucket
from icefloe.core.wire_errors import CloseReason
from icefloe.core.wszstd import ZstdMessageCompressor
from icefloe.runtime.throttle import pace
from icefloe.transport.logfilter import CUTS

__all__ = ["WsSendStatistics", "WsSender"]

Frame = bytes | str

logger = logging.getLogger("icefloe.ws")


class _Tail:
    """A non-chunk frame queued behind a stream's chunks (its terminal ``error``)."""

    __slots__ = ("frame",)

    def __init__(self, frame: Frame) -> None:
        self.frame = frame


class WsSendStatistics(NamedTuple):
    """A snapshot of one connection's send path."""

    #: WebSocket messages sent
    messages: int
    #: their payload bytes as handed to the WebSocket layer (after zstd, before
    #: permessage-deflate and framing); text frames count their UTF-8 bytes
    bytes: int
    #: ``chunk``/``end`` ops sent (written without error), alone or in ``chunks`` ops
    chunks: int
    #: ``chunks`` ops sent (each carries two or more chunks)
    batches: int
    #: chunks queued now, waiting for their turn (a queued terminal ``error`` is not one)
    queued_chunks: int
    #: encoded bytes of those chunks
    queued_bytes: int
    #: streams with queued chunks now
    backlogged_streams: int
    #: the bandwidth limit in bytes per second (``None``: unlimited)
    bytes_per_s: float | None
    #: seconds the send path waited for the bandwidth limit
    paced_s: float
    #: bytes before zstd compression (0 when the connection does not compress)
    uncompressed_bytes: int


def _size(frame: Frame) -> int:
    if isinstance(frame, bytes):
        return len(frame)
    # isascii is O(1) on CPython; only non-ASCII text pays for the encode.
    return len(frame) if frame.isascii() else len(frame.encode())


class WsSender:
    """The send path of one connection (see the module docstring).

    :param send: the ASGI ``send`` callable.
    :param fmt: the connection's format: JSON (text frames) or msgpack (binary).
    :param compress: zstd-compress every message (``icefloe.v1.msgpack+zstd``).
    :param send_timeout_s: seconds one run of sends may take.
    :param cut: ``cut(reason)`` ends the connection: called with
        :attr:`~CloseReason.SLOW_CONSUMER` (1008) when a send times out (before
        ``TimeoutError`` is raised), :attr:`~CloseReason.INTERNAL` (1011) on a bug.
    :param quantum_bytes: bytes a stream of priority 0 may send per DRR turn.
    :param stream_queue_bytes: encoded bytes one stream may have queued.
    :param batch_bytes: bytes of chunks the writer takes per run (and per ``chunks`` op).
    :param bytes_per_s: the connection's bandwidth limit; ``None``: unlimited.
    :param burst_bytes: bytes that may go out at once above the limit's pace.
    :param weight: the DRR weight of a priority.
    :param clock: the bandwidth limit's clock (monotonic seconds).
    """

    def __init__(
        self,
        send: Callable[[dict[str, Any]], Any],
        fmt: Format,
        *,
        compress: bool,
        send_timeout_s: float,
        cut: Callable[[CloseReason], None],
        quantum_bytes: int,
        stream_queue_bytes: int,
        batch_bytes: int,
        bytes_per_s: float | None,
        burst_bytes: int,
        weight: Callable[[int], float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._raw = send
        self._fmt = fmt
        self._key = "bytes" if compress or fmt is not Format.JSON else "text"
        self._zstd = ZstdMessageCompressor() if compress else None
        self._timeout = send_timeout_s
        self._cut = cut
        self._weight = weight
        self._stream_queue_bytes = stream_queue_bytes
        # Under a bandwidth limit a run takes at most a burst: what is taken is
        # committed to the wire, and a stream arriving later waits behind it.
        #: bytes per run (of chunks, or of topic events)
        self.run_bytes = batch_bytes if bytes_per_s is None else min(batch_bytes, burst_bytes)
        self._budget = None if bytes_per_s is None else TokenBucket(bytes_per_s, burst_bytes, clock)
        #: pack the chunks of a run into ``chunks`` ops (the client's ``hello``)
        self.batch = False
        self._lock = asyncio.Lock()  # held while writing, never while pacing
        self._bulk = asyncio.Lock()  # paced runs, one at a time, in the order taken
        self._drr: DeficitRoundRobin[str, Frame | _Tail] = DeficitRoundRobin(
            quantum=quantum_bytes,
            max_items=None,  # bounded per stream in bytes, below
        )
        self._queued: dict[str, int] = {}  # encoded bytes of chunks queued per stream
        self._tails = 0  # terminal frames queued (in the DRR, not counted as chunks)
        self._finished: set[str] = set()  # streams to forget once their queue drains
        self._room: dict[str, asyncio.Future[None]] = {}  # pumps waiting for room
        self._wakeup: asyncio.Future[None] | None = None
        #: the writer task is not writing (not started, or waiting for work)
        self._idle = True
        self._writer: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._messages = self._bytes = self._chunks = self._batches = 0
        self._paced_s = 0.0

    # -- control ops ---------------------------------------------------------------

    async def send(self, *frames: Frame) -> None:
        """Send frames in order, as one uninterrupted run, within the send timeout.

        They never wait for the bandwidth limit (only for a write in progress),
        but are charged to it.

        :raises TimeoutError: the client did not take them in time (``cut`` was
            called first).
        :raises ConnectionResetError: the connection is closed.
        """
        async with self._lock:
            await self._write(frames, 0)

    async def send_bulk(self, frames: Sequence[Frame]) -> None:
        """Send frames in order (topic ``event`` ops), paced like stream chunks.

        The caller keeps a run under :attr:`run_bytes`. A failure cuts the
        connection as the writer's would.

        :raises TimeoutError: the client did not take them in time (the connection is cut).
        :raises ConnectionResetError: the connection is closed or broken.
        """
        try:
            if self._budget is None:
                async with self._lock:
                    await self._write(frames, 0)
            else:
                async with self._bulk:
                    await self._paced(frames)
        except Exception as exc:
            if self._broken(exc):
                raise ConnectionResetError("the connection is broken") from exc
            raise

    # -- stream chunks -------------------------------------------------------------

    def add_stream(self, key: str, priority: int) -> None:
        """Get ready to queue chunks of stream ``key``, served by its ``priority``."""
        self._finished.discard(key)
        self._drr.set_weight(key, self._weight(priority))
        self._queued.setdefault(key, 0)

    def room(self, key: str) -> int:
        """Encoded bytes stream ``key`` may still queue (it may overshoot by one chunk)."""
        return self._stream_queue_bytes - self._queued.get(key, 0)

    async def wait_room(self, key: str) -> None:
        """Wait until stream ``key`` has room again (half its queue has gone out).

        :raises ConnectionResetError: the writer stopped (the connection is ending).
        """
        self._check()
        waiter = self._room.get(key)
        if waiter is None or waiter.done():
            waiter = self._room[key] = asyncio.get_running_loop().create_future()
        await waiter

    def push_chunks(self, key: str, frames: Sequence[Frame]) -> bool:
        """Queue encoded ``chunk``/``end`` frames of stream ``key``, in seq order.

        Nothing waits here: the pump asks :meth:`room` first. Returns True when
        the writer is idle: the caller should then :meth:`drain` itself, which
        saves the hand-over to the writer task on an idle connection.
        """
        self._check()
        push = self._drr.push
        total = 0
        for frame in frames:
            cost = len(frame)
            push(key, frame, cost or 1)
            total += cost
        self._queued[key] = self._queued.get(key, 0) + total
        if self._idle and not self._lock.locked() and not self._bulk.locked():
            return True
        self._wake()
        return False

    async def drain(self) -> None:
        """Write one run now, in this task (see :meth:`push_chunks`); the writer
        task takes over if more is queued. A failure is handled as the writer
        handles it (a bug cuts the connection with 1011).

        :raises TimeoutError: the client did not take it in time (the connection is cut).
        :raises ConnectionResetError: the connection is closed or broken.
        """
        try:
            await self._write_run()
        except Exception as exc:
            if self._broken(exc):
                raise ConnectionResetError("the connection is broken") from exc
            raise
        if self._drr:
            self._wake()

    def push_tail(self, key: str, frame: Frame) -> None:
        """Queue a control frame (the stream's terminal ``error``) behind its chunks."""
        self._check()
        self._drr.push(key, _Tail(frame), len(frame) or 1)
        self._tails += 1
        self._wake()

    def forget(self, key: str) -> None:
        """Stream ``key`` is no longer followed: forget it once its queue has gone out."""
        if key in self._drr and self._drr.queued(key):
            self._finished.add(key)
        else:
            self._drop(key)

    def discard(self, key: str) -> None:
        """Stream ``key`` is unsubscribed: drop what it has queued now, unsent.

        A run the writer has already taken still goes out (under a bandwidth
        limit it may still be waiting for its bytes).
        """
        if key in self._drr:
            for item in self._drr.remove(key):
                if type(item) is _Tail:
                    self._tails -= 1
        self._drop(key)

    def _drop(self, key: str) -> None:
        if key in self._drr:
            self._drr.remove(key)
        self._queued.pop(key, None)
        self._finished.discard(key)
        waiter = self._room.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _check(self) -> None:
        if self._failure is not None:
            raise ConnectionResetError("the connection is closed") from self._failure

    def _wake(self) -> None:
        if self._writer is None:
            self._idle = False
            self._writer = asyncio.ensure_future(self._run())
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    # -- the writer ----------------------------------------------------------------

    async def _run(self) -> None:
        """Write queued chunks in fair order until cancelled or the connection fails."""
        drr = self._drr
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not drr:
                    self._wakeup = loop.create_future()
                    self._idle = True
                    try:
                        await self._wakeup
                    finally:
                        self._idle = False
                    continue
                await self._write_run()
        except Exception as exc:
            self._broken(exc)
        except asyncio.CancelledError:
            self._fail(ConnectionResetError("the connection is closing"))
            raise

    async def _write_run(self) -> None:
        """Take one run of queued chunks and write it (paced, under a limit)."""
        if self._budget is None:
            async with self._lock:
                if self._drr:
                    frames, chunks, batches = self._take()
                    await self._write(frames, 0)
                    self._chunks += chunks
                    self._batches += batches
            return
        async with self._bulk:
            if self._drr:
                frames, chunks, batches = self._take()
                await self._paced(frames)
                self._chunks += chunks
                self._batches += batches

    def _broken(self, exc: Exception) -> bool:
        """The send path failed: stop the pumps; on a bug, cut the connection
        (1011) and return True (a caller then raises ConnectionResetError)."""
        self._fail(exc)  # cut (timeout) or gone (OSError): the pumps must stop
        if isinstance(exc, TimeoutError | OSError):
            return False
        # A bug: the client must learn the connection is broken, not wait on it.
        logger.error("WebSocket send failed", exc_info=exc)
        self._cut(CloseReason.INTERNAL)
        return True

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        for waiter in self._room.values():
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("the connection is closed"))
                waiter.exception()  # retrieved: a pump that is gone must not warn
        self._room.clear()

    def _take(self) -> tuple[list[Frame], int, int]:
        """Pop one run (up to ``run_bytes``) in fair order: the messages to send,
        the chunks they carry and the ``chunks`` ops among them (counted once sent)."""
        drr = self._drr
        queued = self._queued
        batch = self.batch
        budget = self.run_bytes
        out: list[Frame] = []
        run: list[Frame] = []
        chunks = batches = 0
        while drr and budget > 0:
            key, item = drr.pop()
            if type(item) is _Tail:
                frame = item.frame
                self._tails -= 1
                if run:
                    batches += self._flush(run, out)
                    run = []
                out.append(frame)
                left = queued.get(key, 0)
            else:
                frame = item  # type: ignore[assignment]
                chunks += 1
                (run if batch else out).append(frame)
                left = queued[key] = queued[key] - len(frame)
            budget -= len(frame)
            if left <= self._stream_queue_bytes // 2:
                self._room_for(key, left)
        if run:
            batches += self._flush(run, out)
        return out, chunks, batches

    def _room_for(self, key: str, left: int) -> None:
        waiter = self._room.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if not left and key in self._finished and not self._drr.queued(key):
            self._drop(key)

    def _flush(self, run: list[Frame], out: list[Frame]) -> int:
        """Append ``run`` to ``out``, packed when it is two or more; the ``chunks`` ops made."""
        if len(run) == 1:
            out.append(run[0])
            return 0
        out.append(encode_chunks(run, self._fmt))
        return 1

    # -- the wire ------------------------------------------------------------------

    async def _paced(self, frames: Sequence[Frame]) -> None:
        """Reserve ``frames``' bytes, wait (without the write lock) until the
        bandwidth limit covers them, then write; the caller holds ``_bulk``.

        With zstd the reservation is the bytes before compression (an upper
        bound, give or take a few bytes of zstd block header); :meth:`_write`
        settles the difference once it knows the compressed size.
        """
        budget = self._budget
        assert budget is not None
        reserved = sum(map(_size, frames))
        self._paced_s += await pace(budget, reserved)
        async with self._lock:
            await self._write(frames, reserved)

    async def _write(self, frames: Sequence[Frame], reserved: int) -> None:
        """Compress and send ``frames`` within the send timeout, charging the
        bandwidth limit for their bytes beyond the ``reserved`` ones; the caller
        holds the write lock."""
        raw = self._raw
        key = self._key
        zstd = self._zstd
        wire: Sequence[Frame] = frames
        if zstd is not None:
            wire = [zstd.compress(f if isinstance(f, bytes) else f.encode()) for f in frames]
        size = sum(map(_size, wire))
        if self._budget is not None:
            self._budget.charge(size - reserved)
        try:
            async with asyncio.timeout(self._timeout):
                for frame in wire:
                    await raw({"type": "websocket.send", key: frame})
        except TimeoutError:
            # Expected and repeatable at will: counted in one aggregated INFO line.
            CUTS.refused(f"WebSocket send over {self._timeout:g} s (1008 slow consumer)")
            self._cut(CloseReason.SLOW_CONSUMER)
            raise
        except RuntimeError as exc:
            # uvicorn refuses sends once its WebSocket layer has closed the
            # connection itself (1007 invalid UTF-8, keepalive timeout): the
            # peer is gone, as when a send raises OSError.
            raise ConnectionResetError("the connection is closed") from exc
        self._messages += len(wire)
        self._bytes += size

    # -- the end -------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the writer; queued chunks are dropped (the connection is ending)."""
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()
            await asyncio.wait([writer])  # its cancellation is not ours to raise
        if self._failure is None:
            self._fail(ConnectionResetError("the connection is closed"))

    def statistics(self) -> WsSendStatistics:
        """A snapshot of the counters and queues."""
        zstd = self._zstd
        budget = self._budget
        return WsSendStatistics(
            messages=self._messages,
            bytes=self._bytes,
            chunks=self._chunks,
            batches=self._batches,
            queued_chunks=len(self._drr) - self._tails,
            queued_bytes=sum(self._queued.values()),
            backlogged_streams=sum(1 for n in self._queued.values() if n),
            bytes_per_s=None if budget is None else budget.rate,
            paced_s=self._paced_s,
            uncompressed_bytes=0 if zstd is None else zstd.statistics().bytes_in,
        )
