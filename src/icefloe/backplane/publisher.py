"""The producing side: one stream's chunks appended to the engine's log.

:func:`publish` reads a local stream (any :class:`ChunkSource`; the edge
hands it a blocking in-process subscription attached at seq 0) and appends
each chunk once, msgpack-encoded, with ``XADD … MAXLEN ~ history``, in
pipelined batches of what is ready (at most
:data:`~icefloe.backplane.limits.MAX_BATCH`). The meta
hash says the state and last seq; the end writes the terminal.

Bounded across processes: before a batch, the producer reads the positions
the reading processes report (``P s:<id>:readers``) and appends at most
``window`` chunks past the slowest fresh one, polling every
:data:`POLL_S` while it may not. Its own subscription then stops reading,
which holds the stream's producer back in-process, as a slow local reader
would. A report older than :data:`~icefloe.backplane.limits.STALE_MS` is
ignored (a crashed gateway must not stall a stream forever). The window and
the source read are :mod:`icefloe.backplane.producing`'s, shared with the
JetStream producer; the limits are :mod:`icefloe.backplane.limits`' (named
here too, where they were first defined).

The engine away: every call is retried with backoff for
:data:`~icefloe.backplane.backoff.RETRY_BUDGET_S` (a batch that went
partly through before the connection dropped is appended again, its
entries already there skipped by their ID), so a short outage costs the
readers elsewhere a pause and no chunk. Meanwhile the publisher takes
nothing from the stream, which holds the run back as a slow reader would.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from icefloe.backplane.backoff import retrying
from icefloe.backplane.keys import Keys, entry_id
from icefloe.backplane.limits import MAX_BATCH, RUNNING_TTL_S, STALE_MS, TTL_S
from icefloe.backplane.meta import CANCELLED, DONE, FAILED, RUNNING
from icefloe.backplane.producing import ChunkSource, batch_room, fresh, pump, ready_chunks
from icefloe.core.codec import encode_chunk_msgpack
from icefloe.core.messages import StreamChunk
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import StreamError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline

__all__ = [
    "MAX_BATCH",
    "POLL_S",
    "RUNNING_TTL_S",
    "STALE_MS",
    "TTL_S",
    "ChunkSource",
    "publish",
    "ready_chunks",
    "slowest",
    "window_room",
]

#: seconds between two reads of the readers' positions while held back
POLL_S: Final = 0.02


def slowest(raw: dict[Any, Any], now_ms: int) -> int | None:
    """The slowest fresh position in a readers hash (None: no fresh reader)."""
    floor: int | None = None
    for value in raw.values():
        text = value.decode() if isinstance(value, bytes) else str(value)
        pos_text, _, ts_text = text.partition(" ")
        try:
            pos, ts = int(pos_text), int(ts_text)
        except ValueError:
            continue
        if not fresh(ts, now_ms):
            continue
        floor = pos if floor is None else min(floor, pos)
    return floor


async def window_room(client: Redis, keys: Keys, stream_id: str, next_seq: int, window: int) -> int:
    """Chunks that may be appended now; waits (polling) while none may."""
    key = keys.readers(stream_id)
    while True:
        positions = await retrying(lambda: client.hgetall(key))
        room = batch_room(slowest(positions, int(time.time() * 1000)), next_seq, window)
        if room > 0:
            return room
        await asyncio.sleep(POLL_S)


def _is_duplicate(result: object) -> bool:
    """An XADD refused because its entry is already in the log (a retried batch)."""
    return isinstance(result, Exception) and "equal or smaller" in str(result)


async def _execute(make: Callable[[], Pipeline]) -> None:
    """Run the pipeline ``make`` builds, retried while the engine is away;
    entries a previous try already appended are not an error."""

    async def once() -> None:
        for result in await make().execute(raise_on_error=False):
            if isinstance(result, Exception) and not _is_duplicate(result):
                raise result

    await retrying(once)


def _batch(
    client: Redis,
    keys: Keys,
    stream_id: str,
    encoded: list[tuple[str, bytes]],
    last_seq: int,
    done: bool,
    history: int,
) -> Pipeline:
    """One append: the entries (ID, msgpack chunk), the last seq, the state if done."""
    pipe = client.pipeline(transaction=False)
    log, meta = keys.log(stream_id), keys.meta(stream_id)
    for entry, blob in encoded:
        pipe.xadd(log, {"c": blob}, id=entry, maxlen=max(history, 1), approximate=True)
    pipe.hset(meta, "last_seq", last_seq)
    if done:
        pipe.hset(meta, "state", DONE)
    return pipe


async def publish(
    client: Redis,
    keys: Keys,
    source: ChunkSource,
    *,
    stream_id: str,
    tenant: str,
    owner: str,
    history: int,
    window: int,
) -> None:
    """Append ``source``'s chunks to the log of ``stream_id`` until it ends."""
    meta, log = keys.meta(stream_id), keys.log(stream_id)
    fields: Any = {
        "tenant": tenant,
        "state": RUNNING,
        "last_seq": -1,
        "owner": owner,
    }
    started_ms = int(time.time() * 1000)

    def opening() -> Pipeline:
        pipe = client.pipeline(transaction=False)
        pipe.hset(meta, mapping=fields)
        pipe.expire(meta, RUNNING_TTL_S)
        pipe.zadd(keys.streams, {stream_id: started_ms})
        return pipe

    async def room(next_seq: int) -> int:
        return await window_room(client, keys, stream_id, next_seq, window)

    async def append(chunks: list[StreamChunk]) -> None:
        encoded = [(entry_id(c.seq), encode_chunk_msgpack(c)) for c in chunks]
        last, done = chunks[-1].seq, chunks[-1].done
        await _execute(
            functools.partial(_batch, client, keys, stream_id, encoded, last, done, history)
        )

    async def fail(error: StreamError, next_seq: int) -> None:
        await _end(client, keys, stream_id, next_seq, error)

    await _execute(opening)
    try:
        await pump(source, room, append, fail)
    finally:
        pipe = client.pipeline(transaction=False)
        pipe.expire(meta, TTL_S)
        pipe.expire(log, TTL_S)
        await pipe.execute()


async def _end(
    client: Redis, keys: Keys, stream_id: str, next_seq: int, error: StreamError
) -> None:
    """Write an abnormal end: a last log entry for followers, then the meta."""

    def ending() -> Pipeline:
        pipe = client.pipeline(transaction=False)
        pipe.xadd(
            keys.log(stream_id),
            {"t": f"{error.code.value}\n{error.message}".encode()},
            id=entry_id(next_seq),
        )
        pipe.hset(
            keys.meta(stream_id),
            mapping={
                "state": CANCELLED if error.code is ErrorCode.CANCELLED else FAILED,
                "code": error.code.value,
                "message": error.message,
            },
        )
        pipe.expire(keys.meta(stream_id), TTL_S)
        return pipe

    await _execute(ending)
