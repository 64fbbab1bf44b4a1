"""What a :class:`~icefloe.core.streamlog.StreamLog` forgets, and when.

A log keeps what its readers have not consumed plus ``history`` consumed
chunks for late joiners and resumption; the reader side works out the
oldest seq that must stay (:meth:`~icefloe.core.logreaders.LogReaders.repace`).
:func:`trim` drops what is older: exactly for a solo reader (it pops its
chunks anyway), else in batches of :data:`TRIM_BATCH` so steady readers do
not pay per chunk; under byte pressure retained history goes too, down to
the floor (never an unread chunk of a reader the producer waits for). It
exists apart from the log because it is a policy over what the log holds,
not part of ordering or room.
"""

from __future__ import annotations

from collections import deque

from icefloe.core.bytecount import ByteCount
from icefloe.core.messages import StreamChunk

__all__ = ["TRIM_BATCH", "trim"]

#: consumed chunks trimmed at once; the log may hold this many beyond its limits
TRIM_BATCH = 32


def trim(
    queue: deque[StreamChunk],
    count: ByteCount,
    head: int,
    keep_from: int,
    floor: int,
    solo: bool,
) -> None:
    """Drop the chunks of ``queue`` (seqs ``[head - len(queue), head)``) before
    ``keep_from``, by the rules above; ``count`` is recounted when any go."""
    base = head - len(queue)
    drop = keep_from - base
    if drop >= len(queue):
        queue.clear()
        count.clear()
        return
    pressed = count.bound >= count.limit and count.full(queue)  # no call if not
    if pressed:
        drop = max(drop, floor - base)
    if drop <= 0 or (drop < TRIM_BATCH and not solo and not pressed):
        return
    for _ in range(drop):
        queue.popleft()
    count.recount(queue)
