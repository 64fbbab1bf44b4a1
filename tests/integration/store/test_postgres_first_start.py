"""A first start against a new PostgreSQL schema: the run store and the hub
topic store open at once (as ``icefloe serve --store postgresql://…`` does,
and as several gateways starting together do), and each creates the schema
and its tables. ``CREATE … IF NOT EXISTS`` races with itself; before the two
shared one advisory lock, one open failed about one start in ten with a unique
violation on ``pg_namespace`` and the server exited at start-up."""

from __future__ import annotations

import asyncio
import uuid

from netservers import drop_schema, postgres_test_url

from icefloe.store.postgres import PostgresStore
from icefloe.store.postgres_topics import PostgresTopicStore

#: fresh schemas tried; each is created by 2 run stores and 2 topic stores at once
SCHEMAS = 12


async def open_all_at_once(url: str, schema: str) -> None:
    scoped = f"{url}?schema={schema}"
    runs = [PostgresStore.from_url(scoped) for _ in range(2)]
    topics = [PostgresTopicStore.from_url(scoped) for _ in range(2)]
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(store.open() for store in [*runs, *topics]))
    finally:
        for store in [*runs, *topics]:
            await store.close()


async def test_stores_opening_at_once_on_a_new_schema_all_open() -> None:
    url = await postgres_test_url()
    for _ in range(SCHEMAS):
        schema = f"first_{uuid.uuid4().hex[:12]}"
        try:
            await open_all_at_once(url, schema)
        finally:
            await drop_schema(url, schema)
