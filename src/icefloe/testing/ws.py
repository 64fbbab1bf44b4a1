"""An in-memory WebSocket client for an ASGI app: ``websocket_connect(app, "/v1/ws")``.

It speaks the ASGI WebSocket messages directly, with no frames and no socket.
A handshake answered by ``websocket.close`` raises :class:`WebSocketDenied`.
Text and bytes messages then go both ways through two bounded queues, so a
side that does not read makes the other side's send wait, as a socket's full
buffers would. Leaving the context (or :meth:`WebSocketSession.close`) sends
``websocket.disconnect`` and waits for the app, then cancels it.

It needs nothing beyond the core install.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final
from urllib.parse import quote

from icefloe.exceptions import IcefloeError
from icefloe.testing.asgi_app import CLOSE_GRACE_S, AppError, ASGIApp, Message, Scope

__all__ = [
    "WS_QUEUE",
    "WebSocketClosed",
    "WebSocketDenied",
    "WebSocketSession",
    "websocket_connect",
]

#: messages held each way between the app and the test; past it, the sender waits
WS_QUEUE: Final = 64
#: the close code a test sees when the app ended without closing (RFC 6455: abnormal)
ABNORMAL: Final = 1006


class WebSocketClosed(IcefloeError):
    """The app closed the connection (or ended); ``code`` and ``reason`` are its close."""

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"the app closed the WebSocket: {code} {reason}".rstrip())


class WebSocketDenied(WebSocketClosed):
    """The app closed the connection before accepting it."""


class WebSocketSession:
    """One in-memory connection, from the test's side."""

    def __init__(self, app: ASGIApp, scope: Scope) -> None:
        self._to_app: asyncio.Queue[Message] = asyncio.Queue(WS_QUEUE)
        self._from_app: asyncio.Queue[Message] = asyncio.Queue(WS_QUEUE)
        self._to_app.put_nowait({"type": "websocket.connect"})
        self._gone = False  # the test closed its side
        #: the subprotocol the app accepted (None: none)
        self.subprotocol: str | None = None
        #: the app's close, once it closed: (code, reason)
        self.closed: tuple[int, str] | None = None
        self.task = asyncio.ensure_future(app(scope, self._to_app.get, self._send))
        self.task.add_done_callback(self._app_ended)

    async def _send(self, message: Message) -> None:
        if self._gone:
            raise OSError("the client closed the WebSocket")
        if self.closed is not None:
            raise AppError(f"the app sent {message.get('type')!r} after its close")
        kind = message.get("type")
        if kind not in ("websocket.accept", "websocket.send", "websocket.close"):
            raise AppError(f"unexpected ASGI message {kind!r}")
        if kind == "websocket.close":
            self.closed = (int(message.get("code", 1000)), str(message.get("reason") or ""))
        await self._from_app.put(message)

    def _app_ended(self, task: asyncio.Task[None]) -> None:
        # Wake a test waiting to receive: nothing more will come.
        with contextlib.suppress(asyncio.QueueFull):
            self._from_app.put_nowait({"type": "app.ended"})

    async def handshake(self) -> None:
        """Wait for the app's answer to the connect (``websocket_connect`` calls it).

        :raises WebSocketDenied: the app closed, or ended, instead of accepting.
        """
        message = await self._from_app.get()
        kind = message["type"]
        if kind == "websocket.accept":
            self.subprotocol = message.get("subprotocol")
            return
        if kind == "websocket.close":
            raise WebSocketDenied(*self.closed or (1000, ""))
        self._raise_app_failure()
        raise WebSocketDenied(ABNORMAL, "the app ended without accepting")

    def _raise_app_failure(self) -> None:
        task = self.task
        if task.done() and not task.cancelled() and (failure := task.exception()) is not None:
            raise failure

    async def send_text(self, text: str) -> None:
        """Send a text message (the app's ``receive`` gets ``websocket.receive``)."""
        await self._to_app.put({"type": "websocket.receive", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary message."""
        await self._to_app.put({"type": "websocket.receive", "bytes": data})

    async def send_json(self, value: Any) -> None:
        """Send ``value`` as JSON text."""
        await self.send_text(json.dumps(value))

    async def receive(self) -> str | bytes:
        """The next message the app sent, text or bytes.

        :raises WebSocketClosed: the app closed (its code and reason), or
            ended without closing (1006).
        :raises Exception: the app's own exception, if it raised.
        """
        if self.closed is not None and self._from_app.empty():
            raise WebSocketClosed(*self.closed)
        message = await self._from_app.get()
        kind = message["type"]
        if kind == "websocket.send":
            text = message.get("text")
            return text if text is not None else bytes(message.get("bytes") or b"")
        if kind == "websocket.close":
            raise WebSocketClosed(*self.closed or (1000, ""))
        self._raise_app_failure()
        raise WebSocketClosed(ABNORMAL, "the app ended without closing")

    async def receive_json(self) -> Any:
        """The next message, decoded from JSON."""
        return json.loads(await self.receive())

    async def close(self, code: int = 1000) -> None:
        """Close from the test's side: ``websocket.disconnect`` with ``code``,
        then at most :data:`CLOSE_GRACE_S` for the app to end; then it is cancelled."""
        if not self._gone:
            self._gone = True
            while not self._from_app.empty():  # unblock an app waiting to send
                self._from_app.get_nowait()
            with contextlib.suppress(asyncio.QueueFull):
                self._to_app.put_nowait({"type": "websocket.disconnect", "code": code})
        if not self.task.done():
            done, _ = await asyncio.wait({self.task}, timeout=CLOSE_GRACE_S)
            if not done:
                self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@contextlib.asynccontextmanager
async def websocket_connect(
    app: ASGIApp,
    path: str = "/v1/ws",
    *,
    subprotocols: Sequence[str] = (),
    headers: Sequence[tuple[str, str]] = (),
    query: str = "",
    client: tuple[str, int] = ("127.0.0.1", 50000),
) -> AsyncIterator[WebSocketSession]:
    """Connect to ``app`` at ``path`` in memory; yields the open session.

    Run the app's lifespan around it yourself (:func:`icefloe.testing.asgi.lifespan`,
    or ``Harness.websocket``).

    :raises WebSocketDenied: the app closed instead of accepting.
    """
    scope: Scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": path,
        "raw_path": quote(path).encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "client": client,
        "server": ("icefloe.test", 80),
        "subprotocols": list(subprotocols),
        "extensions": {},
        "state": {},
    }
    session = WebSocketSession(app, scope)
    try:
        await session.handshake()
        yield session
    finally:
        await session.close()
