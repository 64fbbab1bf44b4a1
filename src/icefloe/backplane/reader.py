"""A local reader of a stream produced by another process.

:class:`RemoteReader` has the reading surface of an in-process
:class:`~icefloe.runtime.subscription.Subscription` that the edges use
(``held``/``peek``/``skip``, ``receive_nowait``, ``wait``, ``interrupt``,
``end_reason``, ``close``), over the chunks its
:class:`~icefloe.backplane.follower.Follower` shares with the process's
other readers of the stream. It is blocking: its position holds the
follower's fetching back (and, reported, the producer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from icefloe.backplane.follower import Follower
from icefloe.core.messages import StreamChunk
from icefloe.exceptions import EndOfStream, StreamError, WouldBlock

__all__ = ["RemoteReader"]


class RemoteReader:
    """Reads one remote stream from ``from_seq``, in seq order."""

    def __init__(
        self, follower: Follower, from_seq: int, on_close: Callable[[RemoteReader], None]
    ) -> None:
        self._follower = follower
        self._pos = from_seq
        self._on_close = on_close
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        follower.readers.add(self)

    @property
    def stream_id(self) -> str:
        return self._follower.stream_id

    @property
    def next_seq(self) -> int:
        """The seq this reader returns next."""
        return self._pos

    def held(self) -> int:
        """Chunks :meth:`receive_nowait` returns now without waiting (an
        overrun reader counts one: its next :meth:`peek` raises)."""
        if self._closed:
            return 0
        follower = self._follower
        if self._pos < follower.base:
            return 1
        return max(0, follower.head - self._pos)

    def peek(self, offset: int = 0) -> StreamChunk:
        """The held chunk ``offset`` places ahead.

        :raises StreamError: ``history_gone``: this reader was overrun.
        """
        return self._follower.chunk(self._pos + offset)

    def skip(self, count: int) -> None:
        """Move past ``count`` held chunks."""
        if not 0 <= count <= self.held():
            raise ValueError(f"cannot skip {count} chunks; {self.held()} held")
        self._follower.chunk(self._pos)  # raises if overrun
        self._pos += count
        self._follower.moved_by(count)

    def receive_nowait(self) -> StreamChunk:
        """The next chunk if one is held now.

        :raises WouldBlock: nothing yet.
        :raises EndOfStream: the ``done`` chunk was returned (or closed).
        :raises StreamError: the stream ended abnormally (or the follow failed).
        """
        if self.held():
            chunk = self.peek(0)
            self.skip(1)
            return chunk
        end = self.end_reason()
        if end is not None:
            raise end
        raise WouldBlock(f"no chunk of {self.stream_id!r} yet")

    def end_reason(self) -> EndOfStream | StreamError | None:
        """Why nothing more will come, once nothing is held; None: more may."""
        if self._closed:
            return EndOfStream(f"reader of {self.stream_id!r} is closed")
        if self.held():
            return None
        follower = self._follower
        if follower.done_seq is not None and self._pos > follower.done_seq:
            return EndOfStream(f"stream {self.stream_id!r} is done")
        return follower.terminal

    async def wait(self) -> None:
        """Wait until :meth:`receive_nowait` has something to say (or :meth:`interrupt`)."""
        if self.held() or self.end_reason() is not None:
            return
        await self._park()

    async def wait_changed(self) -> None:
        """Wait for the follower's next fetch or end (or :meth:`interrupt`), even
        while chunks are held: a WebSocket pump held back for credit must still
        notice the end of the stream. Once it ended only :meth:`interrupt` wakes it."""
        if self._closed:
            return
        await self._park()

    async def _park(self) -> None:
        """Wait for the next :meth:`interrupt` (the follower's, or a caller's)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    def interrupt(self) -> None:
        """End a pending :meth:`wait` early."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """Detach from the follower (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.interrupt()
        self._follower.readers.discard(self)
        self._follower.moved_by(0)
        self._on_close(self)
