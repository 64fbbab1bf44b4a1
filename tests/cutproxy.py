"""A TCP proxy in front of a test server whose connections a test can cut.

A network cut as the browser sees it: :meth:`CutProxy.cut` aborts every
connection open through the proxy at once (both sides, no close frame), while
new connections go through as before. Host and Origin pass unchanged, so the
server's same-origin checks hold for a page loaded through the proxy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["CutProxy", "cut_proxy"]


class CutProxy:
    """Forwards 127.0.0.1:<port> to ``target``; see :func:`cut_proxy`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.url = ""
        #: connections accepted so far
        self.accepted = 0
        #: connections aborted by cut()
        self.cuts = 0
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        pair = {writer, up_writer}
        self._open |= pair
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._open -= pair
            for w in pair:
                w.close()

    def cut(self) -> int:
        """Abort every open connection (RST, no goodbye); returns how many."""
        writers = list(self._open)
        for w in writers:
            w.transport.abort()
        self.cuts += len(writers) // 2
        return len(writers) // 2


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ConnectionError):
        pass
    finally:
        if not writer.is_closing():
            writer.close()


@asynccontextmanager
async def cut_proxy(url: str) -> AsyncIterator[CutProxy]:
    """A :class:`CutProxy` in front of the server at ``url`` (``http://host:port``)."""
    host, _, port = url.removeprefix("http://").partition(":")
    proxy = CutProxy(host, int(port))
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    proxy.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield proxy
    finally:
        server.close()
        proxy.cut()
        await server.wait_closed()
