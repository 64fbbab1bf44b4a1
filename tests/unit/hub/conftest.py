"""Fixtures shared by the hub tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from icefloe.hub import Hub


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    """A hub with default limits, closed after the test."""
    async with Hub() as h:
        yield h
