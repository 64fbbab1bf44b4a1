"""The built-in endpoints of the served process: ``hub`` (source and sink) and ``streams`` (sink).

* ``hub`` source: subscribes to ``topic`` (a hub pattern) of ``tenant`` with a
  ``block`` buffer of ``buffer`` events, so a full route pushes back on the
  publishers (a WS ``publish`` then gets ``overloaded``) instead of losing
  events. An event's view is ``topic, offset, data, headers, tenant``, plus
  the chunk fields it maps to by default: ``stream_id`` = topic, ``seq`` =
  offset (consecutive per topic), ``text`` = data when it is a string,
  else ``""`` with ``data`` = data. Lag: events in the buffer plus those
  the route took and has not moved yet.
* ``hub`` sink: publishes each chunk (as a JSON-able table) to ``topic``.
* ``streams`` sink: replays the chunk streams as streams of the served flow,
  so SSE / WS / NDJSON clients read them at ``/v1/streams/{stream_id}``:
  reassembled in seq order with duplicates dropped (the core
  :class:`~icefloe.core.reassembly.Reassembler`, its limits), written through
  ``flow.open_stream``. A chunk is confirmed once the reassembler holds it.

``tenant`` defaults to ``"*"``, the tenant of every request when
authentication is off.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec

from icefloe.connectors.protocol import Inbound
from icefloe.connectors.record import ChunkRecord, Record
from icefloe.core.messages import Headers
from icefloe.core.reassembly import Reassembler, ReassemblyFull, StreamGap
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import InvalidState, StreamError
from icefloe.gateway.kinds import Kind, Served, Taken, register_kind
from icefloe.hub import Hub
from icefloe.hub.subscription import HubSubscription
from icefloe.runtime.flow import Flow
from icefloe.runtime.writer import StreamWriter

__all__ = [
    "HubSinkOptions",
    "HubSourceOptions",
    "StreamsEnd",
    "StreamsSinkOptions",
    "event_view",
]


class HubSourceOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    topic: str
    tenant: str = "*"
    #: events the route's subscription holds (publishers wait, or are refused, when full)
    buffer: Annotated[int, msgspec.Meta(ge=1, le=65_536)] = 1024


class HubSinkOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    topic: str
    tenant: str = "*"


class StreamsSinkOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: streams reassembled at once
    max_streams: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    #: chunks held out of order per stream
    max_pending: Annotated[int, msgspec.Meta(ge=0)] = 1_000
    #: seconds a gap may stay open before the stream fails (history_gone)
    gap_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    #: seconds a stream's readers may leave its buffer full before the stream
    #: ends ``interrupted`` so that the route's other streams go on (0: wait)
    stall_timeout_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    #: chunks each stream keeps, so that a reader arriving late (or resuming
    #: with ``Last-Event-ID``) still gets it whole: the edge's ``--history``
    history: Annotated[int, msgspec.Meta(ge=0)] = 1024


def event_view(event: Any) -> dict[str, Any]:
    """The view of a hub event (see the module docstring)."""
    data = event.data
    text = data if isinstance(data, str) else ""
    return {
        "topic": event.topic,
        "offset": event.offset,
        "headers": dict(event.headers),
        "tenant": event.tenant,
        "stream_id": event.topic,
        "seq": event.offset,
        "text": text,
        "data": None if isinstance(data, str) else data,
        "done": False,
        "meta": {},
    }


class _HubSource:
    def __init__(self, sub: HubSubscription, topic: str) -> None:
        self.name = f"hub:{topic}"
        self._sub = sub
        self._taken = self._acked = 0

    async def __aiter__(self) -> AsyncIterator[Taken]:
        async for event in self._sub:
            view = event_view(event)
            # what a dead-letter sink gets: the event as JSON, keyed by its topic
            record = Record(event.topic.encode(), msgspec.json.encode(view))
            self._taken += 1
            yield Taken(view, Inbound(record, event.topic, event.offset))

    async def ack(self, taken: Taken) -> None:
        """Nothing to commit: the hub forgets delivered events (counted for the lag)."""
        self._acked += 1

    async def lag(self) -> int | None:
        # buffered in the subscription, plus taken by the route and not moved yet
        return self._sub.statistics().buffered + self._taken - self._acked


def _served_hub(served: Served) -> Hub:
    if served.hub is None:
        raise InvalidState("a hub endpoint needs the served edge (icefloe serve --bridge)")
    return served.hub


@contextlib.asynccontextmanager
async def _hub_source(opts: HubSourceOptions, served: Served) -> AsyncIterator[_HubSource]:
    sub = _served_hub(served).subscribe(
        opts.topic, tenant=opts.tenant, buffer=opts.buffer, overflow="block"
    )
    try:
        yield _HubSource(sub, opts.topic)
    finally:
        sub.close()


class _HubSink:
    def __init__(self, hub: Hub, opts: HubSinkOptions) -> None:
        self.name = f"hub:{opts.topic}"
        self._hub = hub
        self._opts = opts

    async def send(self, got: ChunkRecord) -> None:
        data = msgspec.to_builtins(got.chunk)
        await self._hub.publish(self._opts.topic, data, tenant=self._opts.tenant)

    async def flush(self) -> None:
        """Nothing to wait for: a publish returns once the hub took the event."""


@contextlib.asynccontextmanager
async def _hub_sink(opts: HubSinkOptions, served: Served) -> AsyncIterator[_HubSink]:
    yield _HubSink(_served_hub(served), opts)


class StreamsEnd:
    """The ``streams`` sink: chunk streams replayed as streams of the served flow."""

    name = "streams"

    def __init__(self, flow: Flow, opts: StreamsSinkOptions) -> None:
        self._flow = flow
        self._r: Reassembler[ChunkRecord] = Reassembler(
            time.monotonic,
            max_streams=opts.max_streams,
            max_pending=opts.max_pending,
            gap_timeout_s=opts.gap_timeout_s,
        )
        # None: the flow refused the stream; its later chunks are dropped
        self._writers: dict[str, StreamWriter | None] = {}
        self._stall = opts.stall_timeout_s or None
        self._history = opts.history

    async def flush(self) -> None:
        """Nothing to wait for: ``send`` returns once the reassembler holds the chunk."""

    async def send(self, got: ChunkRecord) -> None:
        for gap in self._r.expire():
            self._abort(gap.stream_id or "", ErrorCode.HISTORY_GONE, gap.message)
        chunk = got.chunk
        try:
            pushed = self._r.push(chunk.stream_id, chunk.seq, got, done=chunk.done)
        except ReassemblyFull as exc:
            raise StreamError(ErrorCode.OVERLOADED, str(exc)) from None
        except StreamGap as gap:
            self._abort(chunk.stream_id, ErrorCode.HISTORY_GONE, gap.message)
            return
        for held in pushed.released:
            await self._emit(held)
        if pushed.ended:
            self._writers.pop(chunk.stream_id, None)

    async def _emit(self, got: ChunkRecord) -> None:
        chunk = got.chunk
        sid = chunk.stream_id
        if sid not in self._writers:
            try:
                self._writers[sid] = self._flow.open_stream(
                    Headers(tenant=got.tenant), stream_id=sid, history=self._history
                )
            except (StreamError, InvalidState):
                self._writers[sid] = None
        writer = self._writers[sid]
        if writer is None:
            return
        try:
            async with asyncio.timeout(self._stall):
                await writer.emit(
                    chunk.text, meta=dict(chunk.meta), data=chunk.data, done=chunk.done
                )
        except InvalidState:
            self._writers[sid] = None  # cancelled in the flow: drop the rest
        except TimeoutError:
            # nobody reads it (a closed tab): one stream must not hold up the others
            writer.abort(ErrorCode.INTERRUPTED, "no reader took the stream's chunks in time")
            self._writers[sid] = None

    def _abort(self, sid: str, code: ErrorCode, message: str) -> None:
        writer = self._writers.pop(sid, None)
        if writer is not None and not writer.closed:
            writer.abort(code, message)

    def close(self) -> None:
        """The route stopped: streams it was writing end ``interrupted``."""
        for sid in list(self._writers):
            self._abort(sid, ErrorCode.INTERRUPTED, "the bridge route stopped")


@contextlib.asynccontextmanager
async def _streams_sink(opts: StreamsSinkOptions, served: Served) -> AsyncIterator[StreamsEnd]:
    if served.flow is None:
        raise InvalidState("a streams sink needs the served edge (icefloe serve --bridge)")
    end = StreamsEnd(served.flow, opts)
    try:
        yield end
    finally:
        end.close()


register_kind("hub", Kind(HubSourceOptions, source=_hub_source, sink=_hub_sink))
register_kind("streams", Kind(StreamsSinkOptions, sink=_streams_sink))
