"""The flows the worker tests run: ``icefloe worker wflow:exactly_once`` (or
``wflow:at_least_once``).

A start's payload ``{"n": n, "pace_ms": p}``: the node emits ``text_of(i)``
for i in 0..n-1, one every ``p`` ms, then the ``done`` chunk. The
``exactly_once`` node checkpoints its position every 4 chunks and replays
from there when resumed (the seqs the store holds are dropped).
"""

from __future__ import annotations

import asyncio
from typing import Any

from icefloe import Context, Message, Node, NodePolicy, create
from icefloe.runtime.flow import Flow

__all__ = ["at_least_once", "exactly_once", "text_of"]

#: checkpoint after this many chunks
EVERY = 4


def text_of(i: int) -> str:
    """The text of seq ``i``: deterministic, so a replay emits the same."""
    return f"line {i}\n"


async def lines(msg: Message, ctx: Context) -> None:
    spec: dict[str, Any] = msg.payload or {}
    pace = float(spec.get("pace_ms", 0)) / 1000
    pos = 0 if ctx.restored_state is None else int(ctx.restored_state["pos"])
    for i in range(pos, int(spec.get("n", 10))):
        await ctx.emit_chunk(parent=msg, text=text_of(i))
        if (i + 1) % EVERY == 0 and ctx.node.policy.reliability == "exactly_once":
            await ctx.checkpoint({"pos": i + 1})
        await asyncio.sleep(pace)
    await ctx.emit_chunk(parent=msg, text="", done=True)


def _build(level: str) -> Flow:
    return create(Node(lines, name="lines", policy=NodePolicy(reliability=level)).to())


def exactly_once() -> Flow:
    return _build("exactly_once")


def at_least_once() -> Flow:
    return _build("at_least_once")
