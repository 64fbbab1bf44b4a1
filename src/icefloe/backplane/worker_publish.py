"""A worker's appends to a stream's log, fenced by the stream's owner token.

A worker owns a stream it took from the run queue
(:meth:`~icefloe.backplane.runqueue.RunQueue.own` wrote its token into the
meta's ``owner``). Every append here is one script that first checks that
the meta still names the token: a worker that lost its lease (it stalled,
its entry went to another worker) and comes back appends nothing. Its
publisher then stops, quietly: the stream is someone else's.

The script also keeps each seq once in the log: a chunk at or below the
meta's ``last_seq`` is dropped (a resumed run re-emitting what the dead
worker appended), and a chunk past ``last_seq + 1`` is refused (a gap). The
flow control toward remote readers is :mod:`icefloe.backplane.publisher`'s.

The engine away: every script call is retried with backoff for
:data:`~icefloe.backplane.backoff.RETRY_BUDGET_S`, as a gateway's publisher
retries its appends, so a short outage costs the readers a pause and no
chunk. A retry is harmless when the first try landed and only its answer
was lost: the append drops the seqs it already holds and answers the same
last seq, and an end finds the stream ended and answers as the first did.
A worker whose stream another took meanwhile is fenced by the retry itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from icefloe.backplane.backoff import retrying
from icefloe.backplane.keys import Keys
from icefloe.backplane.meta import CANCELLED, FAILED
from icefloe.backplane.publisher import TTL_S, ChunkSource, ready_chunks, window_room
from icefloe.core.codec import encode_chunk_msgpack
from icefloe.core.messages import StreamChunk
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import StreamError

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["FENCED", "GAP", "append_owned", "end_owned", "publish_owned"]

#: what :func:`append_owned` answers when the token no longer owns the stream
FENCED: Final = -2
#: what :func:`append_owned` answers for a chunk that would leave a gap
GAP: Final = -3

_APPEND = """
-- KEYS: meta, log. ARGV: token, maxlen, then seq, chunk pairs in order.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return -2 end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_seq') or '-1')
for i = 3, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if seq > last + 1 then return -3 end
  if seq == last + 1 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], ARGV[i] .. '-1', 'c', ARGV[i + 1])
    last = seq
  end
end
redis.call('HSET', KEYS[1], 'last_seq', last)
return last
"""

_DONE = """
-- KEYS: meta, log. ARGV: token, ttl. The done chunk is in the log: state done.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done')
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""

_END = """
-- KEYS: meta, log. ARGV: token, ttl, state, code, message.
-- An abnormal end: one last log entry after the last seq, then the meta.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
-- Ended already (a retried end whose first try landed): nothing more to write.
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'running' then return 1 end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_seq') or '-1')
redis.call('XADD', KEYS[2], (last + 1) .. '-1', 't', ARGV[4] .. '\\n' .. ARGV[5])
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'code', ARGV[4], 'message', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""


async def append_owned(
    client: Redis, keys: Keys, stream_id: str, token: str, chunks: list[StreamChunk], history: int
) -> int:
    """Append ``chunks`` (in seq order) while ``token`` owns the stream.

    Returns the log's last seq after it, :data:`FENCED` or :data:`GAP`
    (nothing of the call was appended past the answer's last seq). The
    engine's errors are retried within the budget, then raised.
    """
    args: list[Any] = [token, max(history, 1)]
    for chunk in chunks:
        args += [chunk.seq, encode_chunk_msgpack(chunk)]
    names = [keys.meta(stream_id), keys.log(stream_id)]
    script = client.register_script(_APPEND)
    last = int(await retrying(lambda: script(keys=names, args=args)))
    if last >= 0 and chunks and chunks[-1].done and chunks[-1].seq <= last:
        done = client.register_script(_DONE)
        if not await retrying(lambda: done(keys=names, args=[token, TTL_S])):
            return FENCED
    return last


async def end_owned(
    client: Redis, keys: Keys, stream_id: str, token: str, code: ErrorCode, message: str
) -> bool:
    """End the stream abnormally while ``token`` owns it (False: fenced);
    retried as :func:`append_owned` is."""
    state = CANCELLED if code is ErrorCode.CANCELLED else FAILED
    names = [keys.meta(stream_id), keys.log(stream_id)]
    args: list[str | int] = [token, TTL_S, state, code.value, message]
    script = client.register_script(_END)
    return bool(await retrying(lambda: script(keys=names, args=args)))


async def publish_owned(
    client: Redis,
    keys: Keys,
    source: ChunkSource,
    *,
    stream_id: str,
    token: str,
    history: int,
    window: int,
    next_seq: int,
) -> bool:
    """Append ``source``'s chunks (from ``next_seq``) until it ends.

    Returns whether the token owned the stream to the end (False: another
    worker took it; nothing more was appended).
    """
    try:
        while True:
            room = await window_room(client, keys, stream_id, next_seq, window)
            chunks, end = ready_chunks(source, room)
            if chunks:
                last = await append_owned(client, keys, stream_id, token, chunks, history)
                if last == GAP:
                    code, why = ErrorCode.FAILED, "the stream's log has a gap"
                    return await end_owned(client, keys, stream_id, token, code, why)
                if last == FENCED:
                    return False
                next_seq = chunks[-1].seq + 1
            if isinstance(end, StreamError):
                return await end_owned(client, keys, stream_id, token, end.code, end.message)
            if end is not None:
                return True
            if not chunks:
                await source.wait()
    finally:
        source.close()
