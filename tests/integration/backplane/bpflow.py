"""The flow the backplane tests serve: ``icefloe serve bpflow:build``.

A start's payload says what the run produces: ``n`` chunks of ``size``
bytes of text after ``delay_ms``, a pause of ``pause_ms`` every ``every`` chunks (to keep a
stream running while readers attach elsewhere), then the ``done`` chunk.
"""

from __future__ import annotations

import asyncio
from typing import Any

from icefloe import Context, Message, Node, create
from icefloe.runtime.flow import Flow

__all__ = ["build"]


async def produce(msg: Message, ctx: Context) -> None:
    spec: dict[str, Any] = msg.payload or {}
    n = int(spec.get("n", 10))
    text = "x" * int(spec.get("size", 8))
    every = max(1, int(spec.get("every", 1)))
    pause = float(spec.get("pause_ms", 0)) / 1000
    # Time for readers on other gateways to attach before the first chunk.
    await asyncio.sleep(float(spec.get("delay_ms", 0)) / 1000)
    for i in range(n):
        await ctx.emit_chunk(parent=msg, text=text)
        if pause and (i + 1) % every == 0:
            await asyncio.sleep(pause)
    await ctx.emit_chunk(parent=msg, text="", done=True)


def build() -> Flow:
    return create(Node(produce, name="produce").to())
