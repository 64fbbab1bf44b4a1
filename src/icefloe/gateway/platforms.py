"""More broker kinds: ``nats`` (JetStream), ``rabbitmq`` (Streams), ``pubsub`` (Google
Pub/Sub) and ``kafka``.

Like :mod:`icefloe.gateway.brokers`: chunk records in and out, each platform's
client imported only when a route opens it. Options are listed in
docs/bridge.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec

from icefloe.connectors.protocol import Sink
from icefloe.gateway.brokers import BrokerSourceEnd, broker_kind
from icefloe.gateway.kinds import Served, register_kind

__all__ = ["KafkaOptions", "NatsOptions", "PubSubOptions", "RabbitMQOptions"]


class NatsOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: the JetStream stream, created over ``subject`` when missing
    stream: str
    #: a sink publishes here; a source reads it (a filter subject)
    subject: str
    url: str = "nats://127.0.0.1:4222"
    #: a source's durable pull consumer
    durable: str = "icefloe-bridge"


class RabbitMQOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    stream: str
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65_535)] = 5552
    username: str = "guest"
    password: str = "guest"
    vhost: str = "/"
    #: a source's name for its server-side offset
    consumer: str = "icefloe-bridge"


class PubSubOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: ``projects/P/topics/T``: what a sink publishes to
    topic: str | None = None
    #: ``projects/P/subscriptions/S``: what a source pulls
    subscription: str | None = None
    #: an emulator or private endpoint (``host:port``)
    endpoint: str | None = None
    insecure: bool = False


class KafkaOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: ``bootstrap.servers``: ``host:port[,host:port...]``
    bootstrap: str
    #: the topic a sink writes to, or a source reads
    topic: str
    #: a source's consumer group (commits after each chunk is delivered)
    group: str = "icefloe-bridge"
    #: extra librdkafka settings, passed as they are
    config: dict[str, str] = {}


@contextlib.asynccontextmanager
async def _nats(url: str) -> AsyncIterator[Any]:
    import nats

    nc = await nats.connect(url, connect_timeout=2)
    try:
        yield nc
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def _nats_source(opts: NatsOptions, served: Served) -> AsyncIterator[BrokerSourceEnd]:
    from icefloe.connectors.nats import NatsSource, ensure_stream

    async with _nats(opts.url) as nc:
        await ensure_stream(nc, opts.stream, [opts.subject])
        source = NatsSource(nc, opts.stream, durable=opts.durable, subject=opts.subject)
        async with source:
            yield BrokerSourceEnd(source)


@contextlib.asynccontextmanager
async def _nats_raw_sink(opts: NatsOptions) -> AsyncIterator[Sink]:
    from icefloe.connectors.nats import NatsSink, ensure_stream

    async with _nats(opts.url) as nc:
        await ensure_stream(nc, opts.stream, [opts.subject])
        async with NatsSink(nc, opts.subject) as sink:
            yield sink


def _rabbit(opts: RabbitMQOptions) -> dict[str, Any]:
    return {
        "host": opts.host,
        "port": opts.port,
        "username": opts.username,
        "password": opts.password,
        "vhost": opts.vhost,
    }


@contextlib.asynccontextmanager
async def _rabbit_source(opts: RabbitMQOptions, served: Served) -> AsyncIterator[BrokerSourceEnd]:
    from icefloe.connectors.rabbitmq import RabbitMQSource

    async with RabbitMQSource(opts.stream, consumer_name=opts.consumer, **_rabbit(opts)) as source:
        yield BrokerSourceEnd(source)


@contextlib.asynccontextmanager
async def _rabbit_raw_sink(opts: RabbitMQOptions) -> AsyncIterator[Sink]:
    from icefloe.connectors.rabbitmq import RabbitMQSink

    async with RabbitMQSink(opts.stream, **_rabbit(opts)) as sink:
        yield sink


def _pubsub_check(opts: PubSubOptions, role: str) -> None:
    if role == "source" and opts.subscription is None:
        raise ValueError("subscription: a pubsub source needs a subscription")
    if role != "source" and opts.topic is None:
        raise ValueError("topic: a pubsub sink needs a topic")


@contextlib.asynccontextmanager
async def _pubsub_source(opts: PubSubOptions, served: Served) -> AsyncIterator[BrokerSourceEnd]:
    from icefloe.connectors.pubsub import PubSubSource

    assert opts.subscription is not None  # _pubsub_check
    source = PubSubSource(opts.subscription, endpoint=opts.endpoint, insecure=opts.insecure)
    async with source:
        yield BrokerSourceEnd(source)


@contextlib.asynccontextmanager
async def _pubsub_raw_sink(opts: PubSubOptions) -> AsyncIterator[Sink]:
    from icefloe.connectors.pubsub import PubSubSink

    assert opts.topic is not None  # _pubsub_check
    async with PubSubSink(opts.topic, endpoint=opts.endpoint, insecure=opts.insecure) as sink:
        yield sink


@contextlib.asynccontextmanager
async def _kafka_source(opts: KafkaOptions, served: Served) -> AsyncIterator[BrokerSourceEnd]:
    from icefloe.connectors.kafka import KafkaSource

    source = KafkaSource(opts.bootstrap, opts.topic, opts.group, config=dict(opts.config))
    async with source:
        yield BrokerSourceEnd(source)


@contextlib.asynccontextmanager
async def _kafka_raw_sink(opts: KafkaOptions) -> AsyncIterator[Sink]:
    from icefloe.connectors.kafka import KafkaSink

    async with KafkaSink(opts.bootstrap, opts.topic, config=dict(opts.config)) as sink:
        yield sink


register_kind("kafka", broker_kind(KafkaOptions, _kafka_source, _kafka_raw_sink))
register_kind("nats", broker_kind(NatsOptions, _nats_source, _nats_raw_sink))
register_kind("rabbitmq", broker_kind(RabbitMQOptions, _rabbit_source, _rabbit_raw_sink))
register_kind(
    "pubsub", broker_kind(PubSubOptions, _pubsub_source, _pubsub_raw_sink, check=_pubsub_check)
)
