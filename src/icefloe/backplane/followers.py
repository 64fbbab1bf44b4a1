"""The streams one process follows, whichever engine it follows them on.

:class:`Followers` holds one :class:`~icefloe.backplane.follower.Follower`
per followed stream (at most ``max_followed``, by default
:data:`~icefloe.backplane.limits.MAX_FOLLOWED`; a reader past it gets
``unavailable``) and its one fetch task, started by the first reader and
ended with the last. It also paces the position reports:
:meth:`Followers.next_report` waits
:data:`~icefloe.backplane.limits.REPORT_S` (or less, once a follower's
readers moved :data:`~icefloe.backplane.limits.REPORT_EVERY` chunks) and
says the slowest local reader of each followed stream. How a report, a
fetch and a forgotten position travel is the engine's
(:mod:`icefloe.backplane.engine`, :mod:`icefloe.backplane.nats.engine`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from icefloe.backplane.follower import Follower
from icefloe.backplane.limits import MAX_FOLLOWED, REPORT_S
from icefloe.backplane.reader import RemoteReader
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import StreamError

if TYPE_CHECKING:
    from icefloe.backplane.meta import StreamMeta

__all__ = ["Followers", "ended_reader"]


def ended_reader(meta: StreamMeta, from_seq: int) -> RemoteReader:
    """A reader of a stream that ended abnormally: it gets the terminal at once."""
    sid = meta.stream_id
    ended = Follower(sid, from_seq, 1)
    try:
        code = ErrorCode(meta.code or ErrorCode.FAILED)
    except ValueError:  # a code from a newer gateway
        code = ErrorCode.FAILED
    ended.end(StreamError(code, meta.message, sid))
    return RemoteReader(ended, from_seq, lambda _r: None)


class Followers:
    """The followers of one process, their fetch tasks, and when to report."""

    def __init__(
        self,
        *,
        history: int,
        on_dropped: Callable[[str], object],
        max_followed: int = MAX_FOLLOWED,
    ) -> None:
        self._history = history
        #: called with a stream id once its last local reader closed
        self._on_dropped = on_dropped
        self._max_followed = max_followed
        self._followers: dict[str, Follower] = {}
        self._fetchers: dict[str, asyncio.Task[None]] = {}
        #: set by a follower whose readers moved far: report before REPORT_S
        self._report_due = asyncio.Event()

    def follower(self, stream_id: str, from_seq: int) -> tuple[Follower, bool]:
        """The follower of ``stream_id``, made from ``from_seq`` if there is
        none yet, and whether it was made now.

        :raises StreamError: ``unavailable``: this process follows too many streams.
        """
        follower = self._followers.get(stream_id)
        if follower is not None:
            return follower, False
        if len(self._followers) >= self._max_followed:
            too_many = "this gateway follows too many streams"
            raise StreamError(ErrorCode.UNAVAILABLE, too_many, stream_id)
        follower = self._followers[stream_id] = Follower(stream_id, from_seq, self._history)
        follower.report_due = self._report_due
        return follower, True

    def reader(self, follower: Follower, from_seq: int) -> RemoteReader:
        """A new local reader of ``follower``; the last one closed drops it."""
        return RemoteReader(follower, from_seq, self._reader_closed)

    def fetching(self, stream_id: str) -> bool:
        """Whether ``stream_id`` has its fetch task."""
        return stream_id in self._fetchers

    def start_fetch(self, stream_id: str, fetch: Coroutine[Any, Any, None]) -> None:
        """Run ``fetch`` as the one fetch task of ``stream_id`` (cancelled with its follower)."""
        self._fetchers[stream_id] = asyncio.ensure_future(fetch)

    def fetch_tasks(self) -> list[asyncio.Task[None]]:
        """The fetch tasks running (``aclose`` cancels them)."""
        return list(self._fetchers.values())

    def report_now(self) -> None:
        """Have the next report go out at once."""
        self._report_due.set()

    async def next_report(self) -> dict[str, int]:
        """Wait until a report is due; then the slowest local reader's position
        of each followed stream (their moves counted from now)."""
        # asyncio.wait, not asyncio.timeout: on Python 3.11 a cancel that
        # lands as the timeout fires comes out as TimeoutError, and the
        # engine's report loop would outlive aclose().
        due = asyncio.ensure_future(self._report_due.wait())
        try:
            await asyncio.wait({due}, timeout=REPORT_S)
        finally:
            due.cancel()
        self._report_due.clear()
        positions: dict[str, int] = {}
        for sid, follower in self._followers.items():
            follower.moved = 0
            positions[sid] = follower.slowest()
        return positions

    def followed(self) -> dict[str, Follower]:
        """The followed streams (for tests and metrics)."""
        return dict(self._followers)

    def _reader_closed(self, reader: RemoteReader) -> None:
        sid = reader.stream_id
        follower = self._followers.get(sid)
        if follower is None or follower.readers:
            return
        del self._followers[sid]
        task = self._fetchers.pop(sid, None)
        if task is not None:
            task.cancel()
        self._on_dropped(sid)
