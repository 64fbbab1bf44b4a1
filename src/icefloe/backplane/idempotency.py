"""Idempotency keys claimed across gateways (issue 12).

With a backplane, ``POST /v1/streams`` and the WebSocket ``start`` claim
their ``idempotency_key`` in Redis before the run starts: one ``SET NX PX``
of ``P idem:<n>:<tenant>:<key>`` to the stream id the request would start.
Redis answers exactly one claimer of a key, whichever gateway it reached;
every other request, on any gateway, reads the winner's stream id and starts
nothing. The key lives as long as the edge remembers a key locally
(``idempotency_ttl_s``, 600 s by default), scoped by tenant as locally.

A start that is refused after the claim (admission, the store) releases the
key if it still names its stream, so a retry may start the run.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from icefloe.backplane.keys import Keys

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["SHARED_POLL_S", "SHARED_WAIT_S", "IdempotencyClaims"]

#: seconds a request that lost the claim waits for the winner's stream to be shared
SHARED_WAIT_S: Final = 2.0
#: seconds between two looks at the winner's stream meanwhile
SHARED_POLL_S: Final = 0.01

# KEYS[1] the key; ARGV[1] the stream id that claimed it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class IdempotencyClaims:
    """Claims of idempotency keys in one Redis, shared by every gateway."""

    def __init__(self, client: Callable[[], Redis], keys: Keys, ttl_s: float) -> None:
        self._client = client
        self._keys = keys
        self._ttl_ms = max(1, math.ceil(ttl_s * 1000))

    async def claim(self, tenant: str, key: str, stream_id: str) -> str | None:
        """Claim ``key`` of ``tenant`` for ``stream_id``; None: claimed, start the
        run; else the stream id of the request that claimed it first.

        The claimer's id is answered once its stream is readable on every
        gateway (its meta hash exists), waiting at most :data:`SHARED_WAIT_S`:
        a client reading the answer through the load balancer must not find
        nothing. If the claimer's start is refused meanwhile (its claim is
        gone), this request claims the key itself.
        """
        client = self._client()
        name = self._keys.idempotency(tenant, key)
        deadline = time.monotonic() + SHARED_WAIT_S
        while True:
            if await client.set(name, stream_id, nx=True, px=self._ttl_ms):
                return None
            raw: Any = await client.get(name)
            if raw is None:
                continue  # expired or released between the two: claim it again
            held = _text(raw)
            if await client.exists(self._keys.meta(held)) or time.monotonic() >= deadline:
                return held
            await asyncio.sleep(SHARED_POLL_S)

    async def settle(self, tenant: str, key: str, stream_id: str) -> None:
        """The key names ``stream_id`` after all (the store's winner, issue 11)."""
        name = self._keys.idempotency(tenant, key)
        await self._client().set(name, stream_id, xx=True, keepttl=True)

    async def release(self, tenant: str, key: str, stream_id: str) -> None:
        """Forget a claim whose start was refused (if it still names ``stream_id``)."""
        client = self._client()
        await client.eval(_RELEASE, 1, self._keys.idempotency(tenant, key), stream_id)
