"""What every engine's producer shares: the local stream it reads, and the window.

A producer (:func:`~icefloe.backplane.publisher.publish` on Redis,
:func:`~icefloe.backplane.nats.producer.produce` on JetStream) takes what
its :class:`ChunkSource` holds now (:func:`ready_chunks`) and appends at
most ``window`` chunks past the slowest fresh position the reading
processes report (:func:`batch_room`); a report older than
:data:`~icefloe.backplane.limits.STALE_MS` is not fresh (:func:`fresh`).
How the positions travel is each engine's.
"""

from __future__ import annotations

from typing import Protocol

from icefloe.backplane.limits import MAX_BATCH, STALE_MS
from icefloe.core.messages import StreamChunk
from icefloe.exceptions import EndOfStream, StreamError, WouldBlock

__all__ = ["ChunkSource", "batch_room", "fresh", "ready_chunks"]


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
