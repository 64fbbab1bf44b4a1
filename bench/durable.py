"""Durable streams' cost: one producer, one reader, at each reliability level.

    PYTHONPATH=src python bench/durable.py [--chunks 20000] [--rounds 3]

Prints chunks/s and the p50/p99 latency (chunk creation to the reader) of
``at_most_once`` (no store), ``at_least_once`` and ``exactly_once`` (a
checkpoint every 16 chunks) over ``memory://`` and ``sqlite://`` (a fresh
file in a temporary directory), interleaved per round; best round kept.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from icefloe import Context, Headers, Message, Node, NodePolicy, create
from icefloe.store import Store, open_store

CHECKPOINT_EVERY = 16


def producer(level: str) -> Node:
    async def produce(msg: Message, ctx: Context) -> None:
        n = int(msg.payload)
        for i in range(n):
            await ctx.emit_chunk(parent=msg, text="tok")
            if level == "exactly_once" and (i + 1) % CHECKPOINT_EVERY == 0:
                await ctx.checkpoint(i + 1)
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return Node(produce, name="produce", policy=NodePolicy(reliability=level))


async def one(level: str, store: Store | None, n: int) -> tuple[float, float, float]:
    flow = create(producer(level).to(), store=store)
    async with flow:
        await flow.store_ready()
        start = time.perf_counter()
        stream = flow.stream(Message(payload=n, headers=Headers(tenant="bench")))
        latencies = [(time.time_ns() - chunk.ts) / 1e6 async for chunk in stream]
        elapsed = time.perf_counter() - start
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    return n / elapsed, statistics.median(latencies), p99


async def main(n: int, rounds: int) -> None:
    best: dict[str, tuple[float, float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            ("at_most_once", None),
            ("at_least_once", "memory://"),
            ("exactly_once", "memory://"),
            ("at_least_once", "sqlite"),
            ("exactly_once", "sqlite"),
        ]
        for r in range(rounds):
            for level, url in cases:
                name = f"{level}/{url or 'none'}"
                if url == "sqlite":
                    url = f"sqlite:///{Path(tmp) / f'{level}-{r}.db'}"
                store = None if url is None else open_store(url)
                result = await one(level, store, n)
                print(
                    f"round {r + 1} {name:28} {result[0]:>12,.0f} chunks/s  "
                    f"p50 {result[1]:.2f} ms  p99 {result[2]:.2f} ms"
                )
                if name not in best or result[0] > best[name][0]:
                    best[name] = result
    base = best["at_most_once/none"][0]
    print(
        json.dumps(
            {
                k: {
                    "chunks_per_s": round(v[0]),
                    "ratio": round(v[0] / base, 3),
                    "p50_ms": round(v[1], 2),
                    "p99_ms": round(v[2], 2),
                }
                for k, v in best.items()
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.chunks, args.rounds))
