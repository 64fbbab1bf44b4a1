"""Micro-bench of hub topic publishes with and without a durable store.

Usage::

    python bench/topic_journal.py [--events N] [--redis URL]

Cases, each on one topic with one subscriber (drained as it goes):

* ``memory``: ``Hub.publish``, as ``icefloe serve`` without ``--store``;
* ``sqlite`` / ``redis``: :class:`~icefloe.transport.topic_journal.TopicJournal`
  ``publish`` (what ``POST /v1/topics`` awaits: the store write, then the
  delivery), one publisher at a time (latency) and 64 at once (throughput),
  and ``publish_nowait`` (the WebSocket op, which does not wait).

``backplane``: the engine numbering a topic (``--backplane``): how long a
publish waits for its offset, and until it comes back to be delivered.

Prints one JSON object: per case events/s and, for one publisher, p50/p99 µs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from icefloe.hub import Hub, HubLimits
from icefloe.store.redis_topics import RedisTopicStore
from icefloe.store.sqlite_topics import SqliteTopicStore
from icefloe.store.topics import TopicStore
from icefloe.transport.topic_journal import TopicJournal


def _pcts(samples: list[float]) -> dict[str, float]:
    samples.sort()
    return {
        "p50_us": round(statistics.median(samples) * 1e6, 1),
        "p99_us": round(samples[int(len(samples) * 0.99) - 1] * 1e6, 1),
    }


async def _drain(sub: Any) -> None:
    while True:
        await sub.wait()
        while sub.held():
            sub.receive_nowait()


async def memory(events: int) -> dict[str, Any]:
    async with Hub(HubLimits(max_bytes_total=None, max_bytes_per_tenant=None)) as hub:
        sub = hub.subscribe("t", tenant="x", buffer=65_536)
        drain = asyncio.ensure_future(_drain(sub))
        lat = []
        start = time.perf_counter()
        for n in range(events):
            t0 = time.perf_counter()
            await hub.publish("t", {"n": n}, tenant="x")
            lat.append(time.perf_counter() - t0)
        rate = events / (time.perf_counter() - start)
        drain.cancel()
        return {"sequential_events_per_s": round(rate), **_pcts(lat)}


async def journaled(store: TopicStore, events: int) -> dict[str, Any]:
    hub = Hub(HubLimits(max_bytes_total=None, max_bytes_per_tenant=None))
    journal = TopicJournal(hub, store)
    await journal.open()
    sub = hub.subscribe("t.>", tenant="x", buffer=65_536)
    drain = asyncio.ensure_future(_drain(sub))
    try:
        lat = []
        seq = max(200, events // 20)
        start = time.perf_counter()
        for n in range(seq):
            t0 = time.perf_counter()
            await journal.publish("t.seq", {"n": n}, tenant="x")
            lat.append(time.perf_counter() - t0)
        seq_rate = seq / (time.perf_counter() - start)

        async def publisher(k: int, count: int) -> None:
            for n in range(count):
                await journal.publish(f"t.c{k % 8}", {"n": n}, tenant="x")

        start = time.perf_counter()
        await asyncio.gather(*(publisher(k, events // 64) for k in range(64)))
        conc_rate = (events // 64 * 64) / (time.perf_counter() - start)

        start = time.perf_counter()
        for n in range(events):
            while True:
                try:
                    journal.publish_nowait("t.nowait", {"n": n}, tenant="x")
                    break
                except Exception:  # outbox full: let the writer run
                    await asyncio.sleep(0)
        nowait_call = (time.perf_counter() - start) / events
        return {
            "sequential_events_per_s": round(seq_rate),
            **_pcts(lat),
            "concurrent_64_events_per_s": round(conc_rate),
            "publish_nowait_call_us": round(nowait_call * 1e6, 2),
        }
    finally:
        drain.cancel()
        await journal.aclose()
        hub.close()


async def backplane(url: str, events: int) -> dict[str, Any]:
    """The engine's numbering (:class:`~icefloe.backplane.topics.HubLink`): one
    publisher waiting for each publish, and until the event comes back from
    ``XREAD`` (what a subscriber on any gateway waits for)."""
    import redis.asyncio

    from icefloe.backplane.topics import HubLink

    key = f"icefloe-bench:{uuid.uuid4().hex[:8]}:hub"
    client = redis.asyncio.Redis.from_url(url)
    arrived: dict[int, float] = {}
    waiting: dict[int, asyncio.Future[None]] = {}

    async def deliver(tenant: str, topic: str, epoch: str, offset: int, event: bytes) -> None:
        arrived[offset] = time.perf_counter()
        done = waiting.pop(offset, None)
        if done is not None:
            done.set_result(None)

    link = HubLink(client, key, "bench", deliver)
    await link.open()
    try:
        numbered, delivered = [], []
        count = max(200, events // 20)
        for _ in range(count):
            t0 = time.perf_counter()
            _, offset = await link.publish("x", "t", b"payload")
            t1 = time.perf_counter()
            if offset not in arrived:
                waiting[offset] = asyncio.get_running_loop().create_future()
                await waiting[offset]
            numbered.append(t1 - t0)
            delivered.append(arrived[offset] - t0)
        return {
            "numbered": _pcts(numbered),
            "delivered_back": _pcts(delivered),
        }
    finally:
        await link.aclose()
        keys = [k async for k in client.scan_iter(match=f"{key}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    report: dict[str, Any] = {"memory": await memory(args.events)}
    with tempfile.TemporaryDirectory() as tmp:
        report["sqlite"] = await journaled(
            SqliteTopicStore(str(Path(tmp) / "topics.db")), args.events
        )
    prefix = f"icefloe-bench:{uuid.uuid4().hex[:8]}:"
    store = RedisTopicStore(args.redis, prefix=prefix)
    try:
        report["redis"] = await journaled(store, args.events)
    finally:
        import redis.asyncio

        admin = redis.asyncio.Redis.from_url(args.redis)
        keys = [k async for k in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()
    report["backplane"] = await backplane(args.redis, args.events)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
