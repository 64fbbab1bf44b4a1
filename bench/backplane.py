"""The backplane beside raw redis-py (issue 12): ``python bench/backplane.py``.

One stream of ``--chunks`` chunks is produced in one process and read in
another through Redis, twice per round, in alternating order:

* ``icefloe``: the producer's :func:`~icefloe.backplane.publisher.publish`
  (pipelined ``XADD … MAXLEN ~``, meta updates, the window check against the
  readers' reported positions) and the reader's
  :class:`~icefloe.backplane.engine.RedisBackplane` follow (one ``XREAD``
  task, a :class:`~icefloe.backplane.reader.RemoteReader`, position reports);
* ``raw``: the same work written directly with redis-py: the same msgpack
  chunks, ``XADD`` pipelined in batches of 256 with the same ``MAXLEN ~``,
  and a blocking ``XREAD COUNT 256`` loop decoding them (with no window:
  its ``MAXLEN`` holds the whole stream instead).

Both read every chunk in order; chunks/s is counted from the first chunk's
creation to the last chunk's arrival, and the added latency per chunk is
arrival minus creation (p50/p99). Needs a Redis server
(``--redis redis://127.0.0.1:6379/0``); its keys go under a fresh prefix and
are deleted. ``make bench`` runs it when Redis answers (``bench/run.py``).

With ``--nats nats://127.0.0.1:4222`` the same rounds also run the NATS
JetStream engine beside raw nats-py (``bench/backplane_nats.py``), reported
as ``nats``, ``nats-raw`` and ``nats_ratio``; ``--no-redis`` runs only those.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import time
import uuid
from typing import Any

import backplane_nats
from backplane_follow import BATCH, HISTORY, read_arrivals
from icefloe.backplane.engine import RedisBackplane
from icefloe.backplane.keys import Keys, entry_id
from icefloe.backplane.publisher import publish
from icefloe.core.codec import decode_chunk_msgpack, encode_chunk_msgpack
from icefloe.core.messages import StreamChunk
from icefloe.exceptions import EndOfStream, WouldBlock

#: seconds a reader may take to start or to read the stream
TIMEOUT_S = 120


class _Source:
    """A stream whose chunks are created as the publisher asks for them."""

    def __init__(self, sid: str, count: int, text: str) -> None:
        self._sid, self._count, self._text, self._next = sid, count, text, 0
        self._yielded = asyncio.Event()

    def receive_nowait(self) -> StreamChunk:
        seq = self._next
        if seq > self._count:
            raise EndOfStream("done")
        if seq and seq % BATCH == 0 and not self._yielded.is_set():
            self._yielded.set()  # let the loop run: a producer yields now and then
            raise WouldBlock("yield")
        self._yielded.clear()
        self._next += 1
        return StreamChunk(self._sid, seq, self._text, done=seq == self._count)

    async def wait(self) -> None:
        await asyncio.sleep(0)

    def close(self) -> None:
        pass


async def _produce_icefloe(url: str, sid: str, count: int, text: str) -> None:
    import redis.asyncio

    bp_url, prefix = url.split("?prefix=")
    client = redis.asyncio.Redis.from_url(bp_url)
    try:
        await publish(
            client,
            Keys(prefix),
            _Source(sid, count, text),
            stream_id=sid,
            tenant="bench",
            owner="bench",
            history=HISTORY,
            window=HISTORY,
        )
    finally:
        await client.aclose()


async def _read_icefloe(url: str, sid: str, ready: Any) -> list[tuple[int, int]]:
    bp = RedisBackplane(url, history=HISTORY, window=HISTORY, on_cancel=lambda _s: None)
    return await read_arrivals(bp, sid, ready)


async def _produce_raw(url: str, sid: str, count: int, text: str) -> None:
    import redis.asyncio

    bp_url, prefix = url.split("?prefix=")
    client = redis.asyncio.Redis.from_url(bp_url)
    key = Keys(prefix).log(sid)
    try:
        seq = 0
        while seq <= count:
            pipe = client.pipeline(transaction=False)
            for n in range(seq, min(seq + BATCH, count + 1)):
                chunk = StreamChunk(sid, n, text, done=n == count)
                # No window here: MAXLEN must hold the whole stream, or a
                # reader that falls behind loses chunks (the cost is the same).
                pipe.xadd(
                    key,
                    {"c": encode_chunk_msgpack(chunk)},
                    id=entry_id(chunk.seq),
                    maxlen=count + 1,
                    approximate=True,
                )
            seq += BATCH
            await pipe.execute()
    finally:
        await client.aclose()


async def _read_raw(url: str, sid: str, ready: Any) -> list[tuple[int, int]]:
    import redis.asyncio

    bp_url, prefix = url.split("?prefix=")
    client = redis.asyncio.Redis.from_url(bp_url)
    await client.ping()
    ready.set()
    key = Keys(prefix).log(sid)
    arrivals: list[tuple[int, int]] = []
    last = "0-0"
    try:
        while True:
            answer: Any = await client.xread({key: last}, count=BATCH, block=1000)
            for entry, fields in answer[0][1] if answer else ():
                last = entry.decode()
                chunk = decode_chunk_msgpack(fields[b"c"])
                arrivals.append((chunk.ts, time.time_ns()))
                if chunk.done:
                    return arrivals
    finally:
        await client.aclose()


_READERS = {
    "icefloe": _read_icefloe,
    "raw": _read_raw,
    "nats": backplane_nats.read_icefloe,
    "nats-raw": backplane_nats.read_raw,
}


def _reader_main(variant: str, url: str, sid: str, out: Any, ready: Any) -> None:
    read = _READERS[variant]
    try:
        out.send(asyncio.run(asyncio.wait_for(read(url, sid, ready), TIMEOUT_S)))
    except BaseException as exc:
        out.send(repr(exc))


def _producer_main(variant: str, url: str, sid: str, count: int, text: str) -> None:
    if variant == "nats":
        asyncio.run(backplane_nats.produce_icefloe(url, sid, _Source(sid, count, text)))
    elif variant == "nats-raw":
        asyncio.run(backplane_nats.produce_raw(url, sid, count, text))
    else:
        produce = _produce_icefloe if variant == "icefloe" else _produce_raw
        asyncio.run(produce(url, sid, count, text))


def _one(variant: str, url: str, count: int, size: int) -> dict[str, float]:
    sid = uuid.uuid4().hex
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    ready = ctx.Event()
    reader = ctx.Process(target=_reader_main, args=(variant, url, sid, theirs, ready))
    reader.start()
    if not ready.wait(TIMEOUT_S):  # the reader process starts and connects
        raise RuntimeError(f"{variant} reader did not start")
    producer = ctx.Process(target=_producer_main, args=(variant, url, sid, count, "x" * size))
    producer.start()
    if not mine.poll(TIMEOUT_S):
        raise RuntimeError(f"{variant} reader did not finish")
    arrivals: list[tuple[int, int]] | str = mine.recv()
    producer.join()
    reader.join()
    if isinstance(arrivals, str):
        raise RuntimeError(f"{variant} reader failed: {arrivals}")
    assert len(arrivals) == count + 1, (variant, len(arrivals))
    elapsed = (arrivals[-1][1] - arrivals[0][0]) / 1e9
    latencies = sorted((a - c) / 1e6 for c, a in arrivals)
    return {
        "chunks_per_s": (count + 1) / elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--chunks", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nats", default=None, help="also bench NATS JetStream at this URL")
    parser.add_argument("--no-redis", action="store_true", help="bench NATS only")
    options = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    prefix = f"icefloe:bench:{tag}:"
    urls = {} if options.no_redis else {"icefloe": f"{options.redis}?prefix={prefix}"}
    urls["raw"] = urls.get("icefloe", "")
    if options.nats:
        urls["nats"] = urls["nats-raw"] = f"{options.nats}?prefix=icefloe_bench_{tag}"
        asyncio.run(backplane_nats.setup(urls["nats"], options.chunks))
    variants = [v for v, url in urls.items() if url]
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    try:
        for i in range(options.rounds):
            for variant in variants if i % 2 == 0 else variants[::-1]:
                run = _one(variant, urls[variant], options.chunks, options.size)
                results[variant].append(run)
    finally:
        if "icefloe" in urls:
            asyncio.run(_cleanup(options.redis, prefix))
        if "nats" in urls:
            asyncio.run(backplane_nats.cleanup(urls["nats"]))
    summary: dict[str, Any] = {
        variant: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for variant, runs in results.items()
    }
    for name, ours, raw in [("ratio", "icefloe", "raw"), ("nats_ratio", "nats", "nats-raw")]:
        if ours in summary:
            ratio = summary[ours]["chunks_per_s"] / summary[raw]["chunks_per_s"]
            summary[name] = round(ratio, 3)
    print(json.dumps({"chunks": options.chunks, "size": options.size, **summary}, indent=2))


async def _cleanup(redis_url: str, prefix: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


if __name__ == "__main__":
    main()
