"""Redis Streams connector against the machine's Redis (127.0.0.1:6379)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from roundtrip import round_trip, stream_ids

from icefloe.connectors import Inbound, Record, chunk_record, record_chunk
from icefloe.connectors.deadletter import DEAD_REASON_HEADER, DeadLetters
from icefloe.core.messages import StreamChunk
from icefloe.core.reassembly import Reassembler

redis_asyncio = pytest.importorskip("redis.asyncio", reason="the redis extra is not installed")
from icefloe.connectors.redis_streams import (  # noqa: E402
    RedisStreamsSink,
    RedisStreamsSource,
    entry_fields,
    entry_record,
)

URL = os.environ.get("ICEFLOE_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def client() -> AsyncIterator[redis_asyncio.Redis]:
    r = redis_asyncio.Redis.from_url(URL)
    try:
        await asyncio.wait_for(r.ping(), 2)
    except (OSError, TimeoutError, redis_asyncio.ConnectionError) as exc:
        await r.aclose()
        pytest.skip(f"no Redis at {URL}: {exc}")
    yield r
    await r.aclose()


@pytest.fixture
async def key(client: redis_asyncio.Redis) -> AsyncIterator[str]:
    name = f"icefloe-test-{uuid.uuid4().hex}"
    yield name
    await client.delete(name, f"{name}-dead")


async def test_ten_streams_of_a_thousand_chunks_round_trip_in_order(
    client: redis_asyncio.Redis, key: str
) -> None:
    async with asyncio.timeout(60):
        result = await round_trip(
            lambda: RedisStreamsSink(client, key),
            lambda: RedisStreamsSource(client, key, group="g", consumer="c1", block_ms=200),
            key,
        )
    print(
        f"redis streams round trip: {result.chunks} chunks in {result.seconds:.2f}s "
        f"= {result.rate:,.0f} chunks/s"
    )
    assert result.reassembly.completed == 10
    assert await client.xlen(key) == 10_000


async def _kill_own_connections(admin: redis_asyncio.Redis, name: str, times: int) -> int:
    """Close the server side of every connection named ``name`` (ours only), ``times`` times."""
    killed = 0
    for _ in range(times):
        await asyncio.sleep(0.15)
        for row in await admin.client_list():
            if row.get("name") == name:
                killed += await admin.client_kill_filter(_id=row["id"])
    return killed


async def test_lost_connections_mid_stream_lose_no_chunk(
    client: redis_asyncio.Redis, key: str
) -> None:
    # Redis here is shared, so no restart: the server closes our own
    # connections (CLIENT KILL ID, by their client name) during the round trip.
    name = f"icefloe-kill-{uuid.uuid4().hex[:8]}"
    victim = redis_asyncio.Redis.from_url(URL, client_name=name)
    try:
        async with asyncio.timeout(90):
            killer = asyncio.create_task(_kill_own_connections(client, name, 5))
            sources: list[RedisStreamsSource] = []

            def make_source() -> RedisStreamsSource:
                sources.append(
                    RedisStreamsSource(victim, key, group="g", consumer="c", block_ms=100)
                )
                return sources[0]

            try:
                result = await round_trip(lambda: RedisStreamsSink(victim, key), make_source, key)
            finally:
                killed = await killer
    finally:
        await victim.aclose()
    assert killed >= 1
    print(
        f"redis: {killed} connections killed, reconnects={sources[0].statistics().reconnects}, "
        f"duplicates dropped={result.reassembly.duplicates}"
    )
    assert result.reassembly.completed == 10


async def test_a_crashed_consumers_entries_are_claimed_and_duplicates_dropped(
    client: redis_asyncio.Redis, key: str
) -> None:
    sids = stream_ids(key, 3)
    async with RedisStreamsSink(client, key) as sink:
        for sid in sids:
            for seq in range(20):
                chunk = StreamChunk(sid, seq, "x", seq == 19)
                await sink.send(chunk_record(chunk, trace_id=sid, tenant="acme"))
        # a producer retry wrote seq 5 of the first stream twice
        await sink.send(chunk_record(StreamChunk(sids[0], 5, "x"), trace_id="t", tenant="acme"))
    r: Reassembler[Inbound] = Reassembler(time.monotonic)
    before: dict[str, list[int]] = {sid: [] for sid in sids}
    async with asyncio.timeout(30):
        # consumer "dead" processes 25 entries and crashes before acking any
        async with RedisStreamsSource(client, key, group="g", consumer="dead", count=25) as dead:
            got = 0
            async for inbound in dead:
                chunk = record_chunk(inbound.record).chunk
                pushed = r.push(chunk.stream_id, chunk.seq, inbound, done=chunk.done)
                before[chunk.stream_id] += [record_chunk(i.record).chunk.seq for i in pushed[0]]
                got += 1
                if got == 25:
                    break
        # a new consumer gets the rest; the dead one's entries only by XAUTOCLAIM
        survivor = RedisStreamsSource(
            client,
            key,
            group="g",
            consumer="alive",
            claim_min_idle_ms=1,
            claim_interval_s=0.01,
            block_ms=50,
        )
        after: dict[str, list[int]] = {sid: [] for sid in sids}
        async with survivor:
            # until every one of the 61 entries is acked: the 36 it reads
            # first, then the 25 it claims from the dead consumer
            async for inbound in survivor:
                chunk = record_chunk(inbound.record).chunk
                pushed = r.push(chunk.stream_id, chunk.seq, inbound, done=chunk.done)
                if pushed.duplicate:
                    await survivor.ack(inbound)
                for released in pushed.released:
                    after[chunk.stream_id].append(record_chunk(released.record).chunk.seq)
                    await survivor.ack(released)
                if survivor.statistics().confirmed == 61:
                    break
        stats = survivor.statistics()
    out = {sid: before[sid] + after[sid] for sid in sids}
    assert out == {sid: list(range(20)) for sid in sids}
    # the 25 redelivered entries were processed already, and seq 5 was written twice
    assert r.statistics().duplicates == 26
    pending = await client.xpending(key, "g")
    assert pending["pending"] == 0
    assert stats.confirmed == 61
    claimed = await client.xinfo_consumers(key, "g")
    assert {c["name"] for c in claimed} == {b"dead", b"alive"}


async def test_a_restarted_consumer_rereads_its_own_pending_entries_with_their_count(
    client: redis_asyncio.Redis, key: str
) -> None:
    async with RedisStreamsSink(client, key) as sink:
        for seq in range(3):
            await sink.send(chunk_record(StreamChunk("s", seq, "x"), trace_id="t", tenant="a"))
    async with asyncio.timeout(10):
        async with RedisStreamsSource(client, key, group="g", consumer="c") as first:
            async for inbound in first:
                assert inbound.deliveries == 1
                await first.ack(inbound)
                break  # seqs 1 and 2 stay pending: a crash
        async with RedisStreamsSource(client, key, group="g", consumer="c") as again:
            seen = []
            async for inbound in again:
                seen.append((record_chunk(inbound.record).chunk.seq, inbound.deliveries))
                if len(seen) == 2:
                    break
    assert seen == [(1, 2), (2, 2)]


async def test_acks_sent_at_close_survive_a_connection_just_lost(
    client: redis_asyncio.Redis, key: str
) -> None:
    """The server closes the source's connection just before the source closes:
    the acks batched until then still reach it. (Here redis-py reconnects on
    its own; the close's second try covers a connection lost mid-command,
    which the lost-connections test above can hit, and which raised there.)"""
    async with RedisStreamsSink(client, key) as sink:
        for seq in range(3):
            await sink.send(chunk_record(StreamChunk("s", seq, "x"), trace_id="t", tenant="a"))
    name = f"icefloe-close-{uuid.uuid4().hex[:8]}"
    victim = redis_asyncio.Redis.from_url(URL, client_name=name)
    try:
        async with asyncio.timeout(10):
            async with RedisStreamsSource(victim, key, group="g", consumer="c") as source:
                async for inbound in source:
                    await source.ack(inbound)  # batched: not sent yet
                    if record_chunk(inbound.record).chunk.seq == 2:
                        break
                assert await _kill_own_connections(client, name, 1) >= 1
            pending: Any = await client.xpending(key, "g")
    finally:
        await victim.aclose()
    assert pending["pending"] == 0
    assert source.statistics().confirmed == 3


async def test_an_entry_that_is_no_record_goes_to_the_dead_letter_stream(
    client: redis_asyncio.Redis, key: str
) -> None:
    await client.xadd(key, {"junk": "1"})
    await client.xadd(key, {"r": b"\xc1"})  # r is no msgpack
    good = entry_fields(Record(b"k", b"ok"))
    await client.xadd(key, dict(zip(good[::2], good[1::2], strict=True)))
    async with RedisStreamsSink(client, f"{key}-dead") as dead_sink:
        dead = DeadLetters(dead_sink)
        async with asyncio.timeout(10):
            source = RedisStreamsSource(client, key, group="g", consumer="c", dead_letters=dead)
            async with source:
                async for inbound in source:
                    assert inbound.record.value == b"ok"
                    await source.ack(inbound)
                    break
    dead_entries = await client.xrange(f"{key}-dead")
    records = [entry_record(fields) for _, fields in dead_entries]
    assert [r.header("junk") if r else None for r in records] == [b"1", None]
    assert records[1] is not None
    assert records[1].value == b"\xc1"  # what the broken entry held, kept for inspection
    assert all(r and r.header(DEAD_REASON_HEADER) for r in records)
    assert (await client.xpending(key, "g"))["pending"] == 0
    assert dead.statistics().records == 2


async def test_maxlen_trims_the_stream_approximately(client: redis_asyncio.Redis, key: str) -> None:
    async with RedisStreamsSink(client, key, maxlen=100, exact_maxlen=True, batch=50) as sink:
        for seq in range(300):
            await sink.send(chunk_record(StreamChunk("s", seq, "x"), trace_id="t", tenant="a"))
    assert await client.xlen(key) == 100


def test_the_redis_bridge_example_runs(client: redis_asyncio.Redis) -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[3] / "examples" / "redis_bridge.py"
    done = subprocess.run(
        [sys.executable, str(script), URL],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "replayed 7 chunks: tokens cross the broker in order" in done.stdout


async def test_a_key_function_writes_one_redis_stream_per_icefloe_stream(
    client: redis_asyncio.Redis, key: str
) -> None:
    keys = [f"{key}:a", f"{key}:b"]
    try:
        sink = RedisStreamsSink(client, lambda r: f"{key}:{(r.key or b'').decode()}")
        assert sink.name == "redis:per-record"
        async with sink:
            for sid in ("a", "b", "a"):
                await sink.send(chunk_record(StreamChunk(sid, 0, "x"), trace_id="t", tenant="a"))
        assert [await client.xlen(k) for k in keys] == [2, 1]
    finally:
        await client.delete(*keys)
