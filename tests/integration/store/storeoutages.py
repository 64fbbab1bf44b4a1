"""What a network store does when its server is not there, checked on any of them.

``store_at(port, timeout_s)`` makes an unopened store whose server is
127.0.0.1:``port``: a closed port (nothing listens) or a server that accepts
and never answers (:func:`netservers.silent_server`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from netservers import closed_port, silent_server

from icefloe.store import Store, StoreUnavailable

StoreAt = Callable[[int, float], Store]


async def no_server_is_store_unavailable(store_at: StoreAt) -> None:
    """Open fails with StoreUnavailable, later calls say the store is not open, close works."""
    store = store_at(closed_port(), 2.0)
    with pytest.raises(StoreUnavailable, match="connect failed"):
        await store.open()
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.get_run("s")
    await store.close()


async def a_silent_server_times_out(store_at: StoreAt) -> None:
    """Open gives up on a server that never answers, within a few of its timeouts."""
    async with silent_server() as port, asyncio.timeout(10):
        store = store_at(port, 0.3)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.open()
        assert time.monotonic() - started < 5
