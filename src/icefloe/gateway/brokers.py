"""Broker kinds: ``redis-streams`` and ``kinesis`` as route sources, sinks and dead-letter sinks.

A broker source carries chunk records (:mod:`icefloe.connectors.record`): each
becomes the view of its chunk; one that does not decode is poison (the
route dead-letters it). A broker sink gets each chunk as a chunk record; a
route flushes it once per batch (confirmed by the broker) before it acks the
batch's source records.
Options are checked by the Structs below; docs/bridge.md lists them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import msgspec

from icefloe.connectors.protocol import Sink, Source
from icefloe.connectors.record import ChunkRecord, Record, chunk_record, record_chunk
from icefloe.exceptions import DecodeError
from icefloe.gateway.kinds import (
    Kind,
    RawSinkFactory,
    Served,
    SourceFactory,
    Taken,
    positions_store,
    register_kind,
)
from icefloe.gateway.translate import chunk_view

__all__ = [
    "BrokerSinkEnd",
    "BrokerSourceEnd",
    "KinesisOptions",
    "RedisStreamsOptions",
    "broker_kind",
]

_Positive = Annotated[int, msgspec.Meta(ge=1)]


class RedisStreamsOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: ``redis://host:port/db``
    url: str
    #: the Redis stream
    key: str
    #: consumer group and consumer (a source)
    group: str = "icefloe-bridge"
    consumer: str = "bridge"
    #: where a new group starts: ``"0"`` the whole stream, ``"$"`` new entries only
    start_id: str = "0"
    block_ms: _Positive = 1000
    #: entries a sink keeps (approximately); 0: all
    maxlen: Annotated[int, msgspec.Meta(ge=0)] = 1_000_000


class KinesisOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    stream: str
    region: str = "us-east-1"
    #: a local emulator or VPC endpoint; botocore's default when absent
    endpoint_url: str | None = None
    #: create the stream with this many shards when missing (a sink)
    create_shards: _Positive | None = None
    #: the checkpoint scope of a source; checkpoints are kept in the bridge's
    #: store (``store`` in the config, else ``icefloe serve --store``), else in memory
    consumer: str = "icefloe-bridge"
    #: read a stream without checkpoint from ``TRIM_HORIZON`` (else ``LATEST``)
    from_start: bool = True


class BrokerSourceEnd:
    """A connector :class:`~icefloe.connectors.protocol.Source` as a route source."""

    def __init__(self, source: Source, lag: Any = None) -> None:
        self.name = source.name
        self._source = source
        self._lag = lag

    async def __aiter__(self) -> AsyncIterator[Taken]:
        async for inbound in self._source:
            try:
                got = record_chunk(inbound.record)
            except DecodeError as exc:
                yield Taken({}, inbound, str(exc) or "not a chunk record")
            else:
                yield Taken(chunk_view(got), inbound)

    async def ack(self, taken: Taken) -> None:
        await self._source.ack(taken.inbound)

    async def lag(self) -> int | None:
        return None if self._lag is None else await self._lag()


class BrokerSinkEnd:
    """A connector :class:`~icefloe.connectors.protocol.Sink` as a route sink."""

    def __init__(self, sink: Sink) -> None:
        self.name = sink.name
        self._sink = sink

    async def send(self, got: ChunkRecord) -> None:
        record: Record = chunk_record(
            got.chunk, trace_id=got.trace_id, tenant=got.tenant, reliability=got.reliability
        )
        await self._sink.send(record)

    async def flush(self) -> None:
        await self._sink.flush()


def broker_kind(
    options: type[msgspec.Struct],
    source: SourceFactory,
    raw_sink: RawSinkFactory,
    check: Callable[[Any, str], None] | None = None,
) -> Kind:
    """A broker platform's kind: ``raw_sink`` opens its connector sink, the
    dead-letter sink as it is and the route sink as a :class:`BrokerSinkEnd`."""

    @contextlib.asynccontextmanager
    async def sink(opts: Any, served: Served) -> AsyncIterator[BrokerSinkEnd]:
        async with raw_sink(opts) as connector_sink:
            yield BrokerSinkEnd(connector_sink)

    return Kind(options, source=source, sink=sink, raw_sink=raw_sink, check=check)


@contextlib.asynccontextmanager
async def _redis(url: str) -> AsyncIterator[Any]:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


def _redis_lag(client: Any, key: str, group: str) -> Any:
    async def lag() -> int | None:
        # not delivered to the group yet, plus delivered and not acked (read
        # ahead by the source, or in the route's batch): not moved either way
        for info in await client.xinfo_groups(key):
            name = info.get("name")
            if name in (group, group.encode()):
                value = info.get("lag")
                if value is None:
                    return None
                return int(value) + int(info.get("pending") or 0)
        return None

    return lag


@contextlib.asynccontextmanager
async def _redis_source(
    opts: RedisStreamsOptions, served: Served
) -> AsyncIterator[BrokerSourceEnd]:
    from icefloe.connectors.redis_streams import RedisStreamsSource

    async with _redis(opts.url) as client:
        source = RedisStreamsSource(
            client,
            opts.key,
            group=opts.group,
            consumer=opts.consumer,
            start_id=opts.start_id,
            block_ms=opts.block_ms,
        )
        async with source:
            yield BrokerSourceEnd(source, _redis_lag(client, opts.key, opts.group))


@contextlib.asynccontextmanager
async def _redis_raw_sink(opts: RedisStreamsOptions) -> AsyncIterator[Sink]:
    from icefloe.connectors.redis_streams import RedisStreamsSink

    async with (
        _redis(opts.url) as client,
        RedisStreamsSink(client, opts.key, maxlen=opts.maxlen or None) as sink,
    ):
        yield sink


@contextlib.asynccontextmanager
async def _kinesis_source(opts: KinesisOptions, served: Served) -> AsyncIterator[BrokerSourceEnd]:
    from icefloe.connectors.kinesis import KinesisSource

    source = KinesisSource(
        opts.stream,
        region=opts.region,
        endpoint_url=opts.endpoint_url,
        consumer_name=opts.consumer,
        store=await positions_store(served),
        latest=not opts.from_start,
    )
    async with source:
        yield BrokerSourceEnd(source)


@contextlib.asynccontextmanager
async def _kinesis_raw_sink(opts: KinesisOptions) -> AsyncIterator[Sink]:
    from icefloe.connectors.kinesis import KinesisSink

    sink = KinesisSink(
        opts.stream,
        region=opts.region,
        endpoint_url=opts.endpoint_url,
        create_shards=opts.create_shards,
    )
    async with sink:
        yield sink


register_kind("redis-streams", broker_kind(RedisStreamsOptions, _redis_source, _redis_raw_sink))
register_kind("kinesis", broker_kind(KinesisOptions, _kinesis_source, _kinesis_raw_sink))
