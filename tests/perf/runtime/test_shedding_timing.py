"""Load shedding timed: an overloaded flow refuses new streams, then is normal again in time.

Moved from tests/unit/runtime/test_shedding.py: it overloads the flow by
blocking the loop and asserts how soon it recovers on the wall clock, so it
runs in the perf suite (``-m perf``). Its helpers are the unit test's, imported
from tests/unit/runtime (on sys.path: see conftest.py).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from flowkit import MakeFlow, read_all
from test_shedding import FAST, H, counter, overload

from icefloe import Headers, Message, StreamError
from icefloe.core.congestion import CongestionState
from icefloe.exceptions import ErrorCode

pytestmark = pytest.mark.perf

#: how soon the flow is normal again once the pressure is gone: generous for a
#: loaded machine (was 2 s; the dwell is 0.2 s); a flow that never steps down fails
RECOVERY_S = 5.0


async def test_overloaded_flow_refuses_new_streams_and_recovers(make_flow: MakeFlow) -> None:
    flow = make_flow(counter(100, "exactly_once").to(), congestion=FAST)
    async with asyncio.timeout(20):
        accepted = flow.stream(Message("go", H))
        first = await anext(accepted)  # admitted and running before the load
        await overload(flow)
        with pytest.raises(StreamError) as refused:
            flow.stream(Message("new", Headers(tenant="t", priority=1000)))
        assert refused.value.code is ErrorCode.OVERLOADED
        assert "overloaded" in refused.value.message
        # The accepted exactly_once stream loses nothing.
        rest, error = await read_all(accepted)
        assert error is None
        assert [c.text for c in [first, *rest]] == [*map(str, range(100)), ""]
        # Pressure gone: back to normal within the dwell time plus a few probes.
        started = time.monotonic()
        while flow.congestion is not CongestionState.NORMAL:
            await asyncio.sleep(0.02)
        assert time.monotonic() - started < RECOVERY_S
        chunks, error = await read_all(flow.stream(Message("after", H)))
        assert error is None
        assert len(chunks) == 101
    stats = flow.stats()
    assert stats.streams.refused >= 1
    assert stats.shedding is not None
    assert stats.shedding.refused >= 1  # refused by load shedding, not by a limit
