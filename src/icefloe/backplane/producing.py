"""What every engine's producer shares: the local stream it reads, and the window.

A producer (:func:`~icefloe.backplane.publisher.publish` on Redis,
:func:`~icefloe.backplane.nats.producer.produce` on JetStream) runs
:func:`pump`: it takes what its :class:`ChunkSource` holds now
(:func:`ready_chunks`), at most ``window`` chunks past the slowest fresh
position the reading processes report (:func:`batch_room`; a report older
than :data:`~icefloe.backplane.limits.STALE_MS` is not :func:`fresh`), hands
them to the engine's append, and waits for more. How the positions travel
and how a batch or an abnormal end is written are each engine's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from icefloe.backplane.limits import MAX_BATCH, STALE_MS
from icefloe.core.messages import StreamChunk
from icefloe.exceptions import EndOfStream, StreamError, WouldBlock

__all__ = ["ChunkSource", "batch_room", "fresh", "pump", "ready_chunks"]


class ChunkSource(Protocol):
    """What a producer reads (an in-process stream subscription)."""

    def receive_nowait(self) -> StreamChunk: ...
    async def wait(self) -> None: ...
    def close(self) -> None: ...


def ready_chunks(source: ChunkSource, limit: int) -> tuple[list[StreamChunk], BaseException | None]:
    """What ``source`` holds now, up to ``limit`` chunks, and its end if reached."""
    chunks: list[StreamChunk] = []
    while len(chunks) < limit:
        try:
            chunks.append(source.receive_nowait())
        except WouldBlock:
            return chunks, None
        except (EndOfStream, StreamError) as exc:
            return chunks, exc
    return chunks, None


def fresh(reported_ms: int, now_ms: int) -> bool:
    """Whether a position reported at ``reported_ms`` still holds the producer."""
    return now_ms - reported_ms <= STALE_MS


def batch_room(floor: int | None, next_seq: int, window: int) -> int:
    """Chunks the next append may carry, from chunk ``next_seq`` on, with the
    slowest fresh reader elsewhere at ``floor`` (None: no fresh reader);
    0 while the producer must wait for the readers."""
    if floor is None:
        return MAX_BATCH
    return max(0, min(floor + window - next_seq, MAX_BATCH))


async def pump(
    source: ChunkSource,
    room: Callable[[int], Awaitable[int]],
    append: Callable[[list[StreamChunk]], Awaitable[None]],
    fail: Callable[[StreamError, int], Awaitable[None]],
) -> None:
    """Hand ``source``'s chunks to ``append`` until it ends; closes ``source``.

    ``room(next_seq)`` waits until the window lets chunks from ``next_seq``
    go and says how many may; ``fail(error, next_seq)`` writes an abnormal
    end after the last chunk appended.
    """
    next_seq = 0
    try:
        while True:
            chunks, end = ready_chunks(source, await room(next_seq))
            if chunks:
                await append(chunks)
                next_seq = chunks[-1].seq + 1
            if isinstance(end, StreamError):
                await fail(end, next_seq)
            if end is not None:
                return
            if not chunks:
                await source.wait()
    finally:
        source.close()
