"""Durable streams' cost: one producer, one reader, at each reliability level.

    PYTHONPATH=src python bench/durable.py [--chunks 20000] [--rounds 3] [--stores memory,sqlite]

Prints (as JSON on stdout; each round on stderr) chunks/s and the p50/p99
latency (chunk creation to the reader) of ``at_most_once`` (no store),
``at_least_once`` and ``exactly_once`` (a checkpoint every 16 chunks) over
``memory://`` and ``sqlite://`` (a fresh file in a temporary directory),
interleaved per round. The summary gives, per case, the best round's rate
and its ratio to ``at_most_once``, and over all rounds the median p50/p99
and the median *added* p50/p99: the case's latency minus
``at_most_once``'s in the same round (the figure issue 11's "added p99 <=
5 ms" is about). ``make bench`` runs it over SQLite (``bench/run.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
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


async def main(n: int, rounds: int, stores: frozenset[str]) -> None:
    best: dict[str, tuple[float, float, float]] = {}
    p50s: dict[str, list[float]] = {}
    p99s: dict[str, list[float]] = {}
    added: dict[str, list[tuple[float, float]]] = {}
    cases = [("at_most_once", None)] + [
        (level, url)
        for url in ("memory://", "sqlite")
        if url.rstrip(":/") in stores
        for level in ("at_least_once", "exactly_once")
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            base: tuple[float, float, float] | None = None
            for level, url in cases:
                name = f"{level}/{url or 'none'}"
                if url == "sqlite":
                    url = f"sqlite:///{Path(tmp) / f'{level}-{r}.db'}"
                store = None if url is None else open_store(url)
                result = await one(level, store, n)
                print(
                    f"round {r + 1} {name:28} {result[0]:>12,.0f} chunks/s  "
                    f"p50 {result[1]:.2f} ms  p99 {result[2]:.2f} ms",
                    file=sys.stderr,
                )
                if name not in best or result[0] > best[name][0]:
                    best[name] = result
                p50s.setdefault(name, []).append(result[1])
                p99s.setdefault(name, []).append(result[2])
                if base is None:
                    base = result
                else:
                    added.setdefault(name, []).append((result[1] - base[1], result[2] - base[2]))
    rate = best["at_most_once/none"][0]
    report = {
        k: {
            "chunks_per_s": round(v[0]),
            "ratio": round(v[0] / rate, 3),
            "p50_ms_median": round(statistics.median(p50s[k]), 2),
            "p99_ms_median": round(statistics.median(p99s[k]), 2),
            **(
                {
                    "added_p50_ms_median": round(statistics.median(a for a, _ in added[k]), 2),
                    "added_p99_ms_median": round(statistics.median(b for _, b in added[k]), 2),
                    "added_p99_ms_best": round(min(b for _, b in added[k]), 2),
                }
                if k in added
                else {}
            ),
        }
        for k, v in best.items()
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stores", default="memory,sqlite", help="memory, sqlite or both")
    args = parser.parse_args()
    chosen = frozenset(s.strip() for s in args.stores.split(",") if s.strip())
    asyncio.run(main(args.chunks, args.rounds, chosen))
