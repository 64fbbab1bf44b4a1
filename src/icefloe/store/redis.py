"""``redis://``: a :class:`~icefloe.store.protocol.Store` on one Redis server.

Key layout (``P`` is the prefix, ``icefloe:`` unless the URL's ``prefix``
query parameter or the ``prefix`` argument says otherwise)::

    P run:<stream id>       HASH    the run: its record's fields, ``last`` (last
                                    stored seq), ``key`` (its idempotency key),
                                    ``tphase/tcode/tmsg/tended`` (terminal),
                                    ``cpseq/cpstate`` (latest checkpoint)
    P chunks:<stream id>    STREAM  one entry per chunk, ID ``<seq>-1``, field ``r``
    P unfinished            ZSET    stream ids of runs with no terminal, by created_at
    P ended                 ZSET    stream ids of ended runs, by ended_at (retention)
    P key:<idempotency key> STRING  the stream id holding the key, with a TTL
    P session:<session id>  STRING  the session's record, expiring at its expires_at
    P pos:<namespace>       HASH    connector positions: key -> value

Chunks go in a Stream because it is an append-only log ordered by ID: a
read from a seq is one ``XRANGE`` (O(log n + limit)), entries are delta-packed
(far smaller than a sorted set, whose members would need the seq inside them
to stay unique), and ``XADD`` itself refuses an ID that does not grow, a
second guard behind the seq rules. The ID's sequence part is ``1`` because
``0-0`` is not a valid entry ID.

Every write that must be atomic is one Lua script, which Redis runs with no
other command in between: ``append`` checks the rules of
:func:`~icefloe.store.memory.check_append` server-side and then writes the
chunks, ``last`` and the checkpoint (or nothing); ``create_run`` claims the
idempotency key and writes the run in one step; ``end_run`` keeps the first
terminal; ``delete_runs`` removes runs with their chunks and keys. Scripts
reach keys they build from the prefix, so this backend needs one Redis server
(or a primary), not Redis Cluster. Expiry uses the Redis server's clock.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from icefloe.core.reliability import Reliability
from icefloe.exceptions import StreamNotFound
from icefloe.store import positions_redis
from icefloe.store.counters import StoreCounters
from icefloe.store.memory import check_append
from icefloe.store.positions import check_position
from icefloe.store.protocol import StoreUnavailable
from icefloe.store.remote import as_unavailable, check_url, split_options
from icefloe.store.types import (
    Checkpoint,
    RunRecord,
    RunState,
    StoredChunk,
    StoreStatistics,
    Terminal,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["DEFAULT_PREFIX", "RedisStore"]

#: the key prefix when the URL names none
DEFAULT_PREFIX = "icefloe:"
#: seconds to connect, and to wait for any one answer
DEFAULT_TIMEOUT_S = 5.0
#: runs fetched per round trip by ``unfinished_runs``
_BATCH = 500

_APPEND = """
-- KEYS: run hash, chunk stream. ARGV: '1' when a checkpoint comes, its seq,
-- its state, then seq, record pairs in the caller's order.
local last = redis.call('HGET', KEYS[1], 'last')
if not last then return {-1, 0} end
last = tonumber(last)
local expect = last + 1
local previous = -2
-- check everything first, so a refused call writes nothing
for i = 4, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if seq <= previous then return {0, last} end
  previous = seq
  if seq > last then
    if seq ~= expect then return {0, last} end
    expect = expect + 1
  end
end
if ARGV[1] == '1' and tonumber(ARGV[2]) > expect - 1 then return {0, last} end
local written = 0
local newest = nil
for i = 4, #ARGV, 2 do
  if tonumber(ARGV[i]) > last then
    redis.call('XADD', KEYS[2], ARGV[i] .. '-1', 'r', ARGV[i + 1])
    written = written + 1
    newest = ARGV[i]
  end
