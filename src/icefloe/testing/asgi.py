"""An in-memory HTTP client for an ASGI app that *streams* response bodies.

httpx's own ``ASGITransport`` runs the app to the end and hands back the
whole body, so an SSE stream that never ends never returns, and a test
cannot see the first event before the last. :class:`StreamingASGITransport`
returns the response as soon as the app sends its start, and yields each
body message as the app sends it. Closing the response (leaving
``client.stream(...)``) tells the app the client went away
(``http.disconnect``), as a real server would, and waits for the app to
finish.

Needs ``httpx`` (a dependency of the ``server`` extra); ``icefloe.testing``
imports this module only when it is used.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final
from urllib.parse import unquote

import httpx

from icefloe.testing.asgi_app import CLOSE_GRACE_S, AppError, ASGIApp, Message, Scope, lifespan

__all__ = [
    "BODY_QUEUE",
    "CLOSE_GRACE_S",
    "ASGIApp",
    "AppError",
    "StreamingASGITransport",
    "client",
    "lifespan",
]

#: body messages held between the app and a client that has not read them;
#: past it the app's ``send`` waits (as on a socket whose buffers are full)
BODY_QUEUE: Final = 16


class _Exchange:
    """One request: the app's task, and the response it sends, as it sends it."""

    def __init__(self, app: ASGIApp, scope: Scope, body: bytes) -> None:
        self._body: bytes | None = body
        self.started: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue(BODY_QUEUE)
        self._gone = asyncio.Event()
        self.task = asyncio.ensure_future(app(scope, self._receive, self._send))
        self.task.add_done_callback(self._app_ended)

    async def _receive(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        if self._gone.is_set():
            raise OSError("the client closed the response")  # ASGI spec 2.4
        kind = message.get("type")
        if kind == "http.response.start":
            if self.started.done():
                raise AppError("the app sent http.response.start twice")
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
            self.started.set_result((int(message["status"]), headers))
        elif kind == "http.response.body":
            if not self.started.done():
                raise AppError("the app sent a body before http.response.start")
            body = bytes(message.get("body", b""))
            if body:
                await self._chunks.put(body)
            if not message.get("more_body", False):
                await self._chunks.put(None)
        else:
            raise AppError(f"unexpected ASGI message {kind!r}")

    def _app_ended(self, task: asyncio.Task[None]) -> None:
        if not self.started.done():
            exc = None if task.cancelled() else task.exception()
            self.started.set_exception(
                exc or AppError("the app ended without sending http.response.start")
            )
        # Wake a reader waiting for more: the body ends with the app.
        with contextlib.suppress(asyncio.QueueFull):
            self._chunks.put_nowait(None)

    async def body(self) -> AsyncIterator[bytes]:
        while not (self._chunks.empty() and self.task.done()):
            chunk = await self._chunks.get()
            if chunk is None:
                break
            yield chunk
        task = self.task
        if task.done() and not task.cancelled() and (failure := task.exception()) is not None:
            raise failure

    async def close(self) -> None:
        """The client is gone: ``http.disconnect``, then a grace period, then cancel."""
        self._gone.set()
        # Unblock an app waiting to hand us a body message.
        while not self._chunks.empty():
            self._chunks.get_nowait()
        if not self.task.done():
            done, _ = await asyncio.wait({self.task}, timeout=CLOSE_GRACE_S)
            if not done:
                self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class _Body(httpx.AsyncByteStream):
    def __init__(self, exchange: _Exchange) -> None:
        self._exchange = exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._exchange.body():
            yield chunk

    async def aclose(self) -> None:
        await self._exchange.close()


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """An httpx transport that calls an ASGI app in this loop and streams its responses.

    Each request runs the app in a task of its own. The response returns
    when the app sends ``http.response.start``; its body yields each
    ``http.response.body`` message as it is sent (at most :data:`BODY_QUEUE`
    held while the client does not read: then the app waits). Closing the
    response sends ``http.disconnect`` and waits for the app, at most
    :data:`CLOSE_GRACE_S`, then cancels it: no task outlives the response.
    An exception in the app before the response starts is raised from the
    request, as a real server's 500 would hide it; after, from the body.
    The app's lifespan is not run here: see :func:`client` and :func:`lifespan`.

    :param client: the ``(host, port)`` the app sees as its peer.
    """

    def __init__(self, app: ASGIApp, *, client: tuple[str, int] = ("127.0.0.1", 50000)) -> None:
        self.app = app
        self._client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        url = request.url
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": unquote(url.path),
            "raw_path": url.raw_path.split(b"?", 1)[0],
            "query_string": url.query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "client": self._client,
            "server": (url.host, url.port or (443 if url.scheme == "https" else 80)),
            "extensions": {},
            "state": {},
        }
        exchange = _Exchange(self.app, scope, body)
        try:
            status, headers = await exchange.started
        except BaseException:
            await exchange.close()
            raise
        return httpx.Response(status, headers=headers, stream=_Body(exchange), request=request)


@contextlib.asynccontextmanager
async def client(
    app: ASGIApp, *, base_url: str = "http://icefloe.test", run_lifespan: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` on ``app`` through :class:`StreamingASGITransport`,
    with the app's lifespan run around it (unless ``run_lifespan`` is False)."""
    async with contextlib.AsyncExitStack() as stack:
        if run_lifespan:
            await stack.enter_async_context(lifespan(app))
        http = httpx.AsyncClient(transport=StreamingASGITransport(app), base_url=base_url)
        await stack.enter_async_context(http)
        yield http
