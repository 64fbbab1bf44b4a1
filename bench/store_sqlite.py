"""Micro-bench of SqliteStore's group commit: chunks/s and commits/s.

Usage::

    python bench/store_sqlite.py [--chunks N] [--synchronous normal|full]

For each (streams, chunks per append) case, that many streams append
concurrently until N chunks are stored in all; each chunk is a real record
(:func:`icefloe.store.records.encode_chunk` of a short token). Prints one
JSON object: per case chunks/s, appends/s, commits/s and calls per commit.
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

CASES = [(1, 1), (1, 16), (10, 1), (10, 16), (100, 1), (100, 16)]


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

        async def writer(sid: str) -> int:
            appends = 0
            for first in range(0, each, per_append):
                batch = [
                    StoredChunk(s, encode_chunk(StreamChunk(sid, s, "token ")))
                    for s in range(first, min(first + per_append, each))
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
    print(json.dumps({"synchronous": args.synchronous, "cases": results}, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
