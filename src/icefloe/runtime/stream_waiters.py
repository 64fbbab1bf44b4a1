"""The futures parked on one stream: producers waiting for room, readers for data.

The stream log (:mod:`icefloe.core.streamlog`) never waits; it only says
when waiting may end (``append`` returning False, ``on_room``). A
:class:`StreamWaiters` holds the asyncio side of that: the futures of
producers waiting for the slowest reader to make room, and of readers
parked at the head waiting for the next chunk, and wakes them. It exists
apart from :class:`~icefloe.runtime.stream.StreamState` so the stream's
life (phase, ending, readers, figures) is not mixed with future
bookkeeping; the stream decides when to wake whom.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

__all__ = ["StreamWaiters"]


class StreamWaiters:
    """The producers and readers waiting on one stream."""

    __slots__ = ("_room", "readers")

    def __init__(self) -> None:
        self._room: deque[asyncio.Future[None]] = deque()  # producers waiting
        #: readers parked at the head (public so the per-chunk path tests it
        #: without a call: ``if waiters.readers: waiters.wake_readers()``)
        self.readers: list[asyncio.Future[None]] = []

    def __repr__(self) -> str:
        return f"StreamWaiters(producers={len(self._room)}, readers={len(self.readers)})"

    @property
    def producers(self) -> int:
        """Producers waiting in :meth:`wait_room` now."""
        return len(self._room)

    def park_reader(self, waiter: asyncio.Future[None]) -> None:
        """Resolve ``waiter`` on the next :meth:`wake_readers`."""
        self.readers.append(waiter)

    def wake_readers(self) -> None:
        """Resolve every parked reader's future."""
        waiting = self.readers
        self.readers = []
        for waiter in waiting:
            if not waiter.done():
                waiter.set_result(None)

    def wake_producers(self) -> None:
        """Resolve every waiting producer's future (room may have appeared)."""
        room = self._room
        while room:
            fut = room.popleft()
            if not fut.done():
                fut.set_result(None)

    async def wait_room(self, want_room: Callable[[], object], ready: Callable[[], bool]) -> None:
        """Wait, woken by :meth:`wake_producers`, until ``ready()`` says so.

        ``want_room`` is called before each wait (the log's
        :meth:`~icefloe.core.streamlog.StreamLog.want_room`: it then signals
        once room may have appeared).
        """
        loop = asyncio.get_running_loop()
        room = self._room
        while True:
            fut = loop.create_future()
            room.append(fut)
            want_room()
            try:
                await fut
            finally:
                if not fut.done():
                    fut.cancel()
                try:
                    room.remove(fut)
                except ValueError:
                    pass
            if ready():
                return
