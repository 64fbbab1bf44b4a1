"""Settling stored runs one at a time (issue 12's workers): a flow with
``recover_at_start = False`` leaves the store's unfinished runs alone until
``recover_run`` settles one; ``abandon`` stops a run with nothing more of it
written to the store."""

from __future__ import annotations

import asyncio

from icefloe import Context, Headers, Message, Node, NodePolicy, create
from icefloe.runtime.flow import Flow
from icefloe.runtime.recovery import RESUMED
from icefloe.store import MemoryStore
from icefloe.store.records import decode_chunk

H = Headers(tenant="acme")


async def lines(msg: Message, ctx: Context) -> None:
    pos = 0 if ctx.restored_state is None else int(ctx.restored_state["pos"])
    for i in range(pos, int(msg.payload)):
        await ctx.emit_chunk(parent=msg, text=f"line {i}")
        await ctx.checkpoint({"pos": i + 1})
        await asyncio.sleep(0.005)
    await ctx.emit_chunk(parent=msg, text="", done=True)


def build(store: MemoryStore) -> Flow:
    node = Node(lines, name="lines", policy=NodePolicy(reliability="exactly_once"))
    return create(node.to(), store=store)


async def _stored(store: MemoryStore, sid: str, count: int) -> None:
    while len(await store.read(sid, 0, 10_000)) < count:
        await asyncio.sleep(0.005)  # polling the store another flow writes


async def test_a_run_is_settled_only_when_asked_and_resumes_where_the_store_left_it() -> None:
    store = MemoryStore()
    first = build(store)
    first.run()
    sid = await first.start(Message(payload=40, headers=H))
    async with asyncio.timeout(5):
        await _stored(store, sid, 10)
    await first.stop()  # a worker handing its runs over: left unfinished
    second = build(store)
    second.recover_at_start = False
    second.run()
    async with asyncio.timeout(5):
        await second.store_ready()
        assert [r.run.stream_id for r in await store.unfinished_runs()] == [sid]
        assert second.brief(sid) is None  # not settled at start
        assert await second.recover_run(sid) == RESUMED
        assert await second.recover_run(sid) is None  # running here now: not unfinished twice
        start = second.held_from(sid)
        assert start is not None
        texts = [c.text async for c in second.subscribe(sid, start)]
        while (await store.get_run(sid)).terminal is None:  # type: ignore[union-attr]
            await asyncio.sleep(0.005)  # the terminal is written after the done chunk
    stored = [decode_chunk(c.record).text for c in await store.read(sid, 0, 10_000)]
    assert stored == [f"line {i}" for i in range(40)] + [""]
    assert texts == stored[start:]
    await second.stop()


async def test_an_abandoned_run_writes_nothing_more_to_the_store() -> None:
    store = MemoryStore()
    flow = build(store)
    flow.run()
    sid = await flow.start(Message(payload=1000, headers=H))
    async with asyncio.timeout(5):
        await _stored(store, sid, 5)
        flow.abandon(sid)
        await asyncio.sleep(0.05)  # what would have been written by now
    run = await store.get_run(sid)
    assert run is not None
    assert run.terminal is None  # another process settles it
    count = len(await store.read(sid, 0, 10_000))
    await asyncio.sleep(0.05)
    assert len(await store.read(sid, 0, 10_000)) == count
    await flow.stop()
