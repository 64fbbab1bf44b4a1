"""RabbitMQ Streams connector against the machine's RabbitMQ (stream port 5552).

The session fixture enables the ``rabbitmq_stream`` plugin when port 5552 is
closed (CI runs as root on a fresh machine, where it is off); the tests skip,
saying why, only when RabbitMQ itself (port 5672) is unreachable.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator

import pytest

pytest.importorskip("rstream", reason="the rabbitmq extra is not installed")

from streamcheck import StreamCheck, chunk_records, read_then_crash

from icefloe.connectors.protocol import DeliveryFailed, Inbound, Sink, Source
from icefloe.connectors.rabbitmq import (
    Position,
    RabbitMQSink,
    RabbitMQSource,
    StartAt,
)
from icefloe.connectors.record import Record

HOST = "127.0.0.1"
AMQP_PORT = 5672
STREAM_PORT = 5552


def _open(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1.0).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def rabbitmq_streams() -> None:
    """Port 5552 open, enabling the stream plugin if needed."""
    if not _open(STREAM_PORT):
        if not _open(AMQP_PORT):
            pytest.skip(f"RabbitMQ is not reachable at {HOST}:{AMQP_PORT}")
        plugins = shutil.which("rabbitmq-plugins")
        if plugins is None:
            pytest.skip("stream port 5552 is closed and rabbitmq-plugins is not installed")
        subprocess.run(
            [plugins, "enable", "rabbitmq_stream"], check=True, capture_output=True, timeout=120
        )
        deadline = time.monotonic() + 60
        while not _open(STREAM_PORT):
            assert time.monotonic() < deadline, "rabbitmq_stream enabled but port 5552 stays closed"
            time.sleep(0.2)


@pytest.fixture
async def stream(rabbitmq_streams: None) -> AsyncIterator[str]:
    name = f"icefloe-test-{uuid.uuid4().hex[:12]}"
    yield name
    # drop the stream and its stored offsets
    from rstream import Producer

    async with Producer(HOST, STREAM_PORT, username="guest", password="guest") as producer:
        await producer.delete_stream(name, missing_ok=True)


async def _send_streams(sink: RabbitMQSink, records: list[Record], streams: int) -> None:
    """Each stream sent by its own task, so ten senders share the sink at once."""

    async def one(key: bytes) -> None:
        for record in records:
            if record.key == key:
                await sink.send(record)

    keys = list(dict.fromkeys(r.key for r in records if r.key is not None))
    assert len(keys) == streams
    async with asyncio.TaskGroup() as group:
        for key in keys:
            group.create_task(one(key))
    await sink.flush()


async def _read(source: RabbitMQSource, check: StreamCheck, total: int) -> list[Inbound]:
    """Ack everything until ``total`` new chunks arrived; returns what was read."""
    seen: list[Inbound] = []
    async for inbound in source:
        check.feed(inbound.record)
        seen.append(inbound)
        await source.ack(inbound)
        if check.received() >= total:
            break
    return seen


async def test_the_connectors_satisfy_the_protocols(stream: str) -> None:
    assert isinstance(RabbitMQSink(stream), Sink)
    assert isinstance(RabbitMQSource(stream, consumer_name="c"), Source)
    with pytest.raises(ValueError, match="consumer_name"):
        RabbitMQSource(stream, consumer_name="")
    with pytest.raises(ValueError, match="max_in_flight"):
        RabbitMQSink(stream, max_in_flight=0)


async def test_ten_streams_of_1000_chunks_round_trip_complete_and_in_order(stream: str) -> None:
    streams, chunks = 10, 1000
    records = chunk_records("rt", streams, chunks)
    check = StreamCheck()
    async with asyncio.timeout(90):
        started = time.perf_counter()
        async with (
            RabbitMQSink(stream, max_in_flight=2000) as sink,
            RabbitMQSource(stream, consumer_name="rt") as source,
        ):
            reader = asyncio.create_task(_read(source, check, streams * chunks))
            await _send_streams(sink, records, streams)
            seen = await reader
            elapsed = time.perf_counter() - started
            stats = source.statistics()
        assert sink.statistics().confirmed == streams * chunks
    check.assert_complete("rt", streams, chunks)
    assert check.duplicates == 0
    # one stream is one log: offsets come back strictly increasing
    offsets = [inbound.position for inbound in seen]
    assert offsets == sorted(offsets)
    assert len(set(offsets)) == len(offsets)
    assert stats.confirmed == streams * chunks
    assert stats.in_flight == 0
    print(f"rabbitmq round trip: {streams * chunks / elapsed:,.0f} chunks/s ({elapsed:.2f} s)")


async def test_a_restarted_consumer_resumes_after_its_stored_offset(stream: str) -> None:
    streams, chunks, unacked = 4, 500, 37
    records = chunk_records("rs", streams, chunks)
    check = StreamCheck()
    async with asyncio.timeout(60):
        async with RabbitMQSink(stream) as sink:
            await _send_streams(sink, records, streams)
        # first run: processes 1000 records but crashes before acking the last 37
        async with RabbitMQSource(stream, consumer_name="resumer", commit_every=100) as first:
            assert first.resumed_from is None
            await read_then_crash(first, check, 1000, unacked)
            last_acked = 1000 - unacked - 1
        # second run, same name: resumes after the stored offset of the acked prefix
        async with RabbitMQSource(stream, consumer_name="resumer") as second:
            assert second.resumed_from == last_acked
            first_again = None
            async for inbound in second:
                first_again = inbound.position if first_again is None else first_again
                check.feed(inbound.record)
                await second.ack(inbound)
                if check.received() == streams * chunks:
                    break
            assert second.resumed_from == last_acked  # stores since do not change it
    assert first_again == last_acked + 1
    check.assert_complete("rs", streams, chunks)
    # exactly the processed-but-unacked records came back, and dedup dropped them
    assert check.duplicates == unacked


async def test_consuming_from_an_offset_a_timestamp_and_a_nack(stream: str) -> None:
    early, late = chunk_records("ts", 1, 100), chunk_records("tl", 1, 10)
    async with asyncio.timeout(60):
        async with RabbitMQSink(stream) as sink:
            for record in early:
                await sink.send(record)
            await sink.flush()
            boundary_ms = time.time_ns() // 1_000_000 + 1
            while time.time_ns() // 1_000_000 <= boundary_ms:
                await asyncio.sleep(0.001)  # let the broker's clock pass the boundary
            for record in late:
                await sink.send(record)
        at_offset = StartAt(Position.OFFSET, 42)
        async with RabbitMQSource(stream, consumer_name="o", start=at_offset, resume=False) as src:
            inbound = await anext(aiter(src))
            assert inbound.position == 42
            assert inbound.record == early[42]
            await src.nack(inbound, "try again")
            again = await anext(aiter(src))
            assert again.position == 42
            assert again.deliveries == 2
            assert src.statistics().failed == 1
        at_time = StartAt(Position.TIMESTAMP, boundary_ms)
        async with RabbitMQSource(stream, consumer_name="t", start=at_time, resume=False) as src:
            inbound = await anext(aiter(src))
            assert inbound.record == late[0]


DROP_VHOST = "icefloe-test-drop"


def _rabbitmqctl(*args: str) -> str:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        pytest.skip("rabbitmqctl is not installed: cannot drop connections")
    done = subprocess.run([ctl, *args], check=True, capture_output=True, text=True, timeout=60)
    return done.stdout


@pytest.fixture
def drop_vhost(rabbitmq_streams: None) -> str:
    """A vhost of its own, so dropping its connections touches no other client."""
    if DROP_VHOST not in _rabbitmqctl("list_vhosts", "--quiet").split():
        _rabbitmqctl("add_vhost", DROP_VHOST)
    _rabbitmqctl("set_permissions", "-p", DROP_VHOST, "guest", ".*", ".*", ".*")
    return DROP_VHOST


# rstream does not close the socket of a connection the broker dropped; its
# StreamWriter warns when collected. Nothing of icefloe's is left open.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_both_ends_reconnect_after_the_broker_drops_their_connections(
    drop_vhost: str,
) -> None:
    stream, streams, chunks = f"icefloe-drop-{uuid.uuid4().hex[:8]}", 2, 1000
    records = chunk_records("dr", streams, chunks)
    half = len(records) // 2
    check = StreamCheck()
    async with asyncio.timeout(90):
        sink = RabbitMQSink(stream, vhost=drop_vhost)
        source = RabbitMQSource(stream, consumer_name="d", vhost=drop_vhost, max_in_flight=100)
        async with sink, source:
            await _send_streams(sink, records[:half], streams)
            read = 0
            async for inbound in source:
                check.feed(inbound.record)
                await source.ack(inbound)
                read += 1
                if read == half // 2:
                    break
            await asyncio.to_thread(
                _rabbitmqctl, "close_all_connections", "-p", drop_vhost, "icefloe test: drop"
            )
            # the sink reconnects on its next publish, the source by itself
            await _send_streams(sink, records[half:], streams)
            await _read(source, check, streams * chunks)
            await source.close()
            await sink.close()
        assert sink.statistics().reconnects >= 1
        assert source.statistics().reconnects >= 1
        from rstream import Producer

        async with Producer(HOST, username="guest", password="guest", vhost=drop_vhost) as admin:
            await admin.delete_stream(stream, missing_ok=True)
    check.assert_complete("dr", streams, chunks)
    assert check.duplicates == 0
    gc.collect()  # collect rstream's dropped sockets here, under this test's filter


async def test_a_missing_stream_is_a_delivery_failure_when_not_created(stream: str) -> None:
    record = chunk_records("mf", 1, 1)[0]
    async with asyncio.timeout(30):
        sink = RabbitMQSink(stream, create=False)
        await sink.__aenter__()
        await sink.send(record)
        with pytest.raises(DeliveryFailed) as failed:
            await sink.close()
    assert failed.value.failures[0][0] == record
    assert "StreamDoesNotExist" in failed.value.failures[0][1]
    assert sink.statistics().failed == 1
