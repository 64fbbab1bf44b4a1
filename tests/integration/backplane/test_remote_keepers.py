"""The backplane's shared records on the machine's Redis (issue 12): session
keeping, idempotency claims and each tenant's running streams."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cluster import REDIS_URL

from icefloe.backplane.idempotency import IdempotencyClaims
from icefloe.backplane.keys import Keys
from icefloe.backplane.sessions import RedisSessionKeeper
from icefloe.backplane.tenants import TenantRuns


@pytest.fixture
async def redis() -> AsyncIterator[tuple[Any, Keys]]:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except OSError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    keys = Keys(f"icefloe:test:{uuid.uuid4().hex[:10]}:")
    try:
        yield client, keys
    finally:
        found = [k async for k in client.scan_iter(match=f"{keys.prefix}*", count=1000)]
        if found:
            await client.delete(*found)
        await client.aclose()


async def test_only_the_holder_writes_a_session_and_a_detached_one_is_taken(
    redis: tuple[Any, Keys],
) -> None:
    client, keys = redis
    owner = "t\x00u"
    a = RedisSessionKeeper(client, keys.prefix, keys.control, "proc-a")
    b = RedisSessionKeeper(client, keys.prefix, keys.control, "proc-b")
    await a.put("s1", b"acks-1", owner, False, 60)
    assert not await b.hold("s1")
    assert await a.hold("s1")  # resumed on a again: attached
    await a.put("s1", b"acks-2", owner, False, 60)  # a's connection parks it
    assert await b.take("s1", "other\x00owner") is None  # another owner's: untouched
    assert await b.take("s1", owner) == b"acks-2"  # detached: claimed at once
    assert await b.hold("s1")
    await a.put("s1", b"stale", owner, False, 60)  # a lost it: refused
    await a.delete("s1")
    assert await b.take("s1", owner) == b"acks-2"
    assert await b.take("nope", owner) is None


async def test_a_take_of_an_attached_session_waits_for_its_holder_to_park_it(
    redis: tuple[Any, Keys],
) -> None:
    client, keys = redis
    owner = "t\x00u"
    a = RedisSessionKeeper(client, keys.prefix, keys.control, "proc-a")
    b = RedisSessionKeeper(client, keys.prefix, keys.control, "proc-b")
    await a.put("s1", b"acks-1", owner, True, 60)
    taking = asyncio.ensure_future(b.take("s1", owner))
    async with asyncio.timeout(5):
        while not await client.xlen(keys.control):
            await asyncio.sleep(0.01)  # b asks the holder to let go
    entries = await client.xrange(keys.control)
    assert entries[-1][1] == {b"session": b"s1", b"by": b"proc-b"}
    assert not taking.done()
    await a.put("s1", b"acks-2", owner, False, 60)  # a closes its connection, parks
    assert await asyncio.wait_for(taking, 5) == b"acks-2"


async def test_one_claim_per_tenant_and_key_and_a_refused_start_releases_it(
    redis: tuple[Any, Keys],
) -> None:
    client, keys = redis
    claims = IdempotencyClaims(lambda: client, keys, 60)
    assert await claims.claim("t", "k", "s1") is None
    # The winner's stream is shared (its meta exists): the others get its id.
    await client.hset(keys.meta("s1"), mapping={"tenant": "t"})
    assert await claims.claim("t", "k", "s2") == "s1"
    assert await claims.claim("u", "k", "s3") is None  # another tenant's key
    await claims.release("t", "k", "s2")  # not the holder: nothing happens
    assert await claims.claim("t", "k", "s4") == "s1"
    await claims.release("t", "k", "s1")
    assert await claims.claim("t", "k", "s5") is None


async def test_a_tenants_running_streams_are_capped_and_expire(
    redis: tuple[Any, Keys],
) -> None:
    client, keys = redis
    runs = TenantRuns(lambda: client, keys)
    assert await runs.admit("t", "s1", 2)
    assert await runs.admit("t", "s2", 2)
    assert not await runs.admit("t", "s3", 2)
    assert await runs.admit("u", "s4", 2)
    await runs.finish("t", "s1")
    assert await runs.admit("t", "s3", 2)
    # A lease nobody renews (its gateway died) stops counting once expired.
    await client.zadd(keys.tenant_runs("t"), {"s2": 1})
    assert await runs.admit("t", "s5", 2)
    assert not await runs.admit("t", "s6", 2)
