"""The run queue: starts a ``--no-runs`` gateway hands to the workers (issue 12).

One Redis Stream, ``P runs``, with one consumer group, ``workers``:

* a gateway :meth:`RunQueue.enqueue`\\ s a start: in one script it refuses
  when :data:`MAX_QUEUED` entries are held (``overloaded``), writes the
  stream's meta (state ``queued``, so readers on any gateway can attach at
  once), lists the stream and appends the entry;
* a worker takes new entries with ``XREADGROUP`` (:meth:`RunQueue.claim`)
  and entries whose holder stopped renewing them with ``XAUTOCLAIM``
  (:meth:`RunQueue.reclaim`), then makes itself the stream's owner in its
  meta (:meth:`RunQueue.own`): the owner token is what the fenced appends of
  :mod:`icefloe.backplane.worker_publish` check;
* the lease: a held entry's idle time is reset by its holder every
  :data:`HEARTBEAT_S` (:meth:`RunQueue.renew`); an entry idle longer than
  :data:`LEASE_MS` is another worker's to take. A renewal that finds an
  entry held by someone else reports it lost;
* a run that ends is acknowledged and deleted (:meth:`RunQueue.done`), so
  the stream holds only queued and running starts; a draining worker hands
  its entries back with their idle time set past the lease
  (:meth:`RunQueue.hand_back`), for the next ``XAUTOCLAIM`` of any worker,
  after fencing their streams (:meth:`RunQueue.release`);
* a cancel request (``P control``) reaches a run only once its worker
  produces the stream; one that came earlier (between the take and the
  run's start, or to a worker that died) is found again in the control
  stream by :meth:`RunQueue.cancel_requested`.

:meth:`RunQueue.stats` answers the queue's numbers (``GET /v1/cluster``,
an autoscaler). Every answer of the scripts is checked server-side, so two
workers never both take an entry.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from icefloe.backplane.keys import Keys
from icefloe.backplane.publisher import RUNNING_TTL_S, TTL_S
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import StreamError

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "GROUP",
    "HEARTBEAT_S",
    "LEASE_MS",
    "MAX_QUEUED",
    "QUEUED_TTL_S",
    "Claimed",
    "RunQueue",
]

#: the consumer group every worker reads the queue in
GROUP: Final = "workers"
#: starts the queue holds at most (queued and running); past it a start is
#: refused with ``overloaded`` (HTTP 503, Retry-After)
MAX_QUEUED: Final = 10_000
#: seconds between two renewals of a worker's lease on the entries it holds
HEARTBEAT_S: Final = 1.0
#: milliseconds an entry may go unrenewed before another worker takes it
LEASE_MS: Final = 3000
#: seconds the meta of a queued start lives if no worker takes it
QUEUED_TTL_S: Final = 600
#: the consumer a draining worker hands its entries to (any worker takes them)
HANDOVER: Final = "handover"
#: entries one claim or reclaim takes at most
CLAIM_COUNT: Final = 16
#: pending entries :meth:`RunQueue.stats` inspects for expired leases at most
STATS_SCAN: Final = 1000

_ENQUEUE = """
-- KEYS: runs, meta, streams. ARGV: max, stream id, message, tenant, now ms, ttl
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[2], 'tenant', ARGV[4], 'state', 'queued', 'last_seq', -1, 'owner', '')
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[2])
redis.call('XADD', KEYS[1], '*', 's', ARGV[2], 'm', ARGV[3])
return 1
"""

_OWN = """
-- KEYS: meta. ARGV: owner token, ttl. Answers {state, last_seq} as found.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
local last = redis.call('HGET', KEYS[1], 'last_seq') or '-1'
if state == 'queued' or state == 'running' then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'state', 'running')
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return {state, last}
"""

_CANCEL_QUEUED = """
-- KEYS: meta, log. ARGV: ttl, message. Ends a start no worker took yet.
if redis.call('HGET', KEYS[1], 'state') ~= 'queued' then return 0 end
redis.call('XADD', KEYS[2], '0-1', 't', 'cancelled\\n' .. ARGV[2])
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'code', 'cancelled', 'message', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""

_RENEW = """
-- KEYS: runs, workers, worker hash. ARGV: group, consumer, now ms, ttl s,
-- concurrency, then the entry ids the worker holds. Answers the ids it lost.
local lost = {}
for i = 6, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[3], 'concurrency', ARGV[5], 'running', #ARGV - 5 - #lost)
redis.call('EXPIRE', KEYS[3], ARGV[4])
return lost
"""

_DONE = """
-- KEYS: runs. ARGV: group, consumer, entry id. Acks and deletes the entry if held.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not (p[1] and p[1][2] == ARGV[2]) then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
"""

