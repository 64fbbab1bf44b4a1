"""The Redis store's connector positions (:mod:`icefloe.store.positions`).

One HASH per namespace, ``P pos:<namespace>``, field = key, value = the
position's bytes: ``HSET`` replaces one, ``HGETALL`` reads a namespace in
one round trip. The functions take the store's client and the hash's key;
:class:`~icefloe.store.redis.RedisStore` turns client errors into
``StoreUnavailable``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["all_positions", "get_position", "put_position"]


def _bytes(reply: object) -> bytes:
    return reply if isinstance(reply, bytes) else str(reply).encode()


async def put_position(client: Any, hash_key: str, key: str, value: bytes) -> None:
    await client.hset(hash_key, key, bytes(value))


async def get_position(client: Any, hash_key: str, key: str) -> bytes | None:
    reply = await client.hget(hash_key, key)
    return None if reply is None else _bytes(reply)


async def all_positions(client: Any, hash_key: str) -> dict[str, bytes]:
    replies = await client.hgetall(hash_key)
    return {_bytes(field).decode(): _bytes(value) for field, value in replies.items()}
