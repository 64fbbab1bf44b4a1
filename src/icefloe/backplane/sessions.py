"""WebSocket sessions kept in the backplane's Redis, so they resume on any gateway.

:class:`RedisSessionKeeper` is the edge's
:class:`~icefloe.transport.ws_keeper.SessionKeeper` when it has a backplane:
one hash ``P ws:<session id>`` per session (fields ``b`` the session's blob,
``o`` its owner key, ``h`` the process holding it, ``a`` ``1`` while a
connection holds it), expiring ``ttl_s`` (``--session-ttl``) after its last
write once detached, :data:`HELD_TTL_S` while a connection holds it.

Only the holder writes: a process that lost the session (it was resumed on
another gateway) cannot overwrite the newer state with its own. A resume on
the process holding the session marks it attached (``a`` ``1``) before it
answers; a resume on a process that does not hold it *takes* it:

* detached elsewhere: the hash is claimed (``h`` set to this process, if it
  still names the old holder) and its acks are the resume point;
* attached elsewhere (the client reconnected before that gateway saw the old
  socket die): a ``session`` request on the control log asks the holder to
  close its connection (4000) and park the session, which writes its last
  acks; the taker waits for that at most :data:`TAKE_WAIT_S`, polling every
  :data:`TAKE_POLL_S`, then claims the session as it is (a holder that died
  wrote its acks up to its last write: the chunks after them are sent again).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["HELD_TTL_S", "TAKE_POLL_S", "TAKE_WAIT_S", "RedisSessionKeeper"]

#: seconds a resume waits for the gateway holding the session to let it go
TAKE_WAIT_S: Final = 1.0
#: seconds between two looks at the session while waiting
TAKE_POLL_S: Final = 0.02
#: seconds a session a connection holds lives past its last write (a detached
#: one: ``--session-ttl``): long enough for an idle connection, and for a
#: resume elsewhere after its gateway died
HELD_TTL_S: Final = 600
#: cancel and session requests the control log keeps (as the engine's)
_CONTROL_MAXLEN: Final = 1000

# KEYS[1] the hash; ARGV: holder, blob, owner, attached, ttl seconds.
_PUT = """
local h = redis.call('HGET', KEYS[1], 'h')
if h and h ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'h', ARGV[1], 'b', ARGV[2], 'o', ARGV[3], 'a', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""
# KEYS[1] the hash; ARGV: this process, the holder seen (empty: any), held ttl.
_CLAIM = """
local h = redis.call('HGET', KEYS[1], 'h')
if not h then return nil end
if ARGV[2] ~= '' and h ~= ARGV[2] then return nil end
redis.call('HSET', KEYS[1], 'h', ARGV[1], 'a', '1')
redis.call('EXPIRE', KEYS[1], ARGV[3])
return redis.call('HGET', KEYS[1], 'b')
"""
# KEYS[1] the hash; ARGV: this process, held ttl.
_HOLD = """
local h = redis.call('HGET', KEYS[1], 'h')
if h and h ~= ARGV[1] then return 0 end
if h then
  redis.call('HSET', KEYS[1], 'a', '1')
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
"""
# KEYS[1] the hash; ARGV[1] this process.
_DELETE = """
local h = redis.call('HGET', KEYS[1], 'h')
if h and h ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisSessionKeeper:
    """Sessions of every gateway in one Redis (see the module docstring)."""

    def __init__(self, client: Redis, prefix: str, control: str, process_id: str) -> None:
        self._client = client
        self._prefix = prefix
        self._control = control
        self._me = process_id
        self._put = client.register_script(_PUT)
        self._claim = client.register_script(_CLAIM)
        self._delete = client.register_script(_DELETE)
        self._hold = client.register_script(_HOLD)

    def _key(self, session_id: str) -> str:
        return f"{self._prefix}ws:{session_id}"

    async def put(
        self, session_id: str, blob: bytes, owner: str, attached: bool, ttl_s: float
    ) -> None:
        args: list[bytes | str | int] = [
            self._me,
            blob,
            owner,
            "1" if attached else "0",
            HELD_TTL_S if attached else max(1, math.ceil(ttl_s)),
        ]
        await self._put(keys=[self._key(session_id)], args=args)

    async def delete(self, session_id: str) -> None:
        await self._delete(keys=[self._key(session_id)], args=[self._me])

    async def hold(self, session_id: str) -> bool:
        # Marked attached before the resume answers: a take elsewhere from now
        # on waits for this process to park it, with its last acks.
        held: Any = await self._hold(keys=[self._key(session_id)], args=[self._me, HELD_TTL_S])
        return bool(held)

    async def take(self, session_id: str, owner: str) -> bytes | None:
        key = self._key(session_id)
        deadline = time.monotonic() + TAKE_WAIT_S
        asked = False
        while True:
            raw: Any = await self._client.hgetall(key)
            fields = {_text(k): v for k, v in raw.items()}
            if not fields or _text(fields.get("o", b"")) != owner:
                return None  # unknown, expired or another owner's: nothing changes
            holder = _text(fields.get("h", b""))
            attached = _text(fields.get("a", b"0")) == "1"
            if holder == self._me or not attached or time.monotonic() >= deadline:
                blob: Any = await self._claim(keys=[key], args=[self._me, holder, HELD_TTL_S])
                if blob is not None:
                    return bytes(blob)
                continue  # another process claimed it meanwhile: look again
            if not asked:
                # The holder closes its connection (4000) and parks the session.
                await self._client.xadd(
                    self._control,
                    {"session": session_id, "by": self._me},
                    maxlen=_CONTROL_MAXLEN,
                    approximate=True,
                )
                asked = True
            await asyncio.sleep(TAKE_POLL_S)
