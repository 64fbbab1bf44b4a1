"""Bridge route throughput: one Redis Streams -> Redis Streams route, records/s.

Usage::

    python bench/bridge_route.py [--records N] [--rounds R] [--batch B]

Needs the Redis at 127.0.0.1:6379. Each round writes N chunk records to a
fresh source stream (before the clock starts), runs a gateway with one
route in this process (``icefloe bridge`` does the same), and times from the
route's start until its sink confirmed all N (``records_out``). Prints one
JSON object: the rate of every round, the best and the median.
``--batch`` sets the route's ``batch`` (when the installed icefloe has it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any

from redis.asyncio import Redis

from icefloe.connectors.record import chunk_record
from icefloe.connectors.redis_streams import RedisStreamsSink
from icefloe.core.messages import StreamChunk
from icefloe.gateway import Gateway, Served, parse_config

URL = "redis://127.0.0.1:6379/0"


async def _fill(client: Redis, key: str, records: int) -> None:
    async with RedisStreamsSink(client, key) as sink:
        for i in range(records):
            chunk = StreamChunk(f"s{i % 10}", i // 10, f"token {i} ")
            await sink.send(chunk_record(chunk, trace_id="t", tenant="acme"))
        await sink.flush()


async def one_round(client: Redis, records: int, batch: int | None) -> float:
    tag = uuid.uuid4().hex[:8]
    source, sink = f"bench-bridge-in-{tag}", f"bench-bridge-out-{tag}"
    await _fill(client, source, records)
    route: dict[str, Any] = {
        "source": {"kind": "redis-streams", "url": URL, "key": source, "block_ms": 100},
        "sink": {"kind": "redis-streams", "url": URL, "key": sink, "maxlen": 0},
    }
    if batch is not None:
        route["batch"] = batch
    gateway = Gateway(parse_config({"routes": {"bench": route}}))
    try:
        started = time.perf_counter()
        async with gateway.running(Served(None, None)):
            while gateway.statuses()[0].records_out < records:  # noqa: ASYNC110
                await asyncio.sleep(0.005)  # polling the counter is the measurement
            elapsed = time.perf_counter() - started
        return records / elapsed
    finally:
        await client.delete(source, sink)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=None)
    args = parser.parse_args()
    client = Redis.from_url(URL)
    try:
        rates = [await one_round(client, args.records, args.batch) for _ in range(args.rounds)]
    finally:
        await client.aclose()
    print(
        json.dumps(
            {
                "scenario": "bridge redis-streams -> redis-streams",
                "records": args.records,
                "records_per_s": [round(r) for r in rates],
                "best": round(max(rates)),
                "median": round(statistics.median(rates)),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
