"""NATS JetStream connector against the machine's NATS (127.0.0.1:4222)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from roundtrip import round_trip, stream_ids

from icefloe.connectors import Inbound, chunk_record, record_chunk
from icefloe.core.messages import StreamChunk
from icefloe.core.reassembly import Reassembler

nats = pytest.importorskip("nats", reason="the nats extra is not installed")
from icefloe.connectors.nats import (  # noqa: E402
    NatsSink,
    NatsSource,
    StreamLimits,
    ensure_stream,
    message_record,
    record_headers,
)

URL = os.environ.get("ICEFLOE_TEST_NATS", "nats://127.0.0.1:4222")


@pytest.fixture
async def nc() -> AsyncIterator[Any]:
    async def quiet(exc: Exception) -> None:
        return None  # nats-py logs every failed attempt otherwise

    try:
        client = await asyncio.wait_for(
            nats.connect(URL, connect_timeout=1, allow_reconnect=False, error_cb=quiet), 3
        )
    except Exception as exc:  # nats-py raises several kinds when the server is absent
        pytest.skip(f"no NATS at {URL}: {exc!r}")
    yield client
    await client.close()


@pytest.fixture
async def stream(nc: Any) -> AsyncIterator[str]:
    name = f"ICEFLOE_{uuid.uuid4().hex}"
    await ensure_stream(nc, name, [f"{name}.>"], StreamLimits(max_age_s=600))
    yield name
    await nc.jetstream().delete_stream(name)


async def test_ten_streams_of_a_thousand_chunks_round_trip_in_order(nc: Any, stream: str) -> None:
    subject = f"{stream}.chunks"
    async with asyncio.timeout(60):
        result = await round_trip(
            lambda: NatsSink(nc, subject),
            lambda: NatsSource(nc, stream, durable="d", subject=subject, fetch_timeout_s=0.2),
            stream,
        )
    print(
        f"nats jetstream round trip: {result.chunks} chunks in {result.seconds:.2f}s "
        f"= {result.rate:,.0f} chunks/s"
    )
    info = await nc.jetstream().stream_info(stream)
    assert info.state.messages == 10_000


async def test_the_same_msg_id_twice_is_stored_once(nc: Any, stream: str) -> None:
    record = chunk_record(StreamChunk("s1", 7, "x"), trace_id="t", tenant="a")
    async with NatsSink(nc, f"{stream}.x") as sink:
        await sink.send(record)
        await sink.flush()
        await sink.send(record)
    assert sink.duplicates == 1
    assert sink.statistics().confirmed == 2
    info = await nc.jetstream().stream_info(stream)
    assert info.state.messages == 1


async def test_a_publish_no_stream_takes_is_reported_by_flush(nc: Any) -> None:
    from icefloe.connectors import DeliveryFailed

    record = chunk_record(StreamChunk("s", 0, "x"), trace_id="t", tenant="a")
    sink = NatsSink(nc, f"icefloe-nowhere-{uuid.uuid4().hex}", ack_timeout_s=1, retries=1)
    await sink.send(record)
    with pytest.raises(DeliveryFailed) as info:
        await sink.flush()
    ((failed, reason),) = info.value.failures
    assert failed == record
    assert "NoStreamResponse" in reason
    assert sink.statistics()[:3] == (1, 0, 1)
    await sink.close()


async def test_per_key_subjects_let_a_consumer_read_one_stream(nc: Any, stream: str) -> None:
    async with NatsSink(nc, stream, per_key=True) as sink:
        for sid in ("a", "b/c"):
            for seq in range(3):
                chunk = StreamChunk(sid, seq, "x", seq == 2)
                await sink.send(chunk_record(chunk, trace_id="t", tenant="a"))
    async with asyncio.timeout(10):
        source = NatsSource(nc, stream, durable="only-a", subject=f"{stream}.a", batch=10)
        async with source:
            seqs = []
            async for inbound in source:
                got = record_chunk(inbound.record).chunk
                assert got.stream_id == "a"
                seqs.append(got.seq)
                await source.ack(inbound)
                if got.done:
                    break
    assert seqs == [0, 1, 2]
    subjects = await nc.jetstream().stream_info(stream, subjects_filter=">")
    assert f"{stream}.x{b'b/c'.hex()}" in subjects.state.subjects


async def test_a_nacked_message_is_redelivered_with_its_count(nc: Any, stream: str) -> None:
    subject = f"{stream}.n"
    async with NatsSink(nc, subject) as sink:
        await sink.send(chunk_record(StreamChunk("s", 0, "x"), trace_id="t", tenant="a"))
    async with asyncio.timeout(10):
        source = NatsSource(
            nc, stream, durable="n", subject=subject, nak_delay_s=0.05, ack_sync=True
        )
        async with source:
            deliveries = []
            async for inbound in source:
                deliveries.append(inbound.deliveries)
                if len(deliveries) == 1:
                    await source.nack(inbound, "not now")
                else:
                    await source.ack(inbound)
                    break
    assert deliveries == [1, 2]
    assert source.statistics()[1:4] == (1, 1, 0)


async def test_a_consumer_that_died_unacked_gets_its_messages_again(nc: Any, stream: str) -> None:
    subject = f"{stream}.c"
    sids = stream_ids("c", 2)
    async with NatsSink(nc, subject) as sink:
        for sid in sids:
            for seq in range(10):
                chunk = StreamChunk(sid, seq, "x", seq == 9)
                await sink.send(chunk_record(chunk, trace_id="t", tenant="a"))
    async with asyncio.timeout(20):
        first = NatsSource(nc, stream, durable="crash", subject=subject, ack_wait_s=0.5)
        async with first:
            got = 0
            async for _ in first:
                got += 1
                if got == 12:
                    break  # received, never acked: the process "crashed"
        r: Reassembler[Inbound] = Reassembler(time.monotonic)
        again = NatsSource(nc, stream, durable="crash", subject=subject, ack_wait_s=0.5)
        deliveries: list[int] = []
        async with again:
            async for inbound in again:
                deliveries.append(inbound.deliveries)
                chunk = record_chunk(inbound.record).chunk
                for released in r.push(chunk.stream_id, chunk.seq, inbound, done=chunk.done)[0]:
                    await again.ack(released)
                if r.statistics().completed == 2:
                    break
    assert r.statistics().released == 20
    # everything the dead consumer had comes again, with its delivery count
    assert sorted(deliveries)[-1] >= 2
    assert again.statistics().confirmed == 20


async def test_an_exactly_once_record_is_acked_synchronously(nc: Any, stream: str) -> None:
    from icefloe.core.reliability import Reliability

    subject = f"{stream}.e"
    chunk = StreamChunk("s", 0, "x")
    async with NatsSink(nc, subject) as sink:
        level = Reliability.EXACTLY_ONCE
        await sink.send(chunk_record(chunk, trace_id="t", tenant="a", reliability=level))
    async with asyncio.timeout(10):
        source = NatsSource(nc, stream, durable="e", subject=subject)
        async with source:
            async for inbound in source:
                replies = nc.stats["in_msgs"]
                await source.ack(inbound)
                # ack_sync is a request: the server's confirmation came back
                assert nc.stats["in_msgs"] == replies + 1
                info = await nc.jetstream().consumer_info(stream, "e")
                assert (info.num_ack_pending, info.ack_floor.stream_seq) == (0, 1)
                break


def test_headers_that_are_not_printable_travel_base64() -> None:
    from icefloe.connectors import Record

    record = Record(b"k\n", b"v", (("bin", b"\x00\xff"), ("odd", b"b64:literal"), ("ok", b"1")))
    headers = record_headers(record)
    assert headers["ok"] == "1"
    assert headers["bin"].startswith("b64:")
    assert message_record(b"v", headers) == record
