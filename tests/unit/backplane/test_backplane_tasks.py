"""An engine's tasks stopped on close."""

from __future__ import annotations

import asyncio

from icefloe.backplane.tasks import stop


async def test_stop_cancels_and_waits_for_every_task() -> None:
    tasks = [asyncio.ensure_future(asyncio.sleep(60)) for _ in range(3)]
    await stop(tasks)
    assert all(task.cancelled() for task in tasks)
    await stop([])  # nothing to stop
