"""Fixtures shared by the runtime tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from icefloe import Flow, create
from icefloe.runtime.node import Adjacency


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
