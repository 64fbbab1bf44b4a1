"""A durable flow: an ``exactly_once`` node that survives a crash of its server.

Run it with ``python examples/durable_flow.py``: it starts a run on a SQLite
store, stops the flow in the middle (as a crash or a deploy would), starts a
second flow on the same file, and reads the whole stream back: every seq
exactly once, the first part from the store, the rest produced by the resumed
node. Serve it with ``icefloe serve durable_flow:build --store sqlite:///runs.db``
(from this directory) and kill the server: the run goes on after a restart.

The node checkpoints its position every ``CHECKPOINT_EVERY`` chunks. After a
restart it is called again with the start message, ``ctx.restored_state``
(the last checkpoint) and ``ctx.resumed_from`` (the last stored seq). It
replays from the checkpoint; the seqs the store already holds are dropped
(the stored chunk wins), so readers see no duplicate and no gap.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from icefloe import Context, Flow, Headers, Message, Node, NodePolicy, create
from icefloe.store import Store, open_store

#: checkpoint after this many chunks (a resumed node replays at most this many)
CHECKPOINT_EVERY = 4
#: seconds between chunks (a stand-in for a model's pace)
PACE_S = 0.005


def text_of(i: int) -> str:
    """The text of seq ``i``: deterministic, so a replay emits the same."""
    return f"line {i}\n"


async def lines(msg: Message, ctx: Context) -> None:
    """payload = n: emit ``text_of(0)`` .. ``text_of(n-1)``, then done."""
    pos = 0 if ctx.restored_state is None else int(ctx.restored_state["pos"])
    for i in range(pos, int(msg.payload)):
        await ctx.emit_chunk(parent=msg, text=text_of(i))
        if (i + 1) % CHECKPOINT_EVERY == 0 and ctx.node.policy.reliability == "exactly_once":
            await ctx.checkpoint({"pos": i + 1})  # only exactly_once runs keep checkpoints
        await asyncio.sleep(PACE_S)
    await ctx.emit_chunk(parent=msg, text="", done=True)


def build(store: Store | None = None, level: str = "exactly_once") -> Flow:
    """The flow (``icefloe serve durable_flow:build --store URL`` gives it its store)."""
    node = Node(lines, name="lines", policy=NodePolicy(reliability=level))
    return create(node.to(), store=store)


def build_at_least_once() -> Flow:
    """The same node at ``at_least_once``: a restart ends its run ``interrupted``."""
    return build(level="at_least_once")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'runs.db'}"
        flow = build(open_store(url))
        async with flow:
            sid = await flow.start(Message(payload=40, headers=Headers(tenant="demo")))
            reader = flow.subscribe(sid, 0)
            first = [await reader.__anext__() for _ in range(10)]
        print(f"first server: read seqs 0..{first[-1].seq}, then it stopped")
        flow = build(open_store(url))
        async with flow:
            await flow.store_ready()  # opened, and the unfinished run resumed
            store = flow.store
            assert store is not None
            async for _ in flow.subscribe(sid, None):  # follow the resumed run to its end
                pass
            stored = await store.read(sid, 0, 1000)
            stats = flow.stats().durable
        print(f"second server: resumed {stats.resumed if stats else 0} run(s), ", end="")
        print(f"dropped {stats.duplicates_dropped if stats else 0} replayed chunk(s)")
        print(f"stored seqs 0..{stored[-1].seq}, each once: {len(stored) == 41}")
        print("stream complete")


if __name__ == "__main__":
    asyncio.run(main())
