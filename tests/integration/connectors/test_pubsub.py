"""The Pub/Sub connector over a real gRPC socket, against the in-repo TEST DOUBLE.

tests/pubsubserver.py is a test double of the Pub/Sub gRPC API (no emulator
can be installed here), not Pub/Sub: it implements the calls the connector
makes, with the service's ordering-key, ack-deadline and nack behaviour.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import grpc
import pytest
from google.cloud import pubsub_v1
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

from icefloe.connectors import (
    DeliveryFailed,
    Inbound,
    Record,
    Sink,
    Source,
    chunk_record,
    record_chunk,
)
from icefloe.connectors.pubsub import PubSubSink, PubSubSource
from icefloe.core.messages import StreamChunk
from pubsubserver import PubSubTestDouble

PROJECT = "projects/icefloe-test"


@pytest.fixture
def server() -> Iterator[PubSubTestDouble]:
    with PubSubTestDouble() as double:
        yield double


def make_topic(endpoint: str, *, ack_deadline_s: int = 10) -> tuple[str, str]:
    """A fresh topic and an ordered subscription to it (with a dead-letter policy,
    so the double fills delivery_attempt as the service would)."""
    name = uuid.uuid4().hex[:8]
    topic, subscription = f"{PROJECT}/topics/t-{name}", f"{PROJECT}/subscriptions/s-{name}"
    publisher = pubsub_v1.PublisherClient(
        transport=PublisherGrpcTransport(channel=grpc.insecure_channel(endpoint))
    )
    subscriber = pubsub_v1.SubscriberClient(
        transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(endpoint))
    )
    try:
        publisher.create_topic(name=topic)
        subscriber.create_subscription(
            request={
                "name": subscription,
                "topic": topic,
                "ack_deadline_seconds": ack_deadline_s,
                "enable_message_ordering": True,
                "dead_letter_policy": {
                    "dead_letter_topic": f"{PROJECT}/topics/dead",
                    "max_delivery_attempts": 5,
                },
            }
        )
    finally:
        publisher.transport.close()
        subscriber.close()
    return topic, subscription


def chunk(stream: int, seq: int) -> Record:
    done = seq == 999
    text = "" if done else f"t{seq}"
    return chunk_record(
        StreamChunk(f"s{stream}", seq, text, done=done), trace_id="tr", tenant="acme"
    )


async def test_sink_and_source_satisfy_the_protocols(server: PubSubTestDouble) -> None:
    topic, subscription = make_topic(server.endpoint)
    async with (
        PubSubSink(topic, endpoint=server.endpoint, insecure=True) as sink,
        PubSubSource(subscription, endpoint=server.endpoint, insecure=True) as source,
    ):
        assert isinstance(sink, Sink)
        assert isinstance(source, Source)
        assert sink.name == f"pubsub:{topic}"


async def test_ten_streams_of_a_thousand_chunks_arrive_complete_and_in_order(
    server: PubSubTestDouble,
) -> None:
    topic, subscription = make_topic(server.endpoint)
    streams, per_stream = 10, 1000
    got: dict[str, list[int]] = {f"s{i}": [] for i in range(streams)}
    async with asyncio.timeout(90):
        async with PubSubSink(topic, endpoint=server.endpoint, insecure=True) as sink:

            async def produce(stream: int) -> None:
                for seq in range(per_stream):
                    await sink.send(chunk(stream, seq))

            loop = asyncio.get_running_loop()
            started = loop.time()
            await asyncio.gather(*(produce(i) for i in range(streams)))
            await sink.flush()
            published = loop.time() - started
            assert sink.statistics().confirmed == streams * per_stream
        async with PubSubSource(subscription, endpoint=server.endpoint, insecure=True) as source:
            started = loop.time()
            async for inbound in source:
                read = record_chunk(inbound.record)
                got[read.chunk.stream_id].append(read.chunk.seq)
                await source.ack(inbound)
                if all(len(seqs) == per_stream for seqs in got.values()):
                    break
            consumed = loop.time() - started
            assert source.statistics().confirmed == streams * per_stream
    for seqs in got.values():
        assert seqs == list(range(per_stream))
    print(f"\npubsub: published 10x1000 in {published:.2f}s, consumed in {consumed:.2f}s")


async def test_a_nacked_message_is_redelivered(server: PubSubTestDouble) -> None:
    topic, subscription = make_topic(server.endpoint)
    async with asyncio.timeout(30):
        async with PubSubSink(topic, endpoint=server.endpoint, insecure=True) as sink:
            await sink.send(chunk(1, 0))
        async with PubSubSource(subscription, endpoint=server.endpoint, insecure=True) as source:
            first = await anext(aiter(source))
            assert first.deliveries == 1
            await source.nack(first, "not now")
            again: Inbound = await anext(aiter(source))
            assert again.record == first.record
            assert again.deliveries == 2
            assert again.position.message_id == first.position.message_id
            await source.ack(again)
            stats = source.statistics()
            assert (stats.confirmed, stats.failed, stats.in_flight) == (1, 1, 0)


async def test_a_message_held_past_its_ack_deadline_is_redelivered() -> None:
    # The double caps deadlines at 1 s (the service's minimum is 10 s), and the
    # source stops extending its lease after max_lease_s.
    with PubSubTestDouble(max_ack_deadline_s=1) as server:
        topic, subscription = make_topic(server.endpoint, ack_deadline_s=1)
        async with asyncio.timeout(30):
            async with PubSubSink(topic, endpoint=server.endpoint, insecure=True) as sink:
                await sink.send(chunk(1, 0))
            async with PubSubSource(
                subscription, endpoint=server.endpoint, insecure=True, max_lease_s=0.5
            ) as source:
                first = await anext(aiter(source))
                # not acked: the deadline passes, the service sends it again
                again = await anext(aiter(source))
                assert again.record == first.record
                assert again.deliveries == 2
                await source.ack(again)
        assert server.call(lambda state: state.redelivered) >= 1


async def test_the_sink_refuses_headers_pubsub_cannot_carry(server: PubSubTestDouble) -> None:
    topic, _ = make_topic(server.endpoint)
    async with PubSubSink(topic, endpoint=server.endpoint, insecure=True) as sink:
        with pytest.raises(ValueError, match="'a' repeats"):
            await sink.send(Record(b"k", b"v", (("a", b"1"), ("a", b"2"))))
        with pytest.raises(ValueError, match="'a' is not UTF-8"):
            await sink.send(Record(b"k", b"v", (("a", b"\xff"),)))


async def test_a_failed_ordering_key_is_reported_by_flush_and_then_resumed(
    server: PubSubTestDouble,
) -> None:
    name = f"{PROJECT}/topics/not-yet-{uuid.uuid4().hex[:8]}"
    async with (
        asyncio.timeout(30),
        PubSubSink(name, endpoint=server.endpoint, insecure=True) as sink,
    ):
        # NOT_FOUND is not retried: the first publish fails, and the client
        # refuses the key's later messages until resume_publish.
        for seq in range(3):
            await sink.send(chunk(1, seq))
        with pytest.raises(DeliveryFailed) as failed:
            await sink.flush()
        assert [record_chunk(r).chunk.seq for r, _ in failed.value.failures] == [0, 1, 2]
        assert "NotFound" in failed.value.failures[0][1]
        assert sink.statistics().failed == 3
        publisher = pubsub_v1.PublisherClient(
            transport=PublisherGrpcTransport(channel=grpc.insecure_channel(server.endpoint))
        )
        publisher.create_topic(name=name)
        publisher.transport.close()
        # flush() resumed the key: the same key publishes again
        await sink.send(chunk(1, 3))
        await sink.flush()
        assert sink.statistics().confirmed == 1


async def test_a_nack_rewinds_the_stream_to_the_nacked_message(server: PubSubTestDouble) -> None:
    topic, subscription = make_topic(server.endpoint)
    async with asyncio.timeout(30):
        async with PubSubSink(topic, endpoint=server.endpoint, insecure=True) as sink:
            for seq in range(5):
                await sink.send(chunk(1, seq))
        seen: list[int] = []
        async with PubSubSource(subscription, endpoint=server.endpoint, insecure=True) as source:
            async for inbound in source:
                seq = record_chunk(inbound.record).chunk.seq
                seen.append(seq)
                if seq == 2 and seen.count(2) == 1:
                    await source.nack(inbound, "retry later")
                    continue
                await source.ack(inbound)
                if seen.count(4) == 2:
                    break
        # The client had 3 and 4 already and hands them over; the service then
        # redelivers 2 and the key's later messages, in order (dedup drops 3, 4).
        assert seen == [0, 1, 2, 3, 4, 2, 3, 4]


@pytest.mark.slow
async def test_a_held_message_keeps_its_lease_past_the_ack_deadline(
    server: PubSubTestDouble,
) -> None:
    # The client library sets a 10 s deadline on receipt (its minimum) and
    # keeps extending it while the consumer holds the message: no redelivery.
    topic, subscription = make_topic(server.endpoint, ack_deadline_s=10)
    async with asyncio.timeout(40):
        async with PubSubSink(topic, endpoint=server.endpoint, insecure=True) as sink:
            await sink.send(chunk(1, 0))
        async with PubSubSource(subscription, endpoint=server.endpoint, insecure=True) as source:
            inbound = await anext(aiter(source))
            # Holding the message past its 10 s deadline is what is tested, not a wait
            # for something to happen.
            await asyncio.sleep(12)
            assert server.call(lambda state: state.redelivered) == 0
            assert server.call(lambda state: state.extensions) >= 1
            await source.ack(inbound)
            assert source.statistics().confirmed == 1
