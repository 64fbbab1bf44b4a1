"""Fixtures of the runtime perf tests: the runtime unit tests' ``make_flow`` and ``flowkit``.

``flowkit`` stays one module, in tests/unit/runtime: this folder's tests import
it from there, so the path is added here (pytest adds it itself only when it
collects the unit tests too). ``make_flow`` is a copy of the fixture in
tests/unit/runtime/conftest.py (conftest modules cannot import each other).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from icefloe import Flow, create
from icefloe.runtime.node import Adjacency

_UNIT_RUNTIME = str(Path(__file__).resolve().parents[2] / "unit" / "runtime")
if _UNIT_RUNTIME not in sys.path:
    sys.path.append(_UNIT_RUNTIME)


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