end
-- the seq's own text, not a Lua number (which would print as 1e+15)
if newest then redis.call('HSET', KEYS[1], 'last', newest) end
if ARGV[1] == '1' then redis.call('HSET', KEYS[1], 'cpseq', ARGV[2], 'cpstate', ARGV[3]) end
return {1, written}
"""

_CREATE = """
-- KEYS: run hash, unfinished index, [idempotency key]. ARGV: stream id,
-- created_at, key TTL in ms, then the run hash's field, value pairs.
if KEYS[3] then
  local held = redis.call('GET', KEYS[3])
  if held then return {0, held} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1, ''} end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
if KEYS[3] then redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3]) end
return {1, ARGV[1]}
"""

_END = """
-- KEYS: run hash, unfinished index, ended index. ARGV: stream id, ended_at,
-- then the terminal's field, value pairs.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HEXISTS', KEYS[1], 'tphase') == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
"""

_DELETE = """
-- KEYS: ended index. ARGV: key prefix, ended_before (exclusive), limit.
local doomed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0, ARGV[3])
for _, sid in ipairs(doomed) do
  local run = ARGV[1] .. 'run:' .. sid
  local key = redis.call('HGET', run, 'key')
  if key then
    local held = ARGV[1] .. 'key:' .. key
    -- a key that expired and was claimed again belongs to another run now
    if redis.call('GET', held) == sid then redis.call('DEL', held) end
  end
  redis.call('UNLINK', run, ARGV[1] .. 'chunks:' .. sid)
  redis.call('ZREM', KEYS[1], sid)
