"""Quality of service in one flow: a tenant's bandwidth budget, and priority.

Run it with ``python examples/qos.py`` (about 3 seconds). It shows:

1. ``Limits(tenant_bytes_per_s=...)``: every tenant gets its own bytes/s.
   Two streams of one tenant share that tenant's budget, and take twice as
   long as one stream of another tenant, which has a budget of its own.
   The producers wait (backpressure); nothing is dropped.
2. ``Headers.priority``: with one worker busy with queued low-priority runs,
   a high-priority run is served next, ahead of the queue.

See docs/qos.md for every knob and what happens at each limit.
"""

from __future__ import annotations

import asyncio
import time

from icefloe import Context, Flow, Headers, Limits, Message, Node, NodePolicy, create

TOKEN = "x" * 100  # 100-byte chunks
TOKENS = 100  # 10 KB per stream
TENANT_RATE = 10_000  # bytes/s of each tenant


async def tokens(msg: Message, ctx: Context) -> None:
    for _ in range(TOKENS):
        await ctx.emit_chunk(parent=msg, text=TOKEN)
    await ctx.emit_chunk(parent=msg, text="", done=True)


async def read(flow: Flow, tenant: str, priority: int = 0) -> float:
    """Seconds from start to the last chunk of one stream."""
    started = time.perf_counter()
    message = Message(payload=None, headers=Headers(tenant=tenant, priority=priority))
    async for _chunk in flow.stream(message):
        pass
    return time.perf_counter() - started


async def bandwidth() -> None:
    limits = Limits(tenant_bytes_per_s=TENANT_RATE)
    node = Node(tokens, name="tokens", policy=NodePolicy(max_concurrency=8))
    async with create(node.to(), limits=limits) as flow:
        pair = [read(flow, "acme"), read(flow, "acme")]
        *shared, alone = await asyncio.gather(*pair, read(flow, "globex"))
        # Each stream is 10 KB: two sharing 10 KB/s take about 2 s, one alone about 1 s.
        print(f"acme, 2 streams sharing {TENANT_RATE} B/s: {max(shared):.2f} s")
        print(f"globex, 1 stream with its own budget: {alone:.2f} s")
        budgets = flow.stats().budgets
        if budgets is not None:
            for tenant in budgets.tenants:
                print(f"  {tenant.tenant}: waited {tenant.throttled_s:.2f} s on its bytes/s budget")


async def slow(msg: Message, ctx: Context) -> None:
    await asyncio.sleep(0.05)  # one worker, 50 ms a run: a queue builds up
    await ctx.emit_chunk(parent=msg, text=str(msg.headers.priority), done=True)


async def priority() -> None:
    node = Node(slow, name="slow", policy=NodePolicy(max_concurrency=1))
    async with create(node.to()) as flow:
        low = [asyncio.ensure_future(read(flow, "t", priority=0)) for _ in range(10)]
        await asyncio.sleep(0.01)  # let the low-priority runs queue up first
        high = await read(flow, "t", priority=5)
        lows = await asyncio.gather(*low)
        print(f"high priority behind 10 queued low ones: served in {high:.2f} s")
        print(f"low priority runs: served in {min(lows):.2f}..{max(lows):.2f} s")


async def main() -> None:
    await bandwidth()
    await priority()


if __name__ == "__main__":
    asyncio.run(main())
