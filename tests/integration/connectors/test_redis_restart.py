"""Redis Streams through a real broker restart: a private ``redis-server`` killed mid-stream.

The server (tests/integration/connectors/redisserver.py) keeps an
append-only file fsynced on every write, so the stream, the group's
last-delivered id and its pending entries survive the restart; what the
restart may cost is duplicates (a batch whose reply died with the server is
written again; entries delivered but not yet acked are delivered again),
which the consumer's reassembly drops and counts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redisserver import RedisServer, redis_server_binary
from roundtrip import consume, stream_ids

from icefloe.connectors import Inbound, chunk_record, record_chunk
from icefloe.core.messages import StreamChunk
from icefloe.core.reassembly import Reassembler

redis_asyncio = pytest.importorskip("redis.asyncio", reason="the redis extra is not installed")
from icefloe.connectors.redis_streams import RedisStreamsSink, RedisStreamsSource  # noqa: E402

STREAMS = 10
CHUNKS = 1000
#: acked chunks before the kill: the middle of the round trip
KILL_AFTER = 3000
#: how long the broker stays down before it is started again
DOWN_S = 1.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    broker = RedisServer(binary, tmp_path)
    broker.start()
    yield broker
    broker.stop()


async def _produce_paced(sink: RedisStreamsSink, sids: list[str]) -> None:
    # each stream yields to the loop for a moment every ten chunks, so the
    # sending spans the kill rather than ending before it
    async def one(sid: str) -> None:
        for seq in range(CHUNKS):
            chunk = StreamChunk(sid, seq, f"t{seq}", seq == CHUNKS - 1)
            await sink.send(chunk_record(chunk, trace_id=sid, tenant="acme"))
            if seq % 10 == 0:
                await asyncio.sleep(0.002)

    async with asyncio.TaskGroup() as tg:
        for sid in sids:
            tg.create_task(one(sid))
    await sink.flush()


async def _restart_when(
    server: RedisServer, source: RedisStreamsSource, *, graceful: bool
) -> tuple[int, float]:
    """Stop the server once ``KILL_AFTER`` chunks are acked; start it again. -> (acked, start s)."""
    while source.statistics().confirmed < KILL_AFTER:
        await asyncio.sleep(0.005)
    acked = source.statistics().confirmed
    await asyncio.to_thread(server.stop, graceful=graceful)
    await asyncio.sleep(DOWN_S)  # the outage itself
    return acked, await asyncio.to_thread(server.start)


@pytest.mark.parametrize("graceful", [False, True], ids=["sigkill", "shutdown"])
async def test_a_broker_restart_mid_stream_loses_no_chunk(
    server: RedisServer, graceful: bool
) -> None:
    client = redis_asyncio.Redis.from_url(server.url)
    sids = stream_ids("restart", STREAMS)
    reassembler: Reassembler[tuple[Inbound, int]] = Reassembler(time.monotonic)
    began = time.perf_counter()
    try:
        async with asyncio.timeout(120):
            source = RedisStreamsSource(client, "chunks", group="g", consumer="c", block_ms=100)
            sink = RedisStreamsSink(client, "chunks", batch=50)
            async with source, sink:
                # a sink that gives up fails the group at once, not at the timeout
                async with asyncio.TaskGroup() as tg:
                    restarting = tg.create_task(_restart_when(server, source, graceful=graceful))
                    tg.create_task(_produce_paced(sink, sids))
                    out = await consume(source, reassembler, sids, CHUNKS)
                acked_at_kill, start_s = restarting.result()
                await source.__aexit__(None, None, None)  # the last acks, before the check
                entries = await client.xlen("chunks")
                pending = (await client.xpending("chunks", "g"))["pending"]
    finally:
        await client.aclose()
    seconds = time.perf_counter() - began
    sink_stats, source_stats, stats = (
        sink.statistics(),
        source.statistics(),
        reassembler.statistics(),
    )
    print(
        f"redis {'shutdown' if graceful else 'SIGKILL'} after {acked_at_kill} acked: "
        f"restart {start_s * 1000:.0f} ms (+{DOWN_S * 1000:.0f} ms down), round trip "
        f"{seconds:.2f}s, sink reconnects={sink_stats.reconnects} "
        f"source reconnects={source_stats.reconnects}, stream entries={entries}, "
        f"redelivered/duplicates dropped={stats.duplicates}"
    )
    assert out == {sid: list(range(CHUNKS)) for sid in sids}
    assert stats.completed == STREAMS
    assert stats.gaps == 0
    assert sink_stats.failed == 0
    assert sink_stats.reconnects >= 1
    assert source_stats.reconnects >= 1
    # every entry in the stream was delivered, and each one beyond the
    # 10,000 chunks (a batch written twice) or delivered twice was dropped
    assert stats.released == STREAMS * CHUNKS
    assert source_stats.records == stats.released + stats.duplicates
    assert entries >= STREAMS * CHUNKS
    assert stats.duplicates >= entries - STREAMS * CHUNKS
    assert pending == 0


async def test_a_restart_without_persistence_recreates_the_group(tmp_path: Path) -> None:
    # A server with no AOF comes back empty: the source's next read meets
    # NOGROUP. It creates the group again and reads what is written after.
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = RedisServer(binary, tmp_path, persistent=False)
    server.start()
    client = redis_asyncio.Redis.from_url(server.url)

    async def send(seqs: range) -> None:
        async with RedisStreamsSink(client, "chunks") as sink:
            for seq in seqs:
                await sink.send(chunk_record(StreamChunk("s", seq, "x"), trace_id="t", tenant="a"))

    seen: list[int] = []
    try:
        async with asyncio.timeout(30):
            await send(range(5))
            source = RedisStreamsSource(client, "chunks", group="g", consumer="c", block_ms=50)
            async with source:
                async for inbound in source:
                    seen.append(record_chunk(inbound.record).chunk.seq)
                    await source.ack(inbound)
                    if len(seen) == 5:
                        server.stop()
                        server.start()
                        await send(range(5, 10))
                    if len(seen) == 10:
                        break
            assert (await client.xpending("chunks", "g"))["pending"] == 0
    finally:
        await client.aclose()
        server.stop()
    assert seen == list(range(10))
    assert source.statistics().reconnects >= 1
