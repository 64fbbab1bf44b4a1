"""The Redis store against the real server: every rule of the protocol, its
key layout and expiry, and outages (see netservers.py for the server)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest
import redis.asyncio
from netservers import REDIS_URL, UNREACHABLE, TcpProxy, unreachable
from redis.exceptions import RedisError
from storeoutages import a_silent_server_times_out, no_server_is_store_unavailable
from storerules import RULES, Make, Rule, chunks, run_record

from icefloe.store import Checkpoint, Store, StoreUnavailable, Terminal, open_store
from icefloe.store.redis import RedisStore
from storecheck import CHECKS, Backend

BOUND_S = 60.0


@pytest.fixture
async def admin() -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        await client.ping()
    except (RedisError, *UNREACHABLE) as exc:
        await client.aclose()
        unreachable("Redis", REDIS_URL, exc)
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"icefloe-test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def make(admin: redis.asyncio.Redis, prefix: str) -> AsyncIterator[Make]:
    """New opened stores over one per-test prefix; closes them and deletes its keys."""
    made: list[RedisStore] = []

    async def new() -> RedisStore:
        store = RedisStore.from_url(f"{REDIS_URL}?prefix={quote(prefix)}")
        made.append(store)
        await store.open()
        return store

    yield new
    for store in made:
        await store.close()
    keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
    if keys:
        await admin.delete(*keys)


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
async def test_protocol_rule(rule: Rule, make: Make) -> None:
    async with asyncio.timeout(BOUND_S):
        await rule(make)


async def test_keys_follow_the_documented_layout(
    make: Make, admin: redis.asyncio.Redis, prefix: str
) -> None:
    store = await make()
    await store.create_run(run_record("s"), idempotency_key="acme/k", key_ttl_s=60)
    await store.append("s", chunks(0, 1), checkpoint=Checkpoint(1, b"st"))
    await store.put_session("w", b"sess", time.time() + 600)
    await store.create_run(run_record("e", at=2.0))
    await store.end_run("e", Terminal("done", None, "", 7.0))
    keys = {key.decode()[len(prefix) :]: key async for key in admin.scan_iter(match=f"{prefix}*")}
    assert set(keys) == {
        "run:s",
        "run:e",
        "chunks:s",
        "unfinished",
        "ended",
        "key:acme/k",
        "session:w",
    }
    types = {name: (await admin.type(key)).decode() for name, key in keys.items()}
    assert types == {
        "run:s": "hash",
        "run:e": "hash",
        "chunks:s": "stream",
        "unfinished": "zset",
        "ended": "zset",
        "key:acme/k": "string",
        "session:w": "string",
    }
    entries = await admin.xrange(keys["chunks:s"])
    assert [(eid, body) for eid, body in entries] == [
        (b"0-1", {b"r": b"c0"}),
        (b"1-1", {b"r": b"c1"}),
    ]
    run = await admin.hgetall(keys["run:s"])
    assert run[b"last"] == b"1"
    assert (run[b"cpseq"], run[b"cpstate"], run[b"key"]) == (b"1", b"st", b"acme/k")
    assert json.loads(run[b"targets"]) == ["entry", "b"]
    assert await admin.zrange(keys["unfinished"], 0, -1, withscores=True) == [(b"s", 1.0)]
    assert await admin.zrange(keys["ended"], 0, -1, withscores=True) == [(b"e", 7.0)]
    assert 0 < await admin.pttl(keys["key:acme/k"]) <= 60_000
    assert 0 < await admin.pttl(keys["session:w"]) <= 600_000
    assert await admin.pttl(keys["run:s"]) == -1  # runs live until retention


def _redis_at(port: int, timeout_s: float) -> RedisStore:
    return RedisStore(f"redis://127.0.0.1:{port}/0", timeout_s=timeout_s)


async def test_a_store_with_no_server_raises_store_unavailable() -> None:
    await no_server_is_store_unavailable(_redis_at)


async def test_a_server_that_never_answers_times_out() -> None:
    await a_silent_server_times_out(_redis_at)


async def test_an_outage_mid_run_raises_store_unavailable_then_recovers(
    admin: redis.asyncio.Redis, prefix: str
) -> None:
    host, port = "127.0.0.1", admin.get_connection_kwargs()["port"]
    async with TcpProxy(host, port) as proxy, asyncio.timeout(BOUND_S):
        db = admin.get_connection_kwargs().get("db", 0)
        store = RedisStore(
            f"redis://127.0.0.1:{proxy.listen_port}/{db}", prefix=prefix, timeout_s=1
        )
        await store.open()
        try:
            await store.create_run(run_record("s"))
            await store.append("s", chunks(0, 1))
            proxy.cut()
            with pytest.raises(StoreUnavailable, match="append failed"):
                await store.append("s", chunks(2, 3))
            with pytest.raises(StoreUnavailable):
                await store.get_run("s")
            proxy.restore()
            # the client reconnects on the next call; nothing was half-written
            assert await store.append("s", chunks(2, 3)) == 2
            assert await store.read("s", 0, 10) == chunks(0, 3)
        finally:
            await store.close()
            keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
            if keys:
                await admin.delete(*keys)


def test_the_url_names_the_prefix_and_hides_the_password() -> None:
    store = open_store("redis://:s3cret@127.0.0.1:6379/2?prefix=app%3A")
    assert isinstance(store, RedisStore)
    assert store.prefix == "app:"
    assert "s3cret" not in store.name
    assert store.name == "redis://127.0.0.1:6379/2 (prefix app:)"
    assert RedisStore.from_url("redis://127.0.0.1").prefix == "icefloe:"
    with pytest.raises(ValueError, match="prefix"):
        RedisStore.from_url("redis://127.0.0.1/0?prefix=")
    with pytest.raises(ValueError, match="timeout_s"):
        RedisStore("redis://127.0.0.1/0", timeout_s=0)
    for bad, says in (
        ("redis://:s3cret@127.0.0.1:port/0", "port in the store URL's '127.0.0.1:port'"),
        ("redis://:s3cret@127.0.0.1:6379/zero", "database in a Redis store URL"),
        ("http://:s3cret@127.0.0.1:6379/0", "starts redis://"),
    ):
        with pytest.raises(ValueError, match=re.escape(says)) as refused:
            RedisStore.from_url(bad)
        assert "s3cret" not in str(refused.value)


def test_importing_the_store_loads_no_client_library() -> None:
    script = (
        "import json, sys\n"
        "import icefloe, icefloe.store\n"
        "print(json.dumps([m for m in ('redis', 'asyncpg') if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_conformance(check: object, admin: redis.asyncio.Redis, prefix: str) -> None:
    """The shared conformance suite (tests/storecheck.py), each store under its own prefix."""
    made: list[RedisStore] = []

    async def open_at(sub: str) -> RedisStore:
        store = RedisStore.from_url(f"{REDIS_URL}?prefix={quote(sub)}")
        made.append(store)
        await store.open()
        return store

    async def make() -> Store:
        return await open_at(f"{prefix}{len(made)}:")

    async def reopen(store: Store) -> Store:
        assert isinstance(store, RedisStore)
        await store.close()
        return await open_at(store.prefix)

    assert callable(check)
    try:
        async with asyncio.timeout(BOUND_S):
            await check(Backend(make, reopen))
    finally:
        for store in made:
            await store.close()
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)
