"""The Postgres store against the real server: every rule of the protocol, its
schema, concurrent opens, retention's purge and outages (see netservers.py)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]
import pytest
from netservers import (
    TcpProxy,
    drop_schema,
    postgres_test_url,
)
from storeoutages import a_silent_server_times_out, no_server_is_store_unavailable
from storerules import RULES, Make, Rule, chunks, run_record, until

from icefloe.store import Store, StoreUnavailable, Terminal, open_store
from icefloe.store.postgres import SCHEMA_VERSION, PostgresStore
from storecheck import CHECKS, Backend

BOUND_S = 60.0


@pytest.fixture
async def database() -> str:
    """The test database's URL (created when missing; skips when unreachable)."""
    return await postgres_test_url()


@pytest.fixture
async def schema(database: str) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    await drop_schema(database, name)


@pytest.fixture
async def make(database: str, schema: str) -> AsyncIterator[Make]:
    """New opened stores over one per-test schema; closes them (the schema fixture drops it)."""
    made: list[PostgresStore] = []

    async def new() -> PostgresStore:
        # small pools: other test processes share the server's connection limit
        store = PostgresStore.from_url(f"{database}?schema={schema}&pool_size=4")
        made.append(store)
        await store.open()
        return store

    yield new
    for store in made:
        await store.close()


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
async def test_protocol_rule(rule: Rule, make: Make) -> None:
    async with asyncio.timeout(BOUND_S):
        await rule(make)


async def test_open_creates_the_documented_tables(make: Make, database: str, schema: str) -> None:
    await make()
    await make()  # a second open on an existing schema changes nothing
    conn = await asyncpg.connect(database, timeout=5)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
        assert {t["table_name"] for t in tables} == {
            "icefloe_schema",
            "runs",
            "chunks",
            "idempotency_keys",
            "sessions",
        }
        versions = await conn.fetch(f"SELECT version FROM {schema}.icefloe_schema")
        assert [v["version"] for v in versions] == [SCHEMA_VERSION]
        key = await conn.fetch(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a"
            " ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY a.attnum",
            f"{schema}.chunks",
        )
        assert [k["attname"] for k in key] == ["stream_id", "seq"]
    finally:
        await conn.close()


async def test_processes_opening_together_create_the_schema_once(
    database: str, schema: str
) -> None:
    stores = [PostgresStore.from_url(f"{database}?schema={schema}") for _ in range(6)]
    try:
        async with asyncio.timeout(BOUND_S):
            await asyncio.gather(*(s.open() for s in stores))
            await stores[0].create_run(run_record("s"))
            assert await stores[5].get_run("s") is not None
    finally:
        for store in stores:
            await store.close()
    conn = await asyncpg.connect(database, timeout=5)
    try:
        assert await conn.fetchval(f"SELECT count(*) FROM {schema}.icefloe_schema") == 1
    finally:
        await conn.close()


async def test_a_newer_table_layout_is_refused(make: Make, database: str, schema: str) -> None:
    await make()
    conn = await asyncpg.connect(database, timeout=5)
    try:
        await conn.execute(f"UPDATE {schema}.icefloe_schema SET version = $1", SCHEMA_VERSION + 1)
    finally:
        await conn.close()
    with pytest.raises(StoreUnavailable, match="upgrade icefloe"):
        await make()


async def test_retention_purges_expired_keys_and_sessions(
    make: Make, database: str, schema: str
) -> None:
    store = await make()
    await store.create_run(run_record("s"), idempotency_key="acme/k", key_ttl_s=0.05)
    await store.put_session("w", b"x", time.time() + 0.05)
    await store.put_session("kept", b"x", time.time() + 600)
    conn = await asyncpg.connect(database, timeout=5)
    try:

        async def purged() -> bool:
            await store.delete_runs(ended_before=0.0, limit=100)
            keys = await conn.fetchval(f"SELECT count(*) FROM {schema}.idempotency_keys")
            sessions = await conn.fetch(f"SELECT session_id FROM {schema}.sessions")
            return keys == 0 and [s["session_id"] for s in sessions] == ["kept"]

        await until(purged)
    finally:
        await conn.close()
    assert await store.get_run("s") is not None  # unended runs are never purged


def _postgres_at(port: int, timeout_s: float) -> PostgresStore:
    return PostgresStore(f"postgresql://postgres@127.0.0.1:{port}/x", timeout_s=timeout_s)


async def test_a_store_with_no_server_raises_store_unavailable() -> None:
    await no_server_is_store_unavailable(_postgres_at)


