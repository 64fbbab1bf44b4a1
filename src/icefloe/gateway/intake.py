"""A route's intake: records taken from its source end, handed to the route in batches.

A route moves a *batch* at a time: it takes up to ``limit`` records, hands
every chunk to the sink, flushes the sink once (one broker round trip for
the batch instead of one per record) and only then acks the records. The
source end is read on a task of its own into a queue of at most ``limit``
records, so while the sink confirms one batch the next one gathers.
:meth:`Intake.batch` waits for the first record, then takes what is ready,
up to ``limit``: a busy source fills batches, a quiet one sends each record
as soon as it comes.

Bounds: the queue holds at most ``limit`` records, the reader one more in
hand, the route one batch: at most ``2 * limit + 1`` records taken and not
yet acked.
"""

from __future__ import annotations

import asyncio
from typing import Final

from icefloe.gateway.cancelling import cancel_and_wait
from icefloe.gateway.kinds import SourceEnd, Taken

__all__ = ["Intake"]


class _End:
    """The source's iteration ended (``error`` None) or failed with ``error``."""

    __slots__ = ("error",)

    def __init__(self, error: Exception | None) -> None:
        self.error = error


_ENDED: Final = _End(None)


class Intake:
    """Batches of a source end's records; use it in ``async with``."""

    def __init__(self, source: SourceEnd, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a batch limit must be >= 1, got {limit}")
        self._source = source
        self._limit = limit
        self._queue: asyncio.Queue[Taken | _End] = asyncio.Queue(limit)
        self._reader: asyncio.Task[None] | None = None
        self._end: _End | None = None

    async def __aenter__(self) -> Intake:
        self._reader = asyncio.get_running_loop().create_task(
            self._read(), name=f"icefloe-intake:{self._source.name}"
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await cancel_and_wait(reader)

    async def _read(self) -> None:
        try:
            async for taken in self._source:
                await self._queue.put(taken)
        except Exception as exc:  # the route fails with it, in its own task
            await self._queue.put(_End(exc))
        else:
            await self._queue.put(_ENDED)

    async def batch(self) -> list[Taken]:
        """The next records: at least one, at most ``limit``; ``[]`` once the source ended.

        :raises Exception: what the source's iteration raised (after the
            records it handed out before).
        """
        if self._end is not None:
            if self._end.error is not None:
                raise self._end.error
            return []
        got: list[Taken] = []
        item = await self._queue.get()
        while True:
            if isinstance(item, _End):
                self._end = item
                if got:
                    return got  # the end is reported by the next call
                return await self.batch()
            got.append(item)
            if len(got) == self._limit or self._queue.empty():
                return got
            item = self._queue.get_nowait()
