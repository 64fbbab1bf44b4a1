"""Interactive input into a running stream: what a user sends while tokens flow.

An agent streaming an answer may need to react mid-stream: the user says
"stop", picks an option, or types a correction. Each stream has one bounded
FIFO of such inputs (created on first use). The transports put into it
(``flow.send_input``, the WebSocket ``input`` op) and the producing node reads
it with ``async for data in ctx.inputs(parent=msg)``.

Limits and ends:

* The queue holds at most ``limit`` inputs (``Limits.stream_inputs``, default
  64). A sender never waits: past the limit :meth:`StreamInputs.put_nowait`
  raises :class:`~icefloe.exceptions.WouldBlock`, so a flooding client is
  told at once instead of growing memory.
* When the stream ends, iteration ends (after the inputs already queued are
  read) and putting raises :class:`~icefloe.exceptions.StreamClosedError`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from icefloe.exceptions import ErrorCode, StreamClosedError, WouldBlock

__all__ = ["StreamInputs"]


class StreamInputs:
    """The bounded input queue of one stream; an async iterator of its inputs."""

    __slots__ = ("_closed", "_code", "_items", "_waiter", "limit", "received", "stream_id")

    def __init__(self, stream_id: str, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.stream_id = stream_id
        self.limit = limit
        self._items: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._code: ErrorCode | None = None
        #: inputs accepted so far
        self.received = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put_nowait(self, data: Any) -> None:
        """Queue one input for the producing node.

        :raises StreamClosedError: the stream has ended.
        :raises WouldBlock: ``limit`` inputs are waiting to be read.
        """
        if self._closed:
            raise StreamClosedError(self.stream_id, self._code)
        if len(self._items) >= self.limit:
            raise WouldBlock(f"stream {self.stream_id!r} has {self.limit} unread inputs")
        self._items.append(data)
        self.received += 1
        self._wake()

    def close(self, code: ErrorCode | None = None) -> None:
        """The stream ended: no more puts; readers finish what is queued."""
        if not self._closed:
            self._closed = True
            self._code = code
            self._wake()

    def get_nowait(self) -> Any:
        """The oldest queued input.

        :raises WouldBlock: nothing queued yet.
        :raises StopAsyncIteration: the stream ended and everything was read.
        """
        if self._items:
            return self._items.popleft()
        if self._closed:
            raise StopAsyncIteration
        raise WouldBlock(f"no input for {self.stream_id!r} yet")

    def __aiter__(self) -> StreamInputs:
        return self

    async def __anext__(self) -> Any:
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
