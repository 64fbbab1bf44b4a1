"""Hub topic history in Redis (see :mod:`icefloe.store.topics`).

Keys (``P`` is the store's prefix, ``icefloe:`` unless the URL's
``prefix`` says otherwise; ``<t>`` is ``len(tenant):tenant:topic``)::

    P topic:<t>        ZSET   the topic's records, scored by offset
    P topic:<t>:meta   HASH   tenant, topic, epoch
    P topics           ZSET   the topics' ZSET keys by last append (unix ms), for the
                              load at start; entries idle past ``idle_s`` are removed
                              by every append

One Lua script per topic and batch appends, drops the records of another
epoch and trims to ``max_items`` and ``max_bytes`` (oldest first); both
keys expire after ``idle_s`` without an append (an idle topic is dropped,
as the hub drops it). Durability is the server's (AOF ``appendfsync``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from icefloe.store.protocol import StoreUnavailable
from icefloe.store.remote import split_options
from icefloe.store.topics import Retention, TopicRecord

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisTopicStore"]

_APPEND = """
-- KEYS: records zset, meta hash, index zset. ARGV: tenant, topic, epoch,
-- max_items, max_bytes, idle ms, now ms, then offset, record pairs in order.
if redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[3] then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'tenant', ARGV[1], 'topic', ARGV[2], 'epoch', ARGV[3])
end
for i = 8, #ARGV, 2 do
  -- one record per offset: an offset written again replaces the old record
  redis.call('ZREMRANGEBYSCORE', KEYS[1], ARGV[i], ARGV[i])
  redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[4]) + 1))
local newest = redis.call('ZREVRANGE', KEYS[1], 0, -1)
local total, limit = 0, tonumber(ARGV[5])
for i, record in ipairs(newest) do
  total = total + #record
  if total > limit then
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, #newest - i)
    break
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[7], KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. (tonumber(ARGV[7]) - tonumber(ARGV[6])))
return #newest
"""


#: topics whose records one pipelined load round trip fetches
_LOAD_BATCH = 500


class RedisTopicStore:
    """Hub topic history in Redis (see the module docstring)."""

    def __init__(self, url: str, *, prefix: str = "icefloe:") -> None:
        self._url = url
        self._prefix = prefix
        self._client: Redis | None = None
        self._sha = hashlib.sha1(_APPEND.encode()).hexdigest()

    @classmethod
    def from_url(cls, url: str) -> RedisTopicStore:
        """``redis://host:port/db[?prefix=P]``, as the run store reads it."""
        rest, ours = split_options(url, ("prefix",))
        return cls(rest, prefix=ours.get("prefix", "icefloe:"))

    @property
    def name(self) -> str:
        return f"redis topics (prefix {self._prefix})"

    def _key(self, tenant: str, topic: str) -> str:
        return f"{self._prefix}topic:{len(tenant)}:{tenant}:{topic}"

    async def open(self) -> None:
        if self._client is not None:
            return
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(self._url, socket_timeout=5.0)
        try:
            await client.ping()
        except Exception as exc:
            await client.aclose()
            raise StoreUnavailable(f"{self.name}: {exc!r}") from exc
        self._client = client
        try:
            await client.script_load(_APPEND)
        except Exception as exc:
            raise StoreUnavailable(f"{self.name}: {exc!r}") from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _live(self) -> Redis:
        if self._client is None:
            raise StoreUnavailable(f"{self.name} is not open")
        return self._client

    async def append(self, records: Sequence[TopicRecord], retention: Retention) -> None:
        client = self._live()
        runs: dict[tuple[str, str], list[TopicRecord]] = {}
        for record in records:
            runs.setdefault((record.tenant, record.topic), []).append(record)
        idle_ms = max(1, int(retention.idle_s * 1000))
        now_ms = int(time.time() * 1000)
        calls: list[tuple[str, list[Any]]] = []
        for (tenant, topic), run in runs.items():
            # A topic reset within the batch: only its last epoch is kept.
            epoch = run[-1].epoch
            key = self._key(tenant, topic)
            args: list[Any] = [tenant, topic, epoch, retention.max_items, retention.max_bytes]
            args += [idle_ms, now_ms]
            for record in run:
                if record.epoch == epoch:
                    args += [record.offset, record.record]
            calls.append((key, args))
        try:
            await self._run(client, calls)
        except Exception as exc:
            raise StoreUnavailable(f"{self.name}: {exc!r}") from exc

    async def _run(self, client: Redis, calls: list[tuple[str, list[Any]]]) -> None:
        # By SHA, in one round trip (a pipeline of registered scripts first asks
        # the server whether they exist); loaded again if the server forgot it.
        from redis.exceptions import NoScriptError

        for attempt in (0, 1):
            pipe = client.pipeline(transaction=False)
            for key, args in calls:
                pipe.evalsha(self._sha, 3, key, key + ":meta", self._index, *args)
            try:
                await pipe.execute()
                return
            except NoScriptError:  # nothing of the batch ran
                if attempt:
                    raise
                await client.script_load(_APPEND)

    @property
    def _index(self) -> str:
        return f"{self._prefix}topics"

    async def load(self, retention: Retention) -> list[TopicRecord]:
        client = self._live()
        now = time.time()
        rows: list[TopicRecord] = []
        try:
            found: list[Any] = await client.zrange(self._index, 0, -1)
            keys = sorted(raw.decode() for raw in found)
            for start in range(0, len(keys), _LOAD_BATCH):
                rows += await self._load_batch(client, keys[start : start + _LOAD_BATCH], now)
        except Exception as exc:
            raise StoreUnavailable(f"{self.name}: {exc!r}") from exc
        return rows

    async def _load_batch(self, client: Redis, keys: list[str], now: float) -> list[TopicRecord]:
        # Two pipelined round trips per batch of topics, not two per topic.
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key + ":meta")
            pipe.zrange(key, 0, -1, withscores=True)
        answers: list[Any] = await pipe.execute()
        rows: list[TopicRecord] = []
        gone: list[str] = []
        for key, meta, entries in zip(keys, answers[::2], answers[1::2], strict=True):
            if not meta:
                gone.append(key)  # expired: idle past idle_s
                continue
            tenant, topic = meta[b"tenant"].decode(), meta[b"topic"].decode()
            epoch = meta[b"epoch"].decode()
            for record, score in entries:
                rows.append(TopicRecord(tenant, topic, epoch, int(score), now, bytes(record)))
        if gone:
            await client.zrem(self._index, *gone)
        return rows
