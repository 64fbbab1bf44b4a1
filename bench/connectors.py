"""Redis Streams connector round trip beside raw redis-py (part of ``make bench``).

``redis_streams_round_trip``: 10 streams of N/10 chunks each written and read
back through Redis Streams, one process doing both ends concurrently. The
icefloe variant uses ``RedisStreamsSink`` / ``RedisStreamsSource`` with
:class:`~icefloe.core.reassembly.Reassembler` and per-record acks; the floor
uses redis-py directly: the same chunks, encoded by the same codec, ``XADD``
in pipelines of 500, ``XREADGROUP`` 500 at a time, each entry decoded and
``XACK``-ed. Each run uses a fresh stream key, deleted after it.

The server is the one at ``ICEFLOE_BENCH_REDIS`` (default
``redis://127.0.0.1:6379/0``); when it does not answer,
:func:`redis_scenarios` says so and returns no scenario.

Usage for one quick comparison: ``python bench/connectors.py [N]`` prints the
samples as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from icefloe.connectors.redis_streams import RedisStreamsSink, RedisStreamsSource
from icefloe.core.codec import Format, decode, encode
from icefloe.core.messages import StreamChunk
from measure import CHUNKS_PER_S, Sample, throughput_sample

if TYPE_CHECKING:
    from edge import HttpScenario

__all__ = ["redis_scenarios"]

RunFn = Callable[[int], Awaitable[Sample]]

#: chunks per round trip (``--quick`` divides it)
CHUNKS = 20_000
STREAMS = 10
ROUNDS = 5
URL = os.environ.get("ICEFLOE_BENCH_REDIS", "redis://127.0.0.1:6379/0")

_TESTS = Path(__file__).resolve().parents[1] / "tests" / "integration" / "connectors"


async def floor(client: Redis, key: str, chunks: int) -> float:
    """Raw redis-py: same chunks, same codec, XADD / XREADGROUP / XACK."""
    await client.xgroup_create(key, "g", "0", mkstream=True)
    total = STREAMS * chunks
    start = time.perf_counter()

    async def produce() -> None:
        pipe = client.pipeline(transaction=False)
        for seq in range(chunks):
            for s in range(STREAMS):
                chunk = StreamChunk(f"s{s}", seq, f"t{seq}", seq == chunks - 1)
                pipe.xadd(key, {"v": encode(chunk, Format.MSGPACK)}, maxlen=1_000_000)
                if len(pipe) >= 500:
                    await pipe.execute()
        await pipe.execute()

    async def consume() -> None:
        seen = 0
        nexts = [0] * STREAMS
        while seen < total:
            reply = await client.xreadgroup("g", "c", {key: ">"}, count=500, block=100)
            if not reply:
                continue
            ids = []
            for entry_id, fields in reply[0][1]:
                chunk = decode(fields[b"v"], Format.MSGPACK)
                s = int(chunk.stream_id[1:])
                assert chunk.seq == nexts[s]
                nexts[s] += 1
                ids.append(entry_id)
            await client.xack(key, "g", *ids)
            seen += len(ids)

    await asyncio.gather(produce(), consume())
    return total / (time.perf_counter() - start)


async def icefloe_variant(client: Redis, key: str, chunks: int) -> float:
    """The connectors: RedisStreamsSink, RedisStreamsSource, reassembly, per-record acks."""
    sys.path.insert(0, str(_TESTS))
    try:
        from roundtrip import round_trip  # tests/integration/connectors/roundtrip.py
    finally:
        sys.path.remove(str(_TESTS))
    result = await round_trip(
        lambda: RedisStreamsSink(client, key),
        lambda: RedisStreamsSource(client, key, group="g", consumer="c", block_ms=100),
        key,
        streams=STREAMS,
        chunks=chunks,
    )
    return result.rate


async def _sample(
    variant: Callable[[Redis, str, int], Awaitable[float]], client: Redis, n: int
) -> Sample:
    key = f"icefloe-bench-{uuid.uuid4().hex}"
    try:
        rate = await variant(client, key, max(1, n // STREAMS))
    finally:
        await client.delete(key)
    total = STREAMS * max(1, n // STREAMS)
    return throughput_sample(total, total / rate, CHUNKS_PER_S)


@asynccontextmanager
async def round_trip_session() -> AsyncIterator[tuple[RunFn, RunFn]]:
    client = Redis.from_url(URL)
    try:
        yield partial(_sample, floor, client), partial(_sample, icefloe_variant, client)
    finally:
        await client.aclose()


def _reachable(url: str) -> bool:
    # synchronous: bench/run.py asks before its event loop starts, __main__ inside one
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def reachable_redis() -> bool:
    """Whether the bench's Redis (``ICEFLOE_BENCH_REDIS``) answers."""
    return _reachable(URL)


def redis_scenarios(divisor: int) -> Sequence[HttpScenario]:
    """The Redis Streams scenario; none, with a message on stderr, when Redis is unreachable."""
    from edge import HttpScenario

    if not _reachable(URL):
        print(f"redis_streams_round_trip: skipped, no Redis answers at {URL}", file=sys.stderr)
        return ()
    return (
        HttpScenario(
            "redis_streams_round_trip",
            CHUNKS // divisor,
            "chunks/s",
            (CHUNKS_PER_S,),
            round_trip_session,
            warm_up=True,
            rounds=ROUNDS,
            params={"streams": STREAMS},
        ),
    )


if __name__ == "__main__":
    # python bench/connectors.py [N]: one quick comparison, for development
    async def _once(n: int) -> None:
        for scenario in redis_scenarios(CHUNKS // n):
            async with scenario.session() as (floor_run, ice_run):
                for run in (floor_run, ice_run, floor_run, ice_run):
                    print(json.dumps(await run(scenario.size)))

    asyncio.run(_once(int(sys.argv[1]) if len(sys.argv) > 1 else CHUNKS))
