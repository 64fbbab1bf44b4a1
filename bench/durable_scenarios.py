"""``one_hop`` at ``at_least_once`` and ``exactly_once`` over SQLite (issue 11).

Their "floor" in :mod:`run` is :func:`scenarios.icefloe_one_hop` itself (the
``at_most_once`` run), so the ratio is the durable rate against the
``at_most_once`` rate of the same run. The store is a fresh SQLite file in a
temporary directory; ``exactly_once`` checkpoints every 16 chunks. Opening
the store and recovery are outside the timed region.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from icefloe import Context, Headers, Message, Node, NodePolicy, create
from icefloe.store import open_store
from measure import Sample, throughput_sample

__all__ = ["icefloe_one_hop_at_least_once", "icefloe_one_hop_exactly_once"]

CHECKPOINT_EVERY = 16


def _source(n: int, level: str) -> Node:
    checkpoints = level == "exactly_once"

    async def source(msg: Message, ctx: Context) -> None:
        emit = ctx.emit_chunk
        for i in range(1, n + 1):
            await emit(parent=msg, text="tok")
            if checkpoints and i % CHECKPOINT_EVERY == 0:
                await ctx.checkpoint(i)
        await emit(parent=msg, text="", done=True)

    return Node(source, name="a", policy=NodePolicy(reliability=level))


async def _one_hop(n: int, level: str) -> Sample:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        async with create(_source(n, level).to(), store=store) as flow:
            await flow.store_ready()
            start = time.perf_counter()
            count = 0
            async for _ in flow.stream(Message(payload="go", headers=Headers(tenant="bench"))):
                count += 1
            elapsed = time.perf_counter() - start
    if count != n + 1:
        raise RuntimeError(f"icefloe delivered {count} chunks, expected {n + 1}")
    return throughput_sample(n, elapsed)


async def icefloe_one_hop_at_least_once(n: int) -> Sample:
    """Chunks/s of ``one_hop`` with every chunk stored in SQLite before it is read."""
    return await _one_hop(n, "at_least_once")


async def icefloe_one_hop_exactly_once(n: int) -> Sample:
    """As ``at_least_once``, with a checkpoint every 16 chunks."""
    return await _one_hop(n, "exactly_once")
