"""The fetch task of one followed stream, whichever engine holds its log.

:func:`fetch_loop` feeds one :class:`~icefloe.backplane.follower.Follower`
until its stream ends: it waits while the follower has no room (its slowest
local reader holds the fetching back), asks the engine for at most the
room (and :data:`~icefloe.backplane.limits.FETCH_COUNT`) entries, appends
the chunks and stops at the stream's abnormal end. A fetch that comes back
empty (after :data:`~icefloe.backplane.limits.FETCH_WAIT_S`) lets the engine
check that the stream still has a producer (:func:`check_meta`).

The engine supplies three small functions: ``fetch(count)`` (a blocking
``XREAD`` on Redis, a pull request on JetStream), ``decode(entry)`` and
``check_alive(follower)``. Errors the engine names as an outage are retried
with backoff for :data:`~icefloe.backplane.backoff.RETRY_BUDGET_S` (the
readers see a pause); any other, or a longer outage, ends the follow with
``unavailable``. :func:`prepend_fetched` is the end of a prefill (a reader
resuming behind the follower's run), however the engine fetched it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TYPE_CHECKING, TypeVar

from icefloe.backplane.backoff import RETRY_BUDGET_S, backoff_s
from icefloe.backplane.limits import FETCH_COUNT
from icefloe.core.messages import StreamChunk
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import StreamError

if TYPE_CHECKING:
    from icefloe.backplane.follower import Follower
    from icefloe.backplane.meta import StreamMeta

__all__ = ["UNREACHABLE", "check_meta", "fetch_loop", "history_gone_error", "prepend_fetched"]

log = logging.getLogger("icefloe.backplane")

E = TypeVar("E")

#: the message of a follow the engine's failure ended
UNREACHABLE = "the backplane is unreachable"


def history_gone_error(stream_id: str) -> StreamError:
    """The error of a reader resuming before what the engine still keeps."""
    return StreamError(ErrorCode.HISTORY_GONE, "the stream's history is gone", stream_id)


async def fetch_loop(
    follower: Follower,
    fetch: Callable[[int], Awaitable[Sequence[E]]],
    decode: Callable[[E], StreamChunk | StreamError],
    check_alive: Callable[[Follower], Awaitable[None]],
    *,
    retried: tuple[type[BaseException], ...] = (),
) -> None:
    """Feed ``follower`` until its stream ends (or the follow fails).

    ``retried``: the errors that say the engine is away (retried within the
    budget); none by default (an engine whose client reconnects by itself).
    """
    sid = follower.stream_id
    failing_since: float | None = None
    attempt = 0
    while not follower.ended:
        try:
            await _fetch_once(follower, fetch, decode, check_alive)
        except asyncio.CancelledError:
            raise
        except retried as exc:  # the engine away: retried, the readers wait
            now = time.monotonic()
            if failing_since is None:
                failing_since = now
                log.warning("backplane follow of %s: %r; retrying", sid, exc)
            if now - failing_since < RETRY_BUDGET_S:
                await asyncio.sleep(backoff_s(attempt))
                attempt += 1
                continue
            follower.end(StreamError(ErrorCode.UNAVAILABLE, UNREACHABLE, sid))
        except Exception as exc:  # a bug or a bad entry: the readers reconnect elsewhere
            log.warning("backplane follow of %s failed: %r", sid, exc)
            follower.end(StreamError(ErrorCode.UNAVAILABLE, UNREACHABLE, sid))
        else:
            failing_since = None
            attempt = 0


async def _fetch_once(
    follower: Follower,
    fetch: Callable[[int], Awaitable[Sequence[E]]],
    decode: Callable[[E], StreamChunk | StreamError],
    check_alive: Callable[[Follower], Awaitable[None]],
) -> None:
    """One fetch into ``follower`` (or a wait for room, or a liveness check)."""
    room = follower.room_left()
    if room <= 0:
        follower.room.clear()
        await follower.room.wait()
        return
    entries = await fetch(min(room, FETCH_COUNT))
    if not entries:
        await check_alive(follower)
        return
    chunks: list[StreamChunk] = []
    for entry in entries:
        item = decode(entry)
        if isinstance(item, StreamError):
            follower.extend(chunks)
            follower.end(item)
            return
        chunks.append(item)
    follower.extend(chunks)


def check_meta(follower: Follower, meta: StreamMeta | None, live: Collection[str]) -> None:
    """After an idle fetch: end the follow if the producer vanished (no
    ``meta``), or if the stream ended (a state not in ``live``) past the
    chunks fetched with no terminal to read."""
    sid = follower.stream_id
    if meta is None:
        follower.end(StreamError(ErrorCode.UNAVAILABLE, "the producing gateway is gone", sid))
    elif meta.state not in live and follower.head > meta.last_seq and meta.code is None:
        follower.end(StreamError(ErrorCode.UNAVAILABLE, "the stream ended unseen", sid))


def prepend_fetched(follower: Follower, from_seq: int, chunks: list[StreamChunk]) -> None:
    """Put ``chunks`` (fetched for ``[from_seq, base)``) before the follower's run.

    :raises StreamError: ``history_gone``: they do not start at ``from_seq``
        (the engine no longer keeps it) or do not reach the run.
    """
    # Another reader resuming meanwhile may have fetched part of it.
    base = follower.base
    if from_seq >= base:
        return
    chunks = [c for c in chunks if c.seq < base]
    if not chunks or chunks[0].seq != from_seq or not follower.prepend(chunks):
        raise history_gone_error(follower.stream_id)
