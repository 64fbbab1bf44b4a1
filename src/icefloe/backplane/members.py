"""Who is alive: every gateway and worker beats into the engine.

Each process (role ``gateway`` or ``worker``) calls :meth:`Members.beat`
about every :data:`BEAT_S`: one pipeline writing ``P member:<id>`` (its
stats as JSON, expiring after :data:`MEMBER_TTL_S`) and its beat time in the
``P members`` sorted set. :meth:`Members.alive` reads the processes that beat
within the TTL; a process that stops beating (killed, partitioned) drops out
after at most :data:`MEMBER_TTL_S`, one that stops cleanly leaves at once
(:meth:`Members.leave`). :func:`beat_forever` is the loop both roles run.

A record is ``{"id", "role", "beat_ms", ...stats}``; the stats a process
reports are its own business, by convention ``started`` (unix s),
``address``, ``load`` (``normal``/``congested``/``overloaded``),
``draining``, ``connections``, ``streams`` and ``runs_running``
(docs/deploy.md, "Cluster view").

Limits: :data:`MAX_MEMBERS` processes read by one :meth:`Members.alive`;
a record's stats are whatever the process sends (kept small by the callers).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from icefloe.backplane.keys import Keys

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["BEAT_S", "MAX_MEMBERS", "MEMBER_TTL_S", "ROLES", "Members", "beat_forever"]

log = logging.getLogger("icefloe.backplane")

#: seconds between two heartbeats of a process
BEAT_S: Final = 1.0
#: seconds a heartbeat counts: a process silent for longer is gone
MEMBER_TTL_S: Final = 5.0
#: processes one :meth:`Members.alive` reads at most (the most recent beats)
MAX_MEMBERS: Final = 1000
#: the roles a process may have
ROLES: Final = ("gateway", "worker")


class Members:
    """The membership registry on one Redis server, under ``keys``' prefix."""

    def __init__(self, client: Redis, keys: Keys, *, ttl_s: float = MEMBER_TTL_S) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s!r}")
        self._client = client
        self._keys = keys
        self._ttl_ms = int(ttl_s * 1000)

    async def beat(self, process_id: str, role: str, stats: Mapping[str, Any]) -> None:
        """Say that ``process_id`` (a ``role``) is alive, with ``stats``.

        :raises ValueError: an unknown role.
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        now_ms = int(time.time() * 1000)
        record = {**stats, "id": process_id, "role": role, "beat_ms": now_ms}
        pipe = self._client.pipeline(transaction=False)
        pipe.set(self._keys.member(process_id), json.dumps(record), px=self._ttl_ms)
        pipe.zadd(self._keys.members, {process_id: now_ms})
        await pipe.execute()

    async def leave(self, process_id: str) -> None:
        """``process_id`` stops: it is no longer listed (before its TTL ends)."""
        pipe = self._client.pipeline(transaction=False)
        pipe.delete(self._keys.member(process_id))
        pipe.zrem(self._keys.members, process_id)
        await pipe.execute()

    async def alive(self) -> list[dict[str, Any]]:
        """The records of the processes that beat within the TTL, by id."""
        client = self._client
        now_ms = int(time.time() * 1000)
        # The set is trimmed here: whoever reads pays for the dead.
        await client.zremrangebyscore(self._keys.members, "-inf", now_ms - self._ttl_ms)
        ids: Any = await client.zrevrangebyscore(
            self._keys.members, "+inf", now_ms - self._ttl_ms, start=0, num=MAX_MEMBERS
        )
        if not ids:
            return []
        raws: Any = await client.mget([self._keys.member(raw.decode()) for raw in ids])
        found: list[dict[str, Any]] = []
        for raw in raws:
            if raw is None:  # expired between the two reads
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                continue  # not ours to fail on: a bad record is not a member
            if isinstance(record, dict):
                found.append(record)
        return sorted(found, key=lambda r: str(r.get("id")))


async def beat_forever(
    members: Members,
    process_id: str,
    role: str,
    stats: Callable[[], Mapping[str, Any]],
    *,
    every_s: float = BEAT_S,
    after_beat: Callable[[], Any] | None = None,
) -> None:
    """Beat every ``every_s`` until cancelled, then leave.

    A failed beat is logged once per outage and tried again at the next
    tick: the engine's own reconnect is the retry. ``after_beat`` (a
    coroutine function, or None) runs after each beat that went through
    (a gateway refreshes its cluster view there).
    """
    failing = False
    try:
        while True:
            try:
                await members.beat(process_id, role, stats())
                if after_beat is not None:
                    await after_beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.warning("membership heartbeat failed: %r", exc)
                failing = True
            else:
                failing = False
            await asyncio.sleep(every_s)
    finally:
        try:
            async with asyncio.timeout(1.0):
                await members.leave(process_id)
        except Exception:  # the engine is away: the TTL removes us
            log.debug("leaving the membership failed", exc_info=True)
