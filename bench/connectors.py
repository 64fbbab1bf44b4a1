"""Connector round trips beside the raw client doing the same work, in the same run.

Usage::

    python bench/connectors.py [--redis URL] [--rounds N] [--chunks N]

Prints one JSON object. ``redis_streams``: 10 streams of ``--chunks`` chunks
each written and read back through Redis Streams, one process doing both
ends concurrently. The icefloe variant uses ``RedisStreamsSink`` /
``RedisStreamsSource`` with :class:`~icefloe.core.reassembly.Reassembler`
and per-record acks; the floor uses redis-py directly: the same chunks,
encoded by the same codec, ``XADD`` in pipelines of 500, ``XREADGROUP``
500 at a time, each entry decoded and ``XACK``-ed. Variants alternate per
round after a warm-up; the best chunks/s of each and their ratio (target
>= 0.7) are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "integration" / "connectors"))

from roundtrip import round_trip

from icefloe.connectors.redis_streams import RedisStreamsSink, RedisStreamsSource
from icefloe.core.codec import Format, decode, encode
from icefloe.core.messages import StreamChunk

STREAMS = 10


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
    result = await round_trip(
        lambda: RedisStreamsSink(client, key),
        lambda: RedisStreamsSource(client, key, group="g", consumer="c", block_ms=100),
        key,
        streams=STREAMS,
        chunks=chunks,
    )
    return result.rate


async def main(url: str, rounds: int, chunks: int) -> None:
    client = Redis.from_url(url)
    best = {"floor": 0.0, "icefloe": 0.0}
    variants = {"floor": floor, "icefloe": icefloe_variant}
    try:
        for index in range(rounds + 1):
            order = list(variants) if index % 2 else list(reversed(variants))
            for name in order:
                key = f"icefloe-bench-{uuid.uuid4().hex}"
                try:
                    rate = await variants[name](client, key, chunks)
                finally:
                    await client.delete(key)
                if index:  # round 0 warms up
                    best[name] = max(best[name], rate)
                print(f"round {index} {name}: {rate:,.0f} chunks/s", file=sys.stderr)
    finally:
        await client.aclose()
    report = {
        "redis_streams": {
            "chunks": STREAMS * chunks,
            "floor_chunks_per_s": round(best["floor"]),
            "icefloe_chunks_per_s": round(best["icefloe"]),
            "ratio": round(best["icefloe"] / best["floor"], 3),
            "target": 0.7,
        }
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(main(args.redis, args.rounds, args.chunks))
