"""Micro-bench of SqliteStore's group commit: chunks/s and commits/s.

Usage::

    python bench/store_sqlite.py [--chunks N] [--synchronous normal|full]

For each (streams, chunks per append) case, that many streams append
concurrently until N chunks are stored in all; each chunk is a real record
(:func:`icefloe.store.records.encode_chunk` of a short token), encoded before
the clock starts. Prints one JSON object: per case chunks/s, appends/s,
commits/s and calls per commit, and what encoding one record costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from icefloe.core.messages import StreamChunk
from icefloe.core.reliability import Reliability
from icefloe.store import RunRecord, StoredChunk
from icefloe.store.records import encode_chunk
from icefloe.store.sqlite import SqliteStore

CASES = [(1, 1), (1, 16), (1, 256), (10, 1), (10, 16), (100, 1), (100, 16)]


async def _case(
    path: str, streams: int, per_append: int, total: int, sync: str
) -> dict[str, float]:
    store = SqliteStore(path, synchronous=sync)
    await store.open()
    try:
        sids = [f"s{i}" for i in range(streams)]
        for sid in sids:
            await store.create_run(
                RunRecord(sid, "t", "acme", Reliability.AT_LEAST_ONCE, (), b"m", time.time())
            )
        each = total // streams
        # Records are encoded before the clock starts: this measures the store.
        made = {
            sid: [encode_chunk(StreamChunk(sid, s, "token ")) for s in range(each)] for sid in sids
        }

        async def writer(sid: str) -> int:
            appends = 0
            mine = made[sid]
            for first in range(0, each, per_append):
                batch = [
                    StoredChunk(s, mine[s]) for s in range(first, min(first + per_append, each))
                ]
                await store.append(sid, batch)
                appends += 1
            return appends

        commits = store.commits
        start = time.perf_counter()
        appends = sum(await asyncio.gather(*(writer(sid) for sid in sids)))
        elapsed = time.perf_counter() - start
        commits = store.commits - commits
        return {
            "streams": streams,
            "chunks_per_append": per_append,
            "chunks_per_s": round(each * streams / elapsed),
            "appends_per_s": round(appends / elapsed),
            "commits_per_s": round(commits / elapsed),
            "appends_per_commit": round(appends / max(commits, 1), 1),
        }
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=50_000)
    parser.add_argument("--synchronous", default="normal", choices=["normal", "full"])
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (streams, per_append) in enumerate(CASES):
            path = str(Path(tmp) / f"b{i}.db")
            results.append(await _case(path, streams, per_append, args.chunks, args.synchronous))
            print(results[-1], file=sys.stderr)
    chunk = StreamChunk("0123456789abcdef0123456789abcdef", 12345, "token ")
    started = time.perf_counter()
    for _ in range(100_000):
        encode_chunk(chunk)
    encode_ns = round((time.perf_counter() - started) * 1e4)
    print(
        json.dumps(
            {"synchronous": args.synchronous, "record_encode_ns": encode_ns, "cases": results},
            indent=1,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
