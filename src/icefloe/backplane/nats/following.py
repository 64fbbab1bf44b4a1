"""The following side on JetStream: a follower fed by one pull consumer.

:func:`fetch_loop` is the one fetch task of one followed stream in one
process: :func:`icefloe.backplane.fetching.fetch_loop` (as on Redis), whose
fetch is one pull request for at most the follower's room (and
:data:`FETCH_COUNT`), whatever the number of local readers. A failure ends
the follow at once, with no retry (the readers reconnect elsewhere). The
consumer starts at or before the first chunk
wanted (see :meth:`~icefloe.backplane.nats.metastore.Marks.start_for`);
chunks before it are skipped by seq, so a resume from seq N gets N, N+1, …
exactly once. :func:`prefill` fetches ``[from_seq, base)`` for a reader
resuming behind the follower's run, with a consumer of its own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from icefloe.backplane import fetching
from icefloe.backplane.fetching import history_gone_error, prepend_fetched
from icefloe.backplane.limits import FETCH_COUNT, FETCH_WAIT_S
from icefloe.backplane.nats.layout import END_HEADER
from icefloe.core.codec import decode_chunk_msgpack
from icefloe.core.messages import StreamChunk
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import StreamError

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from icefloe.backplane.follower import Follower
    from icefloe.backplane.nats.pull import Pull

# FETCH_COUNT is limits.py's, named here as before.
__all__ = ["BLOCK_S", "FETCH_COUNT", "decode", "fetch_loop", "prefill"]

#: seconds one pull request waits before the fetcher checks the stream's meta
BLOCK_S: Final = FETCH_WAIT_S


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
        await fetching.fetch_loop(
            follower, lambda count: pull.next(count, BLOCK_S), lambda m: decode(sid, m), check_alive
        )
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
    base = follower.base
    if base - from_seq > follower.limit:
        await pull.close()
        raise history_gone_error(sid)
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
    prepend_fetched(follower, from_seq, chunks)
