"""A reader joining at the live head wakes a producer parked for room.

How fast 5,000 readers attach is timed in tests/perf/runtime/test_live_head_attach_timing.py.
"""

from __future__ import annotations

import asyncio

from icefloe import Context, Flow, Headers, Message, Node, create


def flood_flow() -> Flow:
    async def flood(msg: Message, ctx: Context) -> None:
        for i in range(100_000):
            await ctx.emit_chunk(parent=msg, text=str(i))

    return create(Node(flood, name="flood").to())


async def parked(flow: Flow, sid: str, last_seq: int) -> None:
    """Wait until the stream stopped at ``last_seq`` (its producer parked)."""
    while flow.brief(sid).last_seq < last_seq:
        await asyncio.sleep(0.001)


async def test_first_reader_at_the_head_of_an_unread_stream_gets_chunks() -> None:
    flow = flood_flow()
    flow.run()
    try:
        async with asyncio.timeout(10):
            message = Message(payload=None, headers=Headers(tenant="t"))
            sid = await flow.start(message, history=64, window=16)
            first = flow.subscribe(sid, 0, lag_limit=64)
            for _ in range(10):
                await anext(first)
            first.close()
            await parked(flow, sid, 63)
            late = flow.subscribe(sid, None, lag_limit=64)
            chunk = await anext(late)
            assert chunk.seq >= 64
            late.close()
    finally:
        await flow.stop()


async def test_new_fastest_lag_tolerant_reader_unblocks_the_producer() -> None:
    flow = flood_flow()
    flow.run()
    try:
        async with asyncio.timeout(10):
            message = Message(payload=None, headers=Headers(tenant="t"))
            sid = await flow.start(message, history=0, window=16)
            stalled = flow.subscribe(sid, 0, lag_limit=1000)
            await parked(flow, sid, 15)  # the stalled reader reads nothing
            fresh = flow.subscribe(sid, None, lag_limit=1000)
            seqs = [(await anext(fresh)).seq for _ in range(100)]
            assert seqs == list(range(seqs[0], seqs[0] + 100))
            fresh.close()
            stalled.close()
    finally:
        await flow.stop()


async def test_a_fast_reader_never_lets_the_producer_overrun_a_blocking_one() -> None:
    flow = flood_flow()
    flow.run()
    try:
        async with asyncio.timeout(10):
            message = Message(payload=None, headers=Headers(tenant="t"))
            sid = await flow.start(message, history=1000, window=16)
            first = flow.subscribe(sid, 0, lag_limit=1000)
            for _ in range(100):
                await anext(first)
            await parked(flow, sid, 115)  # the pace reader is at 100: 16 ahead
            # Ahead of the floor (100), behind the head (116): it now holds the pace.
            blocking = flow.subscribe(sid, 110)
            fast = flow.subscribe(sid, None, lag_limit=1000)  # raises the floor to 110
            await parked(flow, sid, 110 + 16 - 1)
            for _ in range(5):
                await asyncio.sleep(0)  # let a wrongly woken producer run on
            assert flow.brief(sid).last_seq == 110 + 16 - 1
            for reader in (first, blocking, fast):
                reader.close()
    finally:
        await flow.stop()
