"""A :class:`~icefloe.transport.backplane_worker.Worker` in this process on the
machine's Redis (issue 12): what its drain and its take-over limit do, seen
in the queue and the stream's meta."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from cluster import REDIS_URL
from wflow import exactly_once

from icefloe.backplane.keys import Keys
from icefloe.backplane.runqueue import GROUP, LEASE_MS, RunQueue
from icefloe.core.messages import Headers, Message
from icefloe.store.memory import MemoryStore
from icefloe.store.records import encode_message
from icefloe.transport.backplane_worker import MAX_DELIVERIES, Worker

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"icefloe:test:{uuid.uuid4().hex[:10]}:"
    yield name
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"{name}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def _enqueue(queue: RunQueue, payload: object) -> str:
    message = Message(payload=payload, headers=Headers(tenant="t1"))
    await queue.enqueue(message.trace_id, "t1", encode_message(message))
    return message.trace_id


async def _state(client: redis.asyncio.Redis, keys: Keys, sid: str) -> str:
    return (await client.hget(keys.meta(sid), "state") or b"").decode()


async def test_a_drain_lets_a_run_end_within_the_timeout(prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    keys = Keys(prefix)
    queue = RunQueue(client, keys)
    await queue.ensure_group()
    flow = exactly_once()
    flow.use_store(MemoryStore())
    worker = Worker(flow, f"{REDIS_URL}?prefix={prefix}", drain_timeout_s=10)
    try:
        sid = await _enqueue(queue, {"n": 10, "pace_ms": 30})
        running = asyncio.ensure_future(worker.run())
        async with asyncio.timeout(10):
            while await _state(client, keys, sid) != "running":
                await asyncio.sleep(0.01)  # polling the meta another task writes
            worker.drain()
            await running
        assert await _state(client, keys, sid) == "done"
        stats = await queue.stats()
        assert (stats["queued"], stats["running"], stats["workers"]) == (0, 0, [])
    finally:
        await client.aclose()


async def test_a_start_taken_over_too_often_is_failed(prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    keys = Keys(prefix)
    queue = RunQueue(client, keys)
    await queue.ensure_group()
    worker = Worker(exactly_once(), f"{REDIS_URL}?prefix={prefix}", exit_when_idle_s=0.5)
    try:
        sid = await _enqueue(queue, {"n": 10})
        (claimed,) = await queue.claim("dead", 1, 10)
        assert await queue.own(sid, "dead:1") == ("queued", -1)
        # Each of MAX_DELIVERIES workers took it and died (its lease long gone).
        for _ in range(MAX_DELIVERIES):
            await client.xclaim(keys.runs, GROUP, "dead", 0, [claimed.entry_id])
        await client.xclaim(keys.runs, GROUP, "dead", 0, [claimed.entry_id], idle=LEASE_MS * 2)
        async with asyncio.timeout(10):
            await worker.run()  # takes it, fails it, then idles out
        meta = await client.hgetall(keys.meta(sid))
        assert (meta[b"state"], meta[b"code"]) == (b"failed", b"failed")
        assert meta[b"message"].startswith(b"its workers stopped")
        assert (await queue.stats())["running"] == 0
    finally:
        await client.aclose()
