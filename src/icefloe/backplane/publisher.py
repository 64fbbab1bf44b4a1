"""The producing side: one stream's chunks appended to the engine's log.

:func:`publish` reads a local stream (any :class:`ChunkSource`; the edge
hands it a blocking in-process subscription attached at seq 0) and appends
each chunk once, msgpack-encoded, with ``XADD … MAXLEN ~ history``, in
pipelined batches of what is ready (at most :data:`MAX_BATCH`). The meta
hash says the state and last seq; the end writes the terminal.

Bounded across processes: before a batch, the producer reads the positions
the reading processes report (``P s:<id>:readers``) and appends at most
``window`` chunks past the slowest fresh one, polling every
:data:`POLL_S` while it may not. Its own subscription then stops reading,
which holds the stream's producer back in-process, as a slow local reader
would. A report older than :data:`STALE_MS` is ignored (a crashed gateway
must not stall a stream forever).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Final, Protocol

from icefloe.backplane.keys import Keys, entry_id
from icefloe.backplane.meta import CANCELLED, DONE, FAILED, RUNNING
from icefloe.core.codec import encode_chunk_msgpack
from icefloe.core.messages import StreamChunk
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import EndOfStream, StreamError, WouldBlock

if TYPE_CHECKING:
    from redis.asyncio import Redis

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

#: chunks one pipelined append carries at most
MAX_BATCH: Final = 256
#: seconds between two reads of the readers' positions while held back
POLL_S: Final = 0.02
#: milliseconds after which a reader position report is ignored
STALE_MS: Final = 5000
#: seconds a stream's keys live after its end
TTL_S: Final = 600
#: seconds a running stream's keys live after the last refresh (the engine's
#: keepalive refreshes them every third of it: a crashed producer's streams vanish)
RUNNING_TTL_S: Final = 30


class ChunkSource(Protocol):
    """What :func:`publish` reads (an in-process stream subscription)."""

    def receive_nowait(self) -> StreamChunk: ...
    async def wait(self) -> None: ...
    def close(self) -> None: ...


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
        if now_ms - ts > STALE_MS:
            continue
        floor = pos if floor is None else min(floor, pos)
    return floor


async def window_room(client: Redis, keys: Keys, stream_id: str, next_seq: int, window: int) -> int:
    """Chunks that may be appended now; waits (polling) while none may."""
    key = keys.readers(stream_id)
    while True:
        floor = slowest(await client.hgetall(key), int(time.time() * 1000))
        if floor is None:
            return MAX_BATCH
        room = floor + window - next_seq
        if room > 0:
            return min(room, MAX_BATCH)
        await asyncio.sleep(POLL_S)


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
    await client.hset(meta, mapping=fields)
    await client.expire(meta, RUNNING_TTL_S)
    await client.zadd(keys.streams, {stream_id: int(time.time() * 1000)})
    next_seq = 0
    try:
        while True:
            room = await window_room(client, keys, stream_id, next_seq, window)
            chunks, end = ready_chunks(source, room)
            if chunks:
                pipe = client.pipeline(transaction=False)
                for chunk in chunks:
                    pipe.xadd(
                        log,
                        {"c": encode_chunk_msgpack(chunk)},
                        id=entry_id(chunk.seq),
                        maxlen=max(history, 1),
                        approximate=True,
                    )
                next_seq = chunks[-1].seq + 1
                pipe.hset(meta, "last_seq", next_seq - 1)
                if chunks[-1].done:
                    pipe.hset(meta, "state", DONE)
                await pipe.execute()
            if isinstance(end, StreamError):
                await _end(client, keys, stream_id, next_seq, end)
            if end is not None:
                return
            if not chunks:
                await source.wait()
    finally:
        source.close()
        pipe = client.pipeline(transaction=False)
        pipe.expire(meta, TTL_S)
        pipe.expire(log, TTL_S)
        await pipe.execute()


async def _end(
    client: Redis, keys: Keys, stream_id: str, next_seq: int, error: StreamError
) -> None:
    """Write an abnormal end: a last log entry for followers, then the meta."""
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
    await pipe.execute()