_RELEASE = """
-- KEYS: meta. ARGV: token. Fences the stream: its owner token is cleared.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'owner', '')
return 1
"""

_HAND_BACK = """
-- KEYS: runs. ARGV: group, consumer, entry id, handover, idle ms.
-- Gives a held entry away, idle past its lease: the next XAUTOCLAIM takes it.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not (p[1] and p[1][2] == ARGV[2]) then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[4], 0, ARGV[3], 'IDLE', ARGV[5], 'JUSTID')
return 1
"""


class Claimed(NamedTuple):
    """One queue entry a worker took."""

    #: the entry's id in ``P runs``
    entry_id: str
    stream_id: str
    #: the start message, as :func:`icefloe.store.records.encode_message` wrote it
    message: bytes
    #: how many times a worker took it (more than 1: taken over)
    deliveries: int = 1


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _claimed(entries: Any) -> list[Claimed]:
    found: list[Claimed] = []
    for raw_id, fields in entries:
        if not fields:
            continue  # deleted while pending: nothing to run
        found.append(Claimed(_text(raw_id), _text(fields[b"s"]), bytes(fields[b"m"])))
    return found


class RunQueue:
    """The run queue under one key prefix, on one Redis client."""

    def __init__(self, client: Redis, keys: Keys, *, max_queued: int = MAX_QUEUED) -> None:
        self._client = client
        self.keys = keys
        #: starts the queue holds at most (queued and running)
        self.max_queued = max_queued
        self._enqueue = client.register_script(_ENQUEUE)
        self._own = client.register_script(_OWN)
        self._cancel_queued = client.register_script(_CANCEL_QUEUED)
        self._renew = client.register_script(_RENEW)
        self._done = client.register_script(_DONE)
        self._release = client.register_script(_RELEASE)
        self._hand_back = client.register_script(_HAND_BACK)

    async def ensure_group(self) -> None:
        """Create the stream and its consumer group unless they exist."""
        from redis.exceptions import ResponseError

        try:
            await self._client.xgroup_create(self.keys.runs, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- gateways -------------------------------------------------------------

    async def enqueue(self, stream_id: str, tenant: str, message: bytes) -> None:
        """Queue a start for the workers; its meta says ``queued`` at once.

        :raises StreamError: ``overloaded``: ``max_queued`` starts are held.
        """
        keys = self.keys
        now_ms = int(time.time() * 1000)
        added = await self._enqueue(
            keys=[keys.runs, keys.meta(stream_id), keys.streams],
            args=[self.max_queued, stream_id, message, tenant, now_ms, QUEUED_TTL_S],
        )
        if not added:
            raise StreamError(ErrorCode.OVERLOADED, "the run queue is full; retry later", stream_id)

    async def cancel_queued(self, stream_id: str) -> bool:
        """End a start no worker took yet with ``cancelled`` (False: it was taken,
        or ended); the worker that takes its entry drops it."""
        keys = self.keys
        why = "cancelled before a worker took it"
        return bool(
            await self._cancel_queued(
                keys=[keys.meta(stream_id), keys.log(stream_id)], args=[TTL_S, why]
            )
        )

    # -- workers --------------------------------------------------------------

    async def claim(self, consumer: str, count: int, block_ms: int) -> list[Claimed]:
        """New entries for ``consumer`` (at most ``count``), waiting up to ``block_ms``."""
        answer: Any = await self._client.xreadgroup(
            GROUP, consumer, {self.keys.runs: ">"}, count=count, block=block_ms
        )
        return _claimed(answer[0][1]) if answer else []

    async def reclaim(self, consumer: str, count: int) -> list[Claimed]:
        """Entries whose lease expired (their worker died or handed them back)."""
        answer: Any = await self._client.xautoclaim(
            self.keys.runs, GROUP, consumer, LEASE_MS, start_id="0-0", count=count
        )
        entries = answer[1]
        gone = answer[2] if len(answer) > 2 else []
        if gone:  # deleted entries still pending: nothing to resume
            await self._client.xack(self.keys.runs, GROUP, *gone)
        taken = _claimed(entries)
        if not taken:
            return taken
        pipe = self._client.pipeline(transaction=False)
        for c in taken:
            pipe.xpending_range(self.keys.runs, GROUP, c.entry_id, c.entry_id, 1)
        counts = [int(p[0]["times_delivered"]) if p else 1 for p in await pipe.execute()]
        return [c._replace(deliveries=n) for c, n in zip(taken, counts, strict=True)]

    async def own(self, stream_id: str, token: str) -> tuple[str, int] | None:
        """Make ``token`` the owner of a queued or running stream.

        Returns the state and last seq its meta held before (None: no meta).
        An ended stream's meta is left as it is.
        """
        found: Any = await self._own(keys=[self.keys.meta(stream_id)], args=[token, RUNNING_TTL_S])
        if not found:
            return None
        return _text(found[0]), int(found[1])

    async def cancel_requested(self, claimed: Claimed) -> bool:
        """Whether a cancel of ``claimed``'s stream was requested since it was queued.

        Redis numbers the queue's entries and the control stream's from the
        same clock, so the requests past the entry's ID are those made since
        (the control stream keeps about its last 1,000).
        """
        entries: Any = await self._client.xrange(self.keys.control, min=claimed.entry_id)
        wanted = claimed.stream_id.encode()
        return any(fields.get(b"cancel") == wanted for _id, fields in entries)

    async def renew(self, consumer: str, entry_ids: list[str], concurrency: int) -> set[str]:
        """Renew the lease on ``entry_ids`` and the worker's heartbeat; the ids lost."""
        keys = self.keys
        now_ms = int(time.time() * 1000)
        ttl_s = max(1, LEASE_MS // 1000)
        lost: Any = await self._renew(
            keys=[keys.runs, keys.workers, keys.worker(consumer)],
            args=[GROUP, consumer, now_ms, ttl_s, concurrency, *entry_ids],
        )
        return {_text(x) for x in lost}

    async def done(self, consumer: str, entry_id: str) -> bool:
        """Acknowledge and delete an entry ``consumer`` holds (False: not held)."""
        return bool(await self._done(keys=[self.keys.runs], args=[GROUP, consumer, entry_id]))

    async def release(self, stream_id: str, token: str) -> bool:
        """Fence a stream: ``token`` owns it no more, and appends with it are
        refused (False: it did not own it)."""
        return bool(await self._release(keys=[self.keys.meta(stream_id)], args=[token]))

    async def hand_back(self, consumer: str, entry_id: str) -> bool:
        """Hand a held entry to the next worker's reclaim (False: not held)."""
        args: list[str | int] = [GROUP, consumer, entry_id, HANDOVER, LEASE_MS * 10]
        return bool(await self._hand_back(keys=[self.keys.runs], args=args))

    async def leave(self, consumer: str) -> None:
        """Forget a worker that stops (its heartbeat and its consumer)."""
        keys = self.keys
        pipe = self._client.pipeline(transaction=False)
        pipe.zrem(keys.workers, consumer)
        pipe.delete(keys.worker(consumer))
        await pipe.execute()

    # -- numbers --------------------------------------------------------------

    async def stats(self) -> dict[str, Any]:
        """The queue's numbers, for ``GET /v1/cluster`` and autoscalers.

        ``{"queued": n, "running": n, "orphaned": n, "limit": max_queued,
        "workers": [{"id", "concurrency", "running", "heartbeat_ms"}, …]}``:
        ``queued`` starts no worker took yet, ``running`` starts a worker
        holds, ``orphaned`` those of them past their lease (a dead worker's,
        or handed back; counted up to :data:`STATS_SCAN`), and each live
        worker (heartbeat within the lease) with how long ago it renewed.
        """
        keys = self.keys
        client = self._client
        now_ms = int(time.time() * 1000)
        await client.zremrangebyscore(keys.workers, "-inf", now_ms - LEASE_MS)
        pipe = client.pipeline(transaction=False)
        pipe.xlen(keys.runs)
        pipe.xpending(keys.runs, GROUP)
        pipe.xpending_range(keys.runs, GROUP, "-", "+", STATS_SCAN, idle=LEASE_MS)
        pipe.zrange(keys.workers, 0, -1, withscores=True)
        try:
            length, pending, expired, members = await pipe.execute()
        except Exception as exc:
            if "NOGROUP" not in str(exc):
                raise
            length, pending, expired, members = 0, {"pending": 0}, [], []
        held = int(pending["pending"])
        workers: list[dict[str, Any]] = []
        if members:
            pipe = client.pipeline(transaction=False)
            for member, _score in members:
                pipe.hgetall(keys.worker(_text(member)))
            for (member, score), raw in zip(members, await pipe.execute(), strict=True):
                fields = {_text(k): _text(v) for k, v in raw.items()}
                workers.append(
                    {
                        "id": _text(member),
                        "concurrency": int(fields.get("concurrency", 0)),
                        "running": int(fields.get("running", 0)),
                        "heartbeat_ms": max(0, now_ms - int(score)),
                    }
                )
        return {
            "queued": max(0, int(length) - held),
            "running": held,
            "orphaned": len(expired),
            "limit": self.max_queued,
            "workers": workers,
        }
