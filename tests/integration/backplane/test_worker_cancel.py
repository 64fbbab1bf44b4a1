"""A cancel that reaches a worker before it produces the stream (issue 12).

A gateway cancels a started stream through the control stream, which each
process's engine reads for the streams it produces; a worker produces a
stream only once its run has started. A request made between the worker
taking the start and that moment (the gateway saw the start taken, so the
queued start was not cancelled in the queue) used to be dropped, and the
run streamed to its end. The worker in this process, on the machine's
Redis, plays the worker; a :class:`RedisBackplane` plays the gateway.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
from cluster import REDIS_URL
from wflow import exactly_once

from icefloe.backplane.engine import RedisBackplane
from icefloe.backplane.keys import Keys
from icefloe.backplane.runqueue import RunQueue
from icefloe.core.messages import Headers, Message
from icefloe.store.memory import MemoryStore
from icefloe.store.records import encode_message
from icefloe.store.types import RunRecord
from icefloe.transport.backplane_worker import CANCELLED_UNRUN, Worker

pytestmark = pytest.mark.timeout(30)


class GatedStore(MemoryStore):
    """A memory store whose run creation waits for the test: the worker is
    then inside its run's start, having taken the entry."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def create_run(self, run: RunRecord, **kwargs: Any) -> str:
        self.entered.set()
        await self.gate.wait()
        return await super().create_run(run, **kwargs)


@pytest.fixture
async def gateway() -> AsyncIterator[RedisBackplane]:
    """The engine of a gateway (it produces nothing) on a key prefix of this
    test's own, whose keys are deleted after."""
    engine = RedisBackplane(
        f"{REDIS_URL}?prefix=icefloe:test:{uuid.uuid4().hex[:10]}:",
        history=64,
        window=64,
        on_cancel=lambda _sid: None,
    )
    await engine.open()
    yield engine
    async for key in engine.client.scan_iter(match=f"{engine.keys.prefix}*", count=1000):
        await engine.client.delete(key)
    await engine.aclose()


async def _enqueue(queue: RunQueue, payload: object) -> str:
    message = Message(payload=payload, headers=Headers(tenant="t1"))
    await queue.enqueue(message.trace_id, "t1", encode_message(message))
    return message.trace_id


async def _meta(client: redis.asyncio.Redis, keys: Keys, sid: str) -> dict[str, str]:
    raw: dict[Any, Any] = await client.hgetall(keys.meta(sid))
    return {k.decode(): v.decode() for k, v in raw.items()}


async def _ended(client: redis.asyncio.Redis, keys: Keys, sid: str) -> dict[str, str]:
    while (meta := await _meta(client, keys, sid)).get("state") in ("queued", "running"):
        await asyncio.sleep(0.02)  # polling the meta the worker writes
    return meta


async def test_a_cancel_requested_before_the_start_is_taken_ends_it_unrun(
    gateway: RedisBackplane,
) -> None:
    """The gateway found the start queued and sent the request, then lost the
    race to cancel it in the queue: the worker ends it without running it."""
    client, keys = gateway.client, gateway.keys
    queue = RunQueue(client, keys)
    await queue.ensure_group()
    sid = await _enqueue(queue, {"n": 20, "pace_ms": 10})
    await gateway.cancel(sid)
    flow = exactly_once()
    flow.use_store(MemoryStore())
    worker = Worker(flow, f"{REDIS_URL}?prefix={keys.prefix}", exit_when_idle_s=0.5)
    async with asyncio.timeout(15):
        await worker.run()  # takes it, ends it, then idles out
    meta = await _meta(client, keys, sid)
    assert (meta["state"], meta.get("code"), meta.get("message")) == (
        "cancelled",
        "cancelled",
        CANCELLED_UNRUN,
    )
    assert meta["last_seq"] == "-1"  # the node never ran
    assert await client.xlen(keys.log(sid)) == 1  # the terminal alone
    assert (await queue.stats())["running"] == 0


async def test_a_cancel_requested_while_the_run_starts_reaches_it(
    gateway: RedisBackplane,
) -> None:
    """The request comes once the worker owns the stream and before it
    produces it: the run ends ``cancelled``, not ``done``."""
    client, keys = gateway.client, gateway.keys
    queue = RunQueue(client, keys)
    await queue.ensure_group()
    flow = exactly_once()
    store = GatedStore()
    flow.use_store(store)
    worker = Worker(flow, f"{REDIS_URL}?prefix={keys.prefix}", drain_timeout_s=5)
    running = asyncio.ensure_future(worker.run())
    try:
        sid = await _enqueue(queue, {"n": 20, "pace_ms": 10})
        async with asyncio.timeout(15):
            await store.entered.wait()  # taken, owned, and inside the run's start
            assert (await _meta(client, keys, sid))["state"] == "running"
            await gateway.cancel(sid)  # what DELETE /v1/streams/{id} does now
            assert not await queue.cancel_queued(sid)
            # The worker's engine reads the request at once and finds no
            # stream of its own to hand it to: let it, before the run starts.
            await asyncio.sleep(0.3)
            store.gate.set()
            meta = await _ended(client, keys, sid)
        assert (meta["state"], meta.get("code")) == ("cancelled", "cancelled")
    finally:
        store.gate.set()
        worker.drain()
        await running
