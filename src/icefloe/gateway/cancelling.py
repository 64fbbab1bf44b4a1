"""Stopping a task for sure: cancel it, and again while it runs on.

A client library may swallow a cancellation (a broker client turning it into
a connection error that a connector retries: seen with redis-py under a
bridge route), and the task then waits on; the next cancellation lands
elsewhere. Routes and their intake stop their tasks through
:func:`cancel_and_wait`, so a stopped route leaves no task behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

__all__ = ["RECANCEL_S", "cancel_and_wait"]

#: seconds a cancelled task may run on before it is cancelled again
RECANCEL_S: Final = 0.5


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for its end, cancelling it again every
    :data:`RECANCEL_S` while it runs on. Its own cancellation is not raised;
    another exception it ended with is.

    Cancelled meanwhile itself (a route stopping while its intake stops), it
    still waits for ``task`` to end, then raises its own cancellation: no
    task is left behind.
    """
    interrupted = False
    task.cancel()
    while not task.done():
        try:
            await asyncio.wait({task}, timeout=RECANCEL_S)
        except asyncio.CancelledError:
            interrupted = True
        task.cancel()
    if interrupted:
        raise asyncio.CancelledError
    with contextlib.suppress(asyncio.CancelledError):
        await task
