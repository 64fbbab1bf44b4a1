"""The following side on JetStream: a follower fed by one pull consumer.

:func:`fetch_loop` is the one fetch task of one followed stream in one
process (as the Redis engine's ``XREAD`` loop): it asks for at most the
follower's room (and :data:`FETCH_COUNT`) per pull request and appends what
comes, whatever the number of local readers. The consumer starts at or
before the first chunk wanted (see
:meth:`~icefloe.backplane.nats.metastore.Marks.start_for`); chunks before it
are skipped by seq, so a resume from seq N gets N, N+1, … exactly once.
:func:`prefill` fetches ``[from_seq, base)`` for a reader resuming behind
the follower's run, with a consumer of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from icefloe.backplane.follower import Follower
from icefloe.backplane.nats.layout import END_HEADER
from icefloe.backplane.nats.pull import Pull
from icefloe.core.codec import decode_chunk_msgpack
from icefloe.core.messages import StreamChunk
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import StreamError

if TYPE_CHECKING:
    from nats.aio.msg import Msg

__all__ = ["BLOCK_S", "FETCH_COUNT", "decode", "fetch_loop", "prefill"]

log = logging.getLogger("icefloe.backplane")

#: messages one pull request asks for at most
FETCH_COUNT: Final = 256
#: seconds one pull request waits before the fetcher checks the stream's meta
BLOCK_S: Final = 1.0


def decode(stream_id: str, msg: Msg) -> StreamChunk | StreamError:
    """A chunk subject's message: a chunk, or the stream's abnormal end."""
    code = (msg.headers or {}).get(END_HEADER)
    if code is None:
        return decode_chunk_msgpack(msg.data)
    message = msg.data.decode(errors="replace")
    try:
        return StreamError(ErrorCode(code), message, stream_id)
    except ValueError:  # a code from a newer gateway
        return StreamError(ErrorCode.FAILED, message, stream_id)


async def fetch_loop(
    follower: Follower, pull: Pull, check_alive: Callable[[Follower], Awaitable[None]]
) -> None:
    """Feed ``follower`` from ``pull`` (opened) until the stream ends; closes ``pull``."""
    sid = follower.stream_id
    try:
        while not follower.ended:
            room = follower.room_left()
            if room <= 0:
                follower.room.clear()
                await follower.room.wait()
                continue
            msgs = await pull.next(min(room, FETCH_COUNT), BLOCK_S)
            if not msgs:
                await check_alive(follower)
                continue
            chunks: list[StreamChunk] = []
            for msg in msgs:
                item = decode(sid, msg)
                if isinstance(item, StreamError):
                    follower.extend(chunks)
                    follower.end(item)
                    return
                chunks.append(item)
            follower.extend(chunks)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the engine failed: the readers reconnect elsewhere
        log.warning("backplane follow of %s failed: %r", sid, exc)
        follower.end(StreamError(ErrorCode.UNAVAILABLE, "the backplane is unreachable", sid))
    finally:
        await pull.close()


async def prefill(follower: Follower, pull: Pull, from_seq: int) -> None:
    """Fetch ``[from_seq, base)`` from ``pull`` (opened at or before ``from_seq``;
    closed here) and put it before the follower's run.

    Reads at most the chunks the subject keeps (``limit`` of them) before
    ``from_seq``, plus what it needs.

    :raises StreamError: ``history_gone``: ``from_seq`` is no longer kept.
    """
    sid = follower.stream_id
    gone = StreamError(ErrorCode.HISTORY_GONE, "the stream's history is gone", sid)
    base = follower.base
    if base - from_seq > follower.limit:
        await pull.close()
        raise gone
    chunks: list[StreamChunk] = []
    scanned, budget, last = 0, 2 * follower.limit + FETCH_COUNT, -1
    try:
        while scanned < budget and last < base - 1:
            msgs = await pull.next(min(FETCH_COUNT, budget - scanned), BLOCK_S)
            if not msgs:
                break
            scanned += len(msgs)
            for item in (decode(sid, msg) for msg in msgs):
                if isinstance(item, StreamError):
                    last = base  # the end: nothing more comes
                    break
                last = item.seq
                if from_seq <= item.seq < base:
                    chunks.append(item)
    finally:
        await pull.close()
    # Another reader resuming meanwhile may have fetched part of it.
    base = follower.base
    if from_seq >= base:
        return
    chunks = [c for c in chunks if c.seq < base]
    if not chunks or chunks[0].seq != from_seq or not follower.prepend(chunks):
        raise gone