end
return #doomed
"""


class RedisStore:
    """Runs, chunks, keys and sessions in Redis (see the module docstring)."""

    def __init__(
        self, url: str, *, prefix: str = DEFAULT_PREFIX, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        if not prefix:
            raise ValueError("the Redis store's prefix must not be empty")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        _check_url(url)
        if importlib.util.find_spec("redis") is None:
            raise ImportError("the Redis store needs redis-py: pip install 'icefloe[redis]'")
        self._url = url
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._client: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._errors: tuple[type[BaseException], ...] = (OSError,)
        self._counters = StoreCounters()

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        """``redis://[user:password@]host:port/db[?prefix=P]`` (or ``rediss://``).

        Other query parameters go to redis-py (``socket_timeout=...``).

        :raises ValueError: a malformed URL or an empty prefix.
        :raises ImportError: redis-py is not installed.
        """
        rest, ours = split_options(url, ("prefix",))
        return cls(rest, prefix=ours.get("prefix", DEFAULT_PREFIX))

    @property
    def name(self) -> str:
        parts = urlsplit(self._url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path} (prefix {self._prefix})"

    @property
    def prefix(self) -> str:
        """What every key of this store starts with."""
        return self._prefix

    async def open(self) -> None:
        if self._client is not None:
            return
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        self._errors = (RedisError, OSError)
        with self._unavailable("connect"):
            # Retries belong to the caller's policy (backoff, budget, breaker),
            # not hidden inside the client where they would stretch timeouts.
            client = redis.asyncio.Redis.from_url(
                self._url,
                socket_timeout=self._timeout_s,
                socket_connect_timeout=self._timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
            try:
                await client.ping()
            except BaseException:
                await client.aclose()
                raise
        self._client = client
        self._scripts = {
            name: client.register_script(body)
            for name, body in (
                ("append", _APPEND),
                ("create", _CREATE),
                ("end", _END),
                ("delete", _DELETE),
            )
        }

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with self._unavailable("close"):
                await client.aclose()

    # -- runs ------------------------------------------------------------------

    async def create_run(
        self, run: RunRecord, *, idempotency_key: str | None = None, key_ttl_s: float = 86_400.0
    ) -> str:
        keys = [self._key("run:", run.stream_id), self._key("unfinished")]
        fields = _run_fields(run)
        if idempotency_key is not None:
            keys.append(self._key("key:", idempotency_key))
            fields += ["key", idempotency_key]
        ttl_ms = max(1, round(key_ttl_s * 1000))
        args = [run.stream_id, repr(run.created_at), ttl_ms, *fields]
        with self._unavailable("create_run"):
            status, held = await self._script("create")(keys=keys, args=args)
        if status == -1:
            raise ValueError(f"a run with stream id {run.stream_id} exists already")
        if status == 0:
            return _raw(held).decode()
        self._counters.run_created()
        return run.stream_id

    async def get_run(self, stream_id: str) -> RunState | None:
        with self._unavailable("get_run"):
            fields = await self._redis().hgetall(self._key("run:", stream_id))
        return _state(stream_id, fields) if fields else None

    async def unfinished_runs(self) -> list[RunState]:
        with self._unavailable("unfinished_runs"):
            ids = [
                _raw(i).decode() for i in await self._redis().zrange(self._key("unfinished"), 0, -1)
            ]
            states: list[RunState] = []
            for start in range(0, len(ids), _BATCH):
                batch = ids[start : start + _BATCH]
                async with self._redis().pipeline(transaction=False) as pipe:
                    for sid in batch:
                        pipe.hgetall(self._key("run:", sid))
                    found = await pipe.execute()
                # a run deleted between the two reads is simply absent
                states += [_state(sid, f) for sid, f in zip(batch, found, strict=True) if f]
        return states

    async def end_run(self, stream_id: str, terminal: Terminal) -> bool:
        keys = [self._key("run:", stream_id), self._key("unfinished"), self._key("ended")]
        fields = [
            "tphase",
            terminal.phase,
            "tmsg",
            terminal.message,
            "tended",
            repr(terminal.ended_at),
        ]
        if terminal.code is not None:
            fields += ["tcode", terminal.code]
        with self._unavailable("end_run"):
            status = await self._script("end")(
                keys=keys, args=[stream_id, repr(terminal.ended_at), *fields]
            )
        if status == -1:
            raise StreamNotFound(stream_id)
        return bool(status == 1)

    # -- chunks and checkpoints ------------------------------------------------

    async def append(
        self,
        stream_id: str,
        chunks: Sequence[StoredChunk],
        *,
        checkpoint: Checkpoint | None = None,
    ) -> int:
        args: list[str | bytes | int] = (
            ["1", checkpoint.seq, checkpoint.state] if checkpoint else ["0", 0, b""]
        )
        for chunk in chunks:
            args += [int(chunk.seq), chunk.record]
        keys = [self._key("run:", stream_id), self._key("chunks:", stream_id)]
        with self._unavailable("append"):
            status, value = await self._script("append")(keys=keys, args=args)
        if status == -1:
            raise StreamNotFound(stream_id)
        if status == 0:
            # The script refused against this last seq: the shared rule check
            # gives the same message every other backend gives.
            check_append(stream_id, int(value), chunks, checkpoint)
            raise ValueError(f"stream {stream_id}: the append breaks the seq rules")
        written = int(value)
        self._counters.appended(len(chunks), written, checkpoint=checkpoint is not None)
        return written

    async def read(self, stream_id: str, from_seq: int, limit: int) -> list[StoredChunk]:
        if limit <= 0:
            return []
        start = f"{from_seq}-1" if from_seq >= 0 else "-"
        with self._unavailable("read"):
            entries = await self._redis().xrange(
                self._key("chunks:", stream_id), min=start, max="+", count=limit
            )
        return [_chunk(eid, body) for eid, body in entries or ()]

    async def delete_runs(self, ended_before: float, limit: int) -> int:
        if limit <= 0:
            return 0
        with self._unavailable("delete_runs"):
            deleted = await self._script("delete")(
                keys=[self._key("ended")], args=[self._prefix, repr(ended_before), limit]
            )
        return int(deleted)

    # -- WebSocket sessions ----------------------------------------------------

    async def put_session(self, session_id: str, record: bytes, expires_at: float) -> None:
        key = self._key("session:", session_id)
        at_ms = int(expires_at * 1000)
        with self._unavailable("put_session"):
            if at_ms <= 0:
                await self._redis().delete(key)
            else:
                # PXAT in the past stores nothing readable: the key expires at once
                await self._redis().set(key, record, pxat=at_ms)

    async def get_session(self, session_id: str) -> bytes | None:
        with self._unavailable("get_session"):
            record = await self._redis().get(self._key("session:", session_id))
        return None if record is None else _raw(record)

    async def delete_session(self, session_id: str) -> None:
        with self._unavailable("delete_session"):
            await self._redis().delete(self._key("session:", session_id))

    # -- connector positions (icefloe.store.positions_redis) ---------------------

    async def put_position(self, namespace: str, key: str, value: bytes) -> None:
        check_position(namespace, key, value)
        with self._unavailable("put_position"):
            await positions_redis.put_position(
                self._redis(), self._key("pos:", namespace), key, value
            )

    async def get_position(self, namespace: str, key: str) -> bytes | None:
        check_position(namespace, key)
        with self._unavailable("get_position"):
            return await positions_redis.get_position(
                self._redis(), self._key("pos:", namespace), key
            )

    async def positions(self, namespace: str) -> dict[str, bytes]:
        check_position(namespace)
        with self._unavailable("positions"):
            return await positions_redis.all_positions(self._redis(), self._key("pos:", namespace))

    def statistics(self) -> StoreStatistics:
        """This store object's counters since it was made (not the server's)."""
        return self._counters.statistics()

    # -- helpers ---------------------------------------------------------------

    def _key(self, kind: str, name: str = "") -> str:
        return f"{self._prefix}{kind}{name}"

    def _redis(self) -> Redis:
        if self._client is None:
            raise StoreUnavailable(f"{self.name}: the store is not open")
        return self._client

    def _script(self, name: str) -> AsyncScript:
        self._redis()
        return self._scripts[name]

    def _unavailable(self, operation: str) -> AbstractContextManager[None]:
        return as_unavailable(self.name, operation, self._errors)


def _check_url(url: str) -> None:
    """Refuse what redis-py would only refuse at connect time, naming the URL."""
    parts = check_url(url, "Redis", ("redis", "rediss"))
    if not re.fullmatch(r"/?\d*", parts.path):
        raise ValueError(f"the database in a Redis store URL is a number (/0), not {parts.path!r}")


def _run_fields(run: RunRecord) -> list[str | bytes]:
    return [
        "trace",
        run.trace_id,
        "tenant",
        run.tenant,
        "rel",
        run.reliability.value,
        "targets",
        json.dumps(list(run.targets)),
        "msg",
        run.message,
        "created",
        repr(run.created_at),
        "last",
        "-1",
    ]


def _state(stream_id: str, raw: dict[Any, Any]) -> RunState:
    f = {_raw(k).decode(): _raw(v) for k, v in raw.items()}
    run = RunRecord(
        stream_id,
        f["trace"].decode(),
        f["tenant"].decode(),
        Reliability(f["rel"].decode()),
        tuple(json.loads(f["targets"])),
        f["msg"],
        float(f["created"]),
    )
    terminal = None
    if "tphase" in f:
        code = f["tcode"].decode() if "tcode" in f else None
        terminal = Terminal(f["tphase"].decode(), code, f["tmsg"].decode(), float(f["tended"]))
    checkpoint = Checkpoint(int(f["cpseq"]), f["cpstate"]) if "cpseq" in f else None
    return RunState(run, int(f["last"]), terminal, checkpoint)


def _raw(reply: object) -> bytes:
    """A reply as bytes (the client returns bytes; typed more loosely)."""
    if isinstance(reply, bytes):
        return reply
    if isinstance(reply, str):
        return reply.encode()
    raise StoreUnavailable(f"Redis answered {type(reply).__name__} where bytes were expected")


def _chunk(entry_id: object, body: dict[Any, Any] | None) -> StoredChunk:
    """A chunk from its stream entry (ID ``<seq>-1``, field ``r``)."""
    if not body:
        raise StoreUnavailable(f"Redis answered an empty stream entry {entry_id!r}")
    return StoredChunk(int(_raw(entry_id).split(b"-")[0]), _raw(body[b"r"]))
