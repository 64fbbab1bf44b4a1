"""Attaching at the live head stays cheap, timed: 5,000 readers join a parked stream fast.

Moved from tests/unit/runtime/test_live_head_attach.py: it times the joins on
the wall clock, so it runs in the perf suite (``-m perf``). Its helpers are the
unit test's, imported from tests/unit/runtime (on sys.path: see conftest.py).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from test_live_head_attach import flood_flow, parked

from icefloe import Headers, Message

pytestmark = pytest.mark.perf


async def test_attaching_stays_cheap_while_the_producer_is_parked() -> None:
    flow = flood_flow()
    flow.run()
    try:
        async with asyncio.timeout(30):
            message = Message(payload=None, headers=Headers(tenant="t"))
            sid = await flow.start(message, history=0, window=16)
            holder = flow.subscribe(sid, 0)  # blocking, reads nothing: the producer parks
            await parked(flow, sid, 15)
            started = time.perf_counter()
            readers = [flow.subscribe(sid, None, lag_limit=1000) for _ in range(5_000)]
            elapsed = time.perf_counter() - started
            # O(1) each: about 0.005 s here; O(readers) each took about 4 s.
            # Generous for a loaded machine (was 1 s), and still under 4 s.
            assert elapsed < 2.0, elapsed
            assert len(readers) == 5_000
            holder.close()
            # Not closed one by one: a running stream recounts per leaving
            # reader (O(readers) each); stopping the flow ends it first.
    finally:
        await flow.stop()
