"""Hub fan-out beside its raw-asyncio floor (part of ``make bench``).

``hub_fan_out_K``: one publisher sends events to K subscribers of one topic;
deliveries/s = K * events / elapsed. The floor is the least asyncio can do
for the same work: one producer putting the same object into K bounded
``asyncio.Queue``s (awaiting ``put``, so a full queue holds the producer
back) and K consumers draining them. The hub runs its subscribers with the
``block`` overflow policy and the same buffer size, so neither side drops
anything and both apply the same backpressure. Both hand one object per event
to every subscriber and wake a consumer per batch; the hub's extra work is
its own (sizing the payload, the event's offset and time, the topic's
history), which the floor has no reason to do.

``hub_idle_subscriber_bytes``: memory per subscriber that nobody publishes
to (tracemalloc), beside a bare ``asyncio.Queue`` per subscriber.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from functools import partial
from typing import Any

from icefloe.hub import Hub, HubLimits
from measure import DELIVERIES_PER_S, Sample, throughput_sample

__all__ = ["HUB_SUBSCRIBERS", "floor_hub_fan_out", "icefloe_hub_fan_out", "idle_subscriber_bytes"]

#: the subscriber counts compared
HUB_SUBSCRIBERS = (1, 100, 1000)
#: events each subscriber buffers (hub ``buffer``, floor ``maxsize``)
BUFFER = 256
TOPIC = "bench.tokens"
TENANT = "bench"
DONE = "done"


def _events(deliveries: int, subscribers: int) -> int:
    return max(1, deliveries // subscribers)


async def floor_hub_fan_out(subscribers: int, deliveries: int) -> Sample:
    """The same fan-out with bare queues: one object into every queue, in order."""
    n = _events(deliveries, subscribers)
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue(BUFFER) for _ in range(subscribers)]

    async def drain(queue: asyncio.Queue[Any]) -> int:
        get = queue.get
        count = 0
        while (await get()) != DONE:
            count += 1
        return count

    start = time.perf_counter()
    consumers = [asyncio.ensure_future(drain(q)) for q in queues]
    puts = [q.put for q in queues]
    for i in range(n):
        event = {"n": i}
        for put in puts:
            await put(event)
    for put in puts:
        await put(DONE)
    counts = await asyncio.gather(*consumers)
    elapsed = time.perf_counter() - start
    if set(counts) != {n}:
        raise RuntimeError(f"floor delivered {sorted(set(counts))}, expected {n} each")
    return throughput_sample(subscribers * n, elapsed, DELIVERIES_PER_S)


async def icefloe_hub_fan_out(subscribers: int, deliveries: int) -> Sample:
    """``Hub.publish`` to K ``block`` subscribers of one topic, each iterating its events."""
    n = _events(deliveries, subscribers)
    # One tenant, on purpose: no per-tenant cap.
    limits = HubLimits(max_subscribers=max(subscribers, 1000), max_subscribers_per_tenant=None)
    async with Hub(limits) as hub:
        subs = [
            hub.subscribe(TOPIC, tenant=TENANT, buffer=BUFFER, overflow="block")
            for _ in range(subscribers)
        ]

        async def drain(sub: Any) -> int:
            count = 0
            async for event in sub:
                if event.data == DONE:
                    return count
                count += 1
            return count

        start = time.perf_counter()
        consumers = [asyncio.ensure_future(drain(s)) for s in subs]
        publish = hub.publish
        for i in range(n):
            await publish(TOPIC, {"n": i}, tenant=TENANT)
        await publish(TOPIC, DONE, tenant=TENANT)
        counts = await asyncio.gather(*consumers)
        elapsed = time.perf_counter() - start
    if set(counts) != {n}:
        raise RuntimeError(f"hub delivered {sorted(set(counts))}, expected {n} each")
    return throughput_sample(subscribers * n, elapsed, DELIVERIES_PER_S)


def hub_scenarios() -> list[tuple[str, Any, Any]]:
    """(name, floor, icefloe) per subscriber count, each taking the deliveries to make."""
    return [
        (f"hub_fan_out_{k}", partial(floor_hub_fan_out, k), partial(icefloe_hub_fan_out, k))
        for k in HUB_SUBSCRIBERS
    ]


async def _allocated(make: Any, count: int) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        held = make(count)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del held
    return (after - before) / count


async def idle_subscriber_bytes(count: int = 1000) -> dict[str, float]:
    """Bytes per idle hub subscriber, beside a bare ``asyncio.Queue`` per subscriber."""
    async with Hub(HubLimits(max_subscribers=count, max_subscribers_per_tenant=None)) as hub:

        def subscribe(k: int) -> list[Any]:
            return [hub.subscribe(TOPIC, tenant=TENANT, buffer=BUFFER) for _ in range(k)]

        hub_bytes = await _allocated(subscribe, count)

    def queues(k: int) -> list[Any]:
        return [asyncio.Queue(BUFFER) for _ in range(k)]

    floor_bytes = await _allocated(queues, count)
    return {
        "hub_idle_subscriber_bytes": round(hub_bytes),
        "floor_idle_queue_bytes": round(floor_bytes),
    }
