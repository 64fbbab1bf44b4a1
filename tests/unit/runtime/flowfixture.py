"""The ``make_flow`` fixture, for the runtime unit tests and the runtime perf tests.

Conftest modules cannot import each other, so the fixture lives here and
both conftest.py files import it (tests/perf/runtime puts this folder on
sys.path first).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from icefloe import Flow, create
from icefloe.runtime.node import Adjacency

__all__ = ["make_flow"]


@pytest.fixture
async def make_flow() -> AsyncIterator[Callable[..., Flow]]:
    """``make_flow(*adjacencies, **kwargs)``: a running flow, stopped after the test."""
    flows: list[Flow] = []

    def factory(*adjacencies: Adjacency, **kwargs: Any) -> Flow:
        flow = create(*adjacencies, **kwargs)
        flow.run()
        flows.append(flow)
        return flow

    yield factory
    async with asyncio.timeout(10):
        for flow in flows:
            await flow.stop()
