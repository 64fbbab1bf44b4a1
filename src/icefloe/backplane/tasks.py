"""How an engine stops its tasks when it closes.

:func:`stop` cancels every task an engine runs (its loops, its producers,
its fetch tasks) and waits for them at most
:data:`~icefloe.backplane.limits.CLOSE_S`: a task stuck in an engine call
must not hold a shutdown, and what is still running then ends with the
connection the engine closes next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

from icefloe.backplane.limits import CLOSE_S

__all__ = ["stop"]


async def stop(tasks: Collection[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks``, then wait for them (at most ``CLOSE_S``)."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=CLOSE_S)
