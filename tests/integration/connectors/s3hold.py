"""A TCP proxy to an S3 endpoint that holds back the first request matching a pattern.

Put between tansu and its ``moto_server``, it lets a test stop the broker at
an exact point of a produce: after the writes before the matched request
reached the store, and before the matched one did. Everything else is
forwarded as it comes, both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

__all__ = ["HoldingProxy", "holding_proxy"]

#: bytes of a connection's recent upstream traffic searched for the pattern
WINDOW_BYTES = 8192


class HoldingProxy:
    """Forwards ``127.0.0.1:port`` to ``upstream``; swallows the first request matching."""

    def __init__(self, upstream_host: str, upstream_port: int, pattern: bytes) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.pattern = re.compile(pattern)
        #: set once a matching request was held back
        self.held = asyncio.Event()
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _upstream_pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        recent = b""
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                recent = (recent + data)[-WINDOW_BYTES:]
                if not self.held.is_set() and self.pattern.search(recent):
                    self.held.set()
                    # from here this connection goes nowhere: the request
                    # never reaches the store and no answer comes back
                    while await reader.read(65536):
                        pass
                    return
                writer.write(data)
                await writer.drain()
        writer.close()

    def cancel(self) -> None:
        """End every proxied connection."""
        for task in list(self._tasks):
            task.cancel()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.gather(
                self._upstream_pipe(reader, up_writer), self._pipe(up_reader, writer)
            )
        finally:
            self._tasks.discard(task)
            up_writer.close()
            writer.close()


@contextlib.asynccontextmanager
async def holding_proxy(upstream_url: str, pattern: bytes) -> AsyncIterator[HoldingProxy]:
    """Serve a :class:`HoldingProxy` to ``upstream_url`` (``http://host:port``) on a free port."""
    host, port = upstream_url.removeprefix("http://").rsplit(":", 1)
    proxy = HoldingProxy(host, int(port), pattern)
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()
        proxy.cancel()
        await server.wait_closed()
