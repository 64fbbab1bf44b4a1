"""Each tenant's running streams counted across gateways (issue 12).

``--max-streams-per-tenant`` (``Limits.max_streams_per_tenant``) caps a
tenant's running streams per process; with a backplane it also caps them
across every gateway. One sorted set per tenant, ``P runs:<n>:<tenant>``,
holds the stream ids its gateways run, each scored with the time (unix ms)
it expires: admitting a stream is one script that drops the expired ids,
counts the rest and adds the new one if the count is under the cap.

Entries are leases, not counters: the producing gateway renews its streams'
every :data:`~icefloe.backplane.publisher.RUNNING_TTL_S` / 3 seconds (the
backplane's keepalive) and removes each when it ends; a gateway that dies
stops renewing, and its streams stop counting at most
:data:`~icefloe.backplane.publisher.RUNNING_TTL_S` seconds later. So the
cap may over-count a dead gateway's streams for that long, never under-count
a live one's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from icefloe.backplane.keys import Keys
from icefloe.backplane.publisher import RUNNING_TTL_S

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline

__all__ = ["LEASE_MS", "TenantRuns"]

#: milliseconds a stream counts for its tenant past its last renewal
LEASE_MS: Final = RUNNING_TTL_S * 1000

# KEYS[1] the tenant's set; ARGV: now ms, expiry ms, cap, stream id.
_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2] - ARGV[1])
return 1
"""


class TenantRuns:
    """The running streams of every tenant, across gateways."""

    def __init__(self, client: Callable[[], Redis], keys: Keys) -> None:
        self._client = client
        self._keys = keys

    async def admit(self, tenant: str, stream_id: str, cap: int) -> bool:
        """Count ``stream_id`` for ``tenant`` unless it already runs ``cap`` streams."""
        now = int(time.time() * 1000)
        args: list[Any] = [now, now + LEASE_MS, cap, stream_id]
        admitted: Any = await self._client().eval(_ADMIT, 1, self._keys.tenant_runs(tenant), *args)
        return bool(admitted)

    def renew(self, pipe: Pipeline, tenant: str, stream_id: str) -> None:
        """Queue the renewal of a running stream's lease on ``pipe``."""
        now = int(time.time() * 1000)
        key = self._keys.tenant_runs(tenant)
        pipe.zadd(key, {stream_id: now + LEASE_MS}, xx=True)
        pipe.pexpire(key, LEASE_MS)

    async def finish(self, tenant: str, stream_id: str) -> None:
        """``stream_id`` no longer runs (or never started)."""
        await self._client().zrem(self._keys.tenant_runs(tenant), stream_id)
