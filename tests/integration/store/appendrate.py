"""Appends per second on a store URL (the figures in docs/store-network.md).

    PYTHONPATH=src python tests/integration/store/appendrate.py URL [URL...]

For each URL, in a fresh namespace (a Redis prefix or a Postgres schema,
removed afterwards): one writer appending 1 and 16 chunks of 64 bytes per
call, the same with a checkpoint on every call, and 16 writers on 16
streams at once. Prints calls/s, chunks/s and the median and p99 call time.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid

from icefloe.core.reliability import Reliability
from icefloe.store import Checkpoint, RunRecord, Store, StoredChunk, open_store

RECORD = b"r" * 64
SECONDS = 2.0


def namespaced(url: str) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    sep = "&" if "?" in url else "?"
    if url.startswith("redis"):
        return f"{url}{sep}prefix=icefloe-rate:{tag}:", tag
    return f"{url}{sep}schema=rate_{tag}", tag


async def writer(
    store: Store, sid: str, per_call: int, checkpoint: bool, until: float
) -> list[float]:
    await store.create_run(
        RunRecord(sid, "t", "acme", Reliability.EXACTLY_ONCE, (), b"m", time.time())
    )
    seq, took = 0, []
    while time.monotonic() < until:
        batch = [StoredChunk(seq + i, RECORD) for i in range(per_call)]
        cp = Checkpoint(seq + per_call - 1, b"state" * 8) if checkpoint else None
        started = time.perf_counter()
        await store.append(sid, batch, checkpoint=cp)
        took.append(time.perf_counter() - started)
        seq += per_call
    return took


async def measure(url: str) -> None:
    full, tag = namespaced(url)
    store = open_store(full)
    await store.open()
    try:
        for writers, per_call, checkpoint in (
            (1, 1, False),
            (1, 16, False),
            (1, 1, True),
            (1, 16, True),
            (16, 1, False),
            (16, 16, False),
        ):
            until = time.monotonic() + SECONDS
            runs = await asyncio.gather(
                *(
                    writer(
                        store, f"{writers}-{per_call}-{checkpoint}-{w}", per_call, checkpoint, until
                    )
                    for w in range(writers)
                )
            )
            took = sorted(t for run in runs for t in run)
            calls = len(took) / SECONDS
            p99 = took[int(len(took) * 0.99)]
            print(
                f"{store.name}: writers={writers:2} chunks/call={per_call:2}"
                f" checkpoint={checkpoint!s:5}"
                f" {calls:8.0f} calls/s {calls * per_call:8.0f} chunks/s"
                f" median {statistics.median(took) * 1e3:.2f} ms p99 {p99 * 1e3:.2f} ms"
            )
    finally:
        await cleanup(store, url, tag)
        await store.close()


async def cleanup(store: Store, url: str, tag: str) -> None:
    if url.startswith("redis"):
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(url)
        keys = [k async for k in client.scan_iter(match=f"icefloe-rate:{tag}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    else:
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncpg.connect(url)
        await conn.execute(f"DROP SCHEMA IF EXISTS rate_{tag} CASCADE")
        await conn.close()


async def main(urls: list[str]) -> None:
    for url in urls:
        await measure(url)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or ["redis://127.0.0.1:6379/0"]))
