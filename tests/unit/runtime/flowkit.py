"""Helpers shared by the runtime tests (importable: pytest puts this folder on sys.path)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from icefloe import Flow, StreamChunk, StreamError, Subscription

#: the ``make_flow`` fixture of conftest.py: create(...), run, stopped after the test
MakeFlow = Callable[..., Flow]


async def until(predicate: Callable[[], bool], *, spins: int = 10_000) -> None:
    """Yield to the loop until ``predicate()`` holds; fail after ``spins`` turns."""
    for _ in range(spins):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def read_all(sub: Subscription) -> tuple[list[StreamChunk], StreamError | None]:
    """Every chunk of ``sub`` and the StreamError that ended it, if any."""
    chunks: list[StreamChunk] = []
    while True:
        try:
            chunk = await anext(sub)
        except StopAsyncIteration:
            return chunks, None
        except StreamError as exc:
            return chunks, exc
        chunks.append(chunk)
