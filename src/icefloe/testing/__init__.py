"""Test helpers for icefloe flows: run them in memory, with no server.

* :func:`open`: ``async with icefloe.testing.open(flow) as t``, then
  ``run = await t.start(payload)``; ``await run.chunks()``, ``run.text()``,
  ``run.assert_in_order()``, ``run.send_input(...)``, ``run.cancel()``,
  ``run.terminal``.
* :func:`assert_in_order`: a stream's ordering rules, checked on any list
  of chunks, with a message naming the first chunk that breaks them.
* :class:`FakeClock`: virtual time for the event loop (``asyncio.sleep``,
  timeouts and every loop timer), which jumps ahead when the loop is idle.
* :mod:`icefloe.testing.asgi`: an in-memory httpx client for the HTTP edge
  whose responses stream (SSE events arrive as they are sent). Loaded on
  first use, so ``import icefloe.testing`` needs only the core install.
* :mod:`icefloe.testing.ws`: an in-memory WebSocket session for an ASGI app
  (``/v1/ws``), ``websocket_connect``.

See docs/testing.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from icefloe.testing.asgi_app import AppError, lifespan
from icefloe.testing.clock import FakeClock, VirtualTimeLoop, current_clock
from icefloe.testing.harness import DONE, Harness, Run, open
from icefloe.testing.order import assert_in_order
from icefloe.testing.ws import (
    WebSocketClosed,
    WebSocketDenied,
    WebSocketSession,
    websocket_connect,
)

if TYPE_CHECKING:
    from icefloe.testing.asgi import StreamingASGITransport, client

__all__ = [
    "DONE",
    "AppError",
    "FakeClock",
    "Harness",
    "Run",
    "StreamingASGITransport",
    "VirtualTimeLoop",
    "WebSocketClosed",
    "WebSocketDenied",
    "WebSocketSession",
    "assert_in_order",
    "client",
    "current_clock",
    "lifespan",
    "open",
    "websocket_connect",
]

#: names loaded on first use (they need httpx), from icefloe.testing.asgi
_LAZY = frozenset({"StreamingASGITransport", "client"})


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'icefloe.testing' has no attribute {name!r}")
    from icefloe.testing import asgi

    value = getattr(asgi, name)
    globals()[name] = value
    return value
