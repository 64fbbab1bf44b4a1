"""Kinesis connector against a ``moto_server`` on loopback (motoserver.py starts it).

moto's Kinesis never fails a ``put_records`` entry, so the partial-failure
tests put :class:`FlakyKinesis` between the sink and the real client: a test
double that forwards each call to moto over its socket but keeps back the
entries its ``fail`` rule picks and answers for those with
``ProvisionedThroughputExceededException``, as Kinesis does under throttling.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("aiobotocore", reason="the kinesis extra is not installed")
pytest.importorskip("moto", reason="moto[server] is not installed")

from botocore.exceptions import ClientError
from motoserver import CREDENTIALS, REGION, kinesis_client, moto_server
from streamcheck import StreamCheck, chunk_records, read_then_crash

from icefloe.connectors.kinesis import (
    SHARD_END,
    Checkpoints,
    KinesisSink,
    KinesisSource,
    MemoryCheckpoints,
    ShardInfo,
    pack,
    readable_shards,
    unpack,
)
from icefloe.connectors.protocol import DeliveryFailed, Sink, Source
from icefloe.connectors.record import Record

THROTTLED = "ProvisionedThroughputExceededException"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
async def client(moto_url: str) -> AsyncIterator[Any]:
    async with kinesis_client(moto_url) as kinesis:
        yield kinesis


def _stream() -> str:
    return f"icefloe-{uuid.uuid4().hex[:10]}"


class FlakyKinesis:
    """Forwards to a real client; ``put_records`` entries picked by ``fail`` are throttled."""

    def __init__(
        self,
        inner: Any,
        fail: Callable[[int, int, dict[str, Any]], bool],
        raise_on: frozenset[int] = frozenset(),
    ) -> None:
        self.inner = inner
        self.fail = fail
        self.raise_on = raise_on
        self.calls = 0
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def put_records(self, *, StreamName: str, Records: list[dict[str, Any]]) -> Any:
        self.calls += 1
        if self.calls in self.raise_on:
            error = {"Error": {"Code": "InternalFailure", "Message": "injected"}}
            raise ClientError(error, "PutRecords")
        picked = [self.fail(self.calls, i, entry) for i, entry in enumerate(Records)]
        kept = [entry for entry, bad in zip(Records, picked, strict=True) if not bad]
        written = iter(
            (await self.inner.put_records(StreamName=StreamName, Records=kept))["Records"]
            if kept
            else []
        )
        results = [
            {"ErrorCode": THROTTLED, "ErrorMessage": "Rate exceeded for shard"}
            if bad
            else next(written)
            for bad in picked
        ]
        self.failed += sum(picked)
        return {"FailedRecordCount": sum(picked), "Records": results}


class ExpiringKinesis:
    """Forwards to a real client; the ``get_records`` calls numbered in ``expire`` fail."""

    def __init__(self, inner: Any, expire: frozenset[int]) -> None:
        self.inner = inner
        self.expire = expire
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get_records(self, **options: Any) -> Any:
        self.calls += 1
        if self.calls in self.expire:
            error = {"Error": {"Code": "ExpiredIteratorException", "Message": "injected"}}
            raise ClientError(error, "GetRecords")
        return await self.inner.get_records(**options)


async def _send_streams(sink: KinesisSink, records: list[Record]) -> None:
    """Each stream sent by its own task, so the streams share the sink at once."""

    async def one(key: bytes | None) -> None:
        for record in records:
            if record.key == key:
                await sink.send(record)

    async with asyncio.TaskGroup() as group:
        for key in dict.fromkeys(r.key for r in records):
            group.create_task(one(key))
    await sink.flush()


async def _read(source: KinesisSource, check: StreamCheck, total: int) -> None:
    async for inbound in source:
        check.feed(inbound.record)
        await source.ack(inbound)
        if check.received() >= total:
            return


def _options(client: Any, **extra: Any) -> dict[str, Any]:
    return {"client": client, **extra}


async def test_the_envelope_carries_key_headers_and_value() -> None:
    record = Record(b"stream-1", b"\x00value", (("a", b"1"), ("a", b"2"), ("b", b"")))
    assert unpack(*pack(record)) == record
    keyless = Record(None, b"v", (("h", b"x"),))
    assert unpack(*pack(keyless)) == keyless
    # a foreign blob comes back whole, for the consumer to call poison
    assert unpack("k", b"not msgpack") == Record(b"k", b"not msgpack")
    with pytest.raises(ValueError, match="1 to 256"):
        pack(Record(b"x" * 257, b""))


async def test_the_connectors_satisfy_the_protocols(client: Any) -> None:
    assert isinstance(KinesisSink("s", client=client), Sink)
    assert isinstance(KinesisSource("s", consumer_name="c", client=client), Source)
    assert isinstance(MemoryCheckpoints(), Checkpoints)
    with pytest.raises(ValueError, match="consumer_name"):
        KinesisSource("s", consumer_name="")


@pytest.mark.parametrize("per_key", [1, 50])
async def test_ten_streams_of_1000_chunks_round_trip_complete_and_in_order(
    client: Any, per_key: int
) -> None:
    streams, chunks, stream = 10, 1000, _stream()
    records = chunk_records("kr", streams, chunks)
    check = StreamCheck()
    async with asyncio.timeout(100):
        started = time.perf_counter()
        sink = KinesisSink(stream, create_shards=4, client=client, records_per_key=per_key)
        async with (
            sink,
            KinesisSource(
                stream, consumer_name="rt", client=client, poll_interval_s=0.05
            ) as source,
        ):
            reader = asyncio.create_task(_read(source, check, streams * chunks))
            await _send_streams(sink, records)
            await reader
            elapsed = time.perf_counter() - started
            stats = source.statistics()
    check.assert_complete("kr", streams, chunks)
    assert check.duplicates == 0
    assert sink.statistics().confirmed == streams * chunks
    assert stats.confirmed == streams * chunks
    assert len(source.shards_read) == 4
    print(
        f"kinesis round trip, records_per_key={per_key}: "
        f"{streams * chunks / elapsed:,.0f} chunks/s ({elapsed:.2f} s, "
        f"{sink.calls} put_records calls)"
    )


async def test_a_restarted_consumer_resumes_from_its_checkpoints(client: Any) -> None:
    streams, chunks, unacked, stream = 4, 500, 37, _stream()
    records = chunk_records("kc", streams, chunks)
    checkpoints = MemoryCheckpoints()
    check = StreamCheck()
    async with asyncio.timeout(60):
        async with KinesisSink(stream, create_shards=2, client=client) as sink:
            await _send_streams(sink, records)
        options = _options(client, checkpoints=checkpoints, poll_interval_s=0.05)
        # first run: processes 1000 records, crashes before acking the last 37
        async with KinesisSource(stream, consumer_name="app", commit_every=50, **options) as first:
            await read_then_crash(first, check, 1000, unacked)
        saved = await checkpoints.load(f"{stream}/app")
        assert saved, "the acked prefix was checkpointed on close"
        assert SHARD_END not in saved.values()
        # second run with the same checkpoints: AFTER_SEQUENCE_NUMBER per shard
        async with KinesisSource(stream, consumer_name="app", **options) as second:
            await _read(second, check, streams * chunks)
    check.assert_complete("kc", streams, chunks)
    # exactly the processed-but-unacked records came back; dedup dropped and counted them
    assert check.duplicates == unacked


async def test_partially_failed_put_records_are_retried_in_order(client: Any) -> None:
    streams, chunks, stream = 10, 200, _stream()
    records = chunk_records("kf", streams, chunks)
    # throttle a third of the entries of every other call
    flaky = FlakyKinesis(client, lambda call, i, entry: call % 2 == 0 and i % 3 == 1)
    check = StreamCheck()
    async with asyncio.timeout(60):
        sink = KinesisSink(stream, create_shards=2, client=flaky, backoff_s=0.001)
        async with sink:
            await _send_streams(sink, records)
        async with KinesisSource(stream, consumer_name="f", client=client) as source:
            await _read(source, check, streams * chunks)
    assert flaky.failed > 100
    assert sink.retried == flaky.failed
    assert sink.statistics().failed == 0
    check.assert_complete("kf", streams, chunks)
    assert check.duplicates == 0


async def test_a_put_records_call_failing_whole_is_retried(client: Any) -> None:
    stream = _stream()
    records = chunk_records("kw", 3, 20)
    flaky = FlakyKinesis(client, lambda call, i, entry: False, raise_on=frozenset({1, 2}))
    check = StreamCheck()
    async with asyncio.timeout(30):
        sink = KinesisSink(stream, create_shards=1, client=flaky, backoff_s=0.001)
        async with sink:
            await _send_streams(sink, records)
        async with KinesisSource(stream, consumer_name="w", client=client) as source:
            await _read(source, check, len(records))
    assert sink.retried >= 2
    check.assert_complete("kw", 3, 20)


async def test_several_records_per_key_per_call_lose_order_on_partial_failure(
    client: Any,
) -> None:
    # why records_per_key defaults to 1: with 5 a throttled entry is retried
    # after later records of its key were written
    streams, chunks, stream = 2, 50, _stream()
    records = chunk_records("ko", streams, chunks)
    flaky = FlakyKinesis(client, lambda call, i, entry: call == 1 and i == 1)
    check = StreamCheck()
    async with asyncio.timeout(60):
        sink = KinesisSink(stream, create_shards=1, client=flaky, records_per_key=5)
        async with sink:
            await _send_streams(sink, records)
        async with KinesisSource(stream, consumer_name="o", client=client) as source:
            await _read(source, check, streams * chunks)
    assert check.out_of_order


async def test_a_record_failing_every_retry_is_reported_and_others_still_go(client: Any) -> None:
    stream = _stream()
    records = chunk_records("kd", 3, 5)
    doomed = records[4]  # stream kd-1, seq 1
    flaky = FlakyKinesis(client, lambda call, i, entry: entry["Data"] == pack(doomed)[1])
    async with asyncio.timeout(30):
        sink = KinesisSink(stream, create_shards=1, client=flaky, retries=3, backoff_s=0.001)
        async with sink:
            for record in records:
                await sink.send(record)
            with pytest.raises(DeliveryFailed) as failed:
                await sink.flush()
    assert [record for record, _ in failed.value.failures] == [doomed]
    assert THROTTLED in failed.value.failures[0][1]
    assert "after 4 attempts" in failed.value.failures[0][1]
    assert sink.statistics().confirmed == len(records) - 1


async def test_resharding_keeps_every_stream_in_order(client: Any) -> None:
    streams, chunks, stream = 10, 300, _stream()
    records = chunk_records("ks", streams, chunks)
    half = len(records) // 2
    check = StreamCheck()
    async with asyncio.timeout(60):
        sink = KinesisSink(stream, create_shards=1, client=client)
        source = KinesisSource(
            stream, consumer_name="r", client=client, poll_interval_s=0.05, discover_interval_s=0.1
        )
        async with sink, source:
            reader = asyncio.create_task(_read(source, check, streams * chunks))
            await _send_streams(sink, records[:half])
            (parent,) = (await client.list_shards(StreamName=stream))["Shards"]
            await client.update_shard_count(
                StreamName=stream, TargetShardCount=2, ScalingType="UNIFORM_SCALING"
            )
            listing = (await client.list_shards(StreamName=stream))["Shards"]
            await _send_streams(sink, records[half:])
            await reader
    children = [s["ShardId"] for s in listing if s.get("ParentShardId") == parent["ShardId"]]
    assert len(children) == 2
    assert "EndingSequenceNumber" in listing[0]["SequenceNumberRange"]
    check.assert_complete("ks", streams, chunks)
    # no child was read before its parent was finished
    for child in children:
        assert child not in source.shards_read or parent["ShardId"] in source.finished_shards


async def test_a_failed_read_starts_again_after_the_last_record(client: Any) -> None:
    streams, chunks, stream = 3, 200, _stream()
    records = chunk_records("ke", streams, chunks)
    expiring = ExpiringKinesis(client, frozenset({2, 3, 5}))
    check = StreamCheck()
    async with asyncio.timeout(30):
        async with KinesisSink(stream, create_shards=1, client=client) as sink:
            await _send_streams(sink, records)
        source = KinesisSource(
            stream, consumer_name="e", client=expiring, batch_limit=50, poll_interval_s=0.01
        )
        async with source:
            await _read(source, check, streams * chunks)
    assert source.statistics().reconnects == 3
    check.assert_complete("ke", streams, chunks)
    assert check.duplicates == 0


async def test_latest_skips_what_was_written_before_and_nack_redelivers(client: Any) -> None:
    stream = _stream()
    before, after = chunk_records("kb", 1, 10), chunk_records("ka", 1, 5)
    async with asyncio.timeout(30):
        async with KinesisSink(stream, create_shards=1, client=client) as sink:
            for record in before:
                await sink.send(record)
            await sink.flush()
            source = KinesisSource(stream, consumer_name="l", client=client, latest=True)
            async with source:
                for record in after:
                    await sink.send(record)
                await sink.flush()
                first = await anext(aiter(source))
                assert first.record == after[0]
                await source.nack(first, "later")
                again = await anext(aiter(source))
                assert again.record == after[0]
                assert again.deliveries == 2
                await source.ack(again)
                assert source.statistics().failed == 1


def test_children_wait_for_every_parent_to_finish() -> None:
    shards = [
        ShardInfo("p0"),
        ShardInfo("p1"),
        ShardInfo("c0", ("p0",)),
        ShardInfo("c1", ("p0",)),
        ShardInfo("m", ("p1", "c1")),  # a merge of p1 and c1
        ShardInfo("orphan", ("aged-out",)),
    ]
    assert readable_shards(shards, set()) == ["p0", "p1", "orphan"]
    assert readable_shards(shards, {"p0"}) == ["p1", "c0", "c1", "orphan"]
    assert readable_shards(shards, {"p0", "p1"}) == ["c0", "c1", "orphan"]
    assert readable_shards(shards, {"p0", "p1", "c1"}) == ["c0", "m", "orphan"]
    assert SHARD_END == "SHARD_END"


async def test_opening_a_missing_stream_fails_and_releases_the_client(moto_url: str) -> None:
    """An open that fails (no such stream) closes the client it made: a leaked
    aiohttp session would be reported when collected (warnings are errors here)."""
    import gc

    source = KinesisSource(
        f"missing-{uuid.uuid4().hex[:8]}",
        consumer_name="c",
        region=REGION,
        endpoint_url=moto_url,
        credentials=CREDENTIALS,
    )
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        await source.__aenter__()
    del source
    gc.collect()