async def test_a_server_that_never_answers_times_out() -> None:
    await a_silent_server_times_out(_postgres_at)


async def test_an_outage_mid_run_raises_store_unavailable_then_recovers(
    database: str, schema: str
) -> None:
    where = urlsplit(database)
    async with TcpProxy(where.hostname or "127.0.0.1", where.port or 5432) as proxy:
        url = where._replace(netloc=f"{where.username}@127.0.0.1:{proxy.listen_port}").geturl()
        store = PostgresStore(url, schema=schema, timeout_s=1, pool_size=2)
        async with asyncio.timeout(BOUND_S):
            await store.open()
            try:
                await store.create_run(run_record("s"))
                await store.append("s", chunks(0, 1))
                proxy.cut()
                with pytest.raises(StoreUnavailable, match="append failed"):
                    await store.append("s", chunks(2, 3))
                proxy.restore()

                async def back() -> bool:
                    try:
                        return await store.append("s", chunks(2, 3)) == 2
                    except StoreUnavailable:
                        return False  # a pooled connection that died in the cut

                await until(back)
                assert await store.read("s", 0, 10) == chunks(0, 3)
            finally:
                await store.close()


def test_the_url_names_the_schema_and_hides_the_password() -> None:
    store = open_store("postgresql://app:s3cret@db.example:5433/icefloe?schema=tenant_a")
    assert isinstance(store, PostgresStore)
    assert store.schema == "tenant_a"
    assert "s3cret" not in store.name
    assert store.name == "postgresql://app@db.example:5433/icefloe (schema tenant_a)"
    assert PostgresStore.from_url("postgres://h/db").schema == "public"
    for bad in ("", "Upper", "1st", "a;drop", "x" * 64):
        with pytest.raises(ValueError, match="schema must be"):
            PostgresStore.from_url(f"postgresql://h/db?schema={bad}")
    with pytest.raises(ValueError, match="pool_size"):
        PostgresStore("postgresql://h/db", pool_size=0)
    for bad, says in (
        ("postgresql://u:s3cret@h:port/db", "port in the store URL's 'h:port'"),
        ("mysql://u:s3cret@h/db", "starts postgresql://"),
    ):
        with pytest.raises(ValueError, match=re.escape(says)) as refused:
            PostgresStore.from_url(bad)
        assert "s3cret" not in str(refused.value)
    for bad in ("pool_size=x", "pool_size=0", "timeout_s=-1", "timeout_s=nan"):
        with pytest.raises(ValueError, match=r"pool_size|timeout_s"):
            PostgresStore.from_url(f"postgresql://h/db?{bad}")


async def test_url_parameters_are_ours_or_server_settings(database: str, schema: str) -> None:
    # asyncpg would send pool_size to the server as a setting, which refuses it
    url = f"{database}?schema={schema}&pool_size=2&timeout_s=3&synchronous_commit=off"
    store = PostgresStore.from_url(url)
    await store.open()
    try:
        async with asyncio.timeout(BOUND_S):
            await store.create_run(run_record("s"))
            # three concurrent callers share the two connections
            await asyncio.gather(*(store.get_run("s") for _ in range(3)))
            await store.append("s", chunks(0, 0))
    finally:
        await store.close()


async def test_an_ended_run_is_kept_until_retention(make: Make) -> None:
    store, other = await make(), await make()
    await store.create_run(run_record("s"))
    await store.append("s", chunks(0, 2))
    assert await other.end_run("s", Terminal("failed", "interrupted", "restart", 5.0))
    # the prefix of an interrupted run stays readable
    assert await store.read("s", 0, 10) == chunks(0, 2)
    assert await store.unfinished_runs() == []


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_conformance(check: object, database: str, schema: str) -> None:
    """The shared conformance suite (tests/storecheck.py), each store in its own schema."""
    made: list[PostgresStore] = []
    schemas: list[str] = []

    async def open_in(name: str) -> PostgresStore:
        store = PostgresStore.from_url(f"{database}?schema={name}&pool_size=4")
        made.append(store)
        await store.open()
        return store

    async def make() -> Store:
        schemas.append(f"{schema}_{len(schemas)}")
        return await open_in(schemas[-1])

    async def reopen(store: Store) -> Store:
        assert isinstance(store, PostgresStore)
        await store.close()
        return await open_in(store.schema)

    assert callable(check)
    try:
        async with asyncio.timeout(BOUND_S):
            await check(Backend(make, reopen))
    finally:
        for store in made:
            await store.close()
        for name in schemas:
            await drop_schema(database, name)
