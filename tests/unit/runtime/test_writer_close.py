"""``flow.stop()`` ends even when the store's client turns the cancel of an
append into another error (redis-py may, when a cancel lands mid-command):
the store writer stops on its own flag, not only on the cancel (issue 12:
a draining worker stops its flow with appends in flight)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from icefloe import Context, Headers, Message, Node, NodePolicy, create
from icefloe.runtime import durable
from icefloe.store import Checkpoint, MemoryStore, StoredChunk


class CancelSwallowingStore(MemoryStore):
    """Appends that hang until cancelled, then fail with a connection error."""

    def __init__(self) -> None:
        super().__init__()
        self.appending = asyncio.Event()

    async def append(
        self,
        stream_id: str,
        chunks: Sequence[StoredChunk],
        *,
        checkpoint: Checkpoint | None = None,
    ) -> int:
        self.appending.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ConnectionError("connection lost mid-command") from None
        raise AssertionError("unreachable")


async def produce(msg: Message, ctx: Context) -> None:
    for i in range(1000):
        await ctx.emit_chunk(parent=msg, text=f"{i}")


async def test_stop_ends_when_the_cancel_of_an_append_comes_out_as_another_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(durable, "CLOSE_FLUSH_S", 0.2)  # the append never returns
    store = CancelSwallowingStore()
    node = Node(produce, name="produce", policy=NodePolicy(reliability="exactly_once"))
    flow = create(node.to(), store=store)
    flow.run()
    await flow.store_ready()
    await flow.start(Message(payload=None, headers=Headers(tenant="acme")))
    async with asyncio.timeout(5):
        await store.appending.wait()
        await flow.stop()
