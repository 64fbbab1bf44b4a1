"""What the in-memory clients share: ASGI type aliases, the app's lifespan,
and how long a closed connection waits for the app. Needs only the core install."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, Final

from icefloe.exceptions import IcefloeError

__all__ = [
    "CLOSE_GRACE_S",
    "ASGIApp",
    "AppError",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "lifespan",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: seconds (loop time) a connection closed by the test gives the app to end on
#: its own after the disconnect message, before its task is cancelled
CLOSE_GRACE_S: Final = 1.0


class AppError(IcefloeError):
    """The app broke the ASGI protocol (no response start, a bad message)."""


@contextlib.asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Run ``app``'s ASGI lifespan: startup on entering, shutdown on leaving.

    :raises AppError: the app reported ``lifespan.startup.failed`` or
        ``lifespan.shutdown.failed`` (with its message).
    """
    # One message each way at a time: startup, then shutdown.
    inbox: asyncio.Queue[Message] = asyncio.Queue(2)
    outbox: asyncio.Queue[Message] = asyncio.Queue(2)
    scope: Scope = {
        "type": "lifespan",
        "asgi": {"version": "3.0", "spec_version": "2.0"},
        "state": {},
    }
    task = asyncio.ensure_future(app(scope, inbox.get, outbox.put))

    async def step(send: str, expect: str) -> None:
        await inbox.put({"type": f"lifespan.{send}"})
        getter = asyncio.ensure_future(outbox.get())
        await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            task.result()  # the app's own error, if it raised
            raise AppError(f"the app's lifespan ended during {send}")
        reply = getter.result()
        if reply["type"] != f"lifespan.{expect}":
            raise AppError(f"lifespan {send} failed: {reply.get('message', reply['type'])}")

    try:
        await step("startup", "startup.complete")
        try:
            yield
        finally:
            await step("shutdown", "shutdown.complete")
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
