"""The topic stores (:mod:`icefloe.store.topics`) against SQLite and the real
Redis and PostgreSQL servers (skipped when unreachable): order, trimming to
one epoch / a count / bytes, idle topics, and records that fail their checks."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis.asyncio
from netservers import REDIS_URL, UNREACHABLE, drop_schema, postgres_test_url, unreachable
from redis.exceptions import RedisError

from icefloe.exceptions import CorruptRecord
from icefloe.store.topics import (
    Retention,
    TopicEvent,
    TopicRecord,
    TopicStore,
    decode_topic_event,
    encode_topic_event,
    open_topic_store,
    topic_events,
)

KEEP = Retention(max_items=5, max_bytes=1 << 20, idle_s=3600)


def record(
    topic: str, offset: int, epoch: str = "e" * 12, *, at: float | None = None, size: int = 4
) -> TopicRecord:
    event = TopicEvent("acme", topic, epoch, offset, offset, "at_most_once", "x" * size, {})
    return encode_topic_event(event, at)


@pytest.fixture(params=["sqlite", "redis", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TopicStore]:
    cleanup = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'topics.db'}"
    elif request.param == "redis":
        admin = redis.asyncio.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
        try:
            await admin.ping()
        except (RedisError, *UNREACHABLE) as exc:
            await admin.aclose()
            unreachable("Redis", REDIS_URL, exc)
        prefix = f"icefloe-topicstore:{uuid.uuid4().hex[:12]}:"
        url = f"{REDIS_URL}?prefix={quote(prefix)}"

        async def cleanup() -> None:
            keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
            if keys:
                await admin.delete(*keys)
            await admin.aclose()

    else:
        base = await postgres_test_url()
        schema = f"topicstore_{uuid.uuid4().hex[:12]}"
        url = f"{base}?schema={schema}"

        async def cleanup() -> None:
            await drop_schema(base, schema)

    made = open_topic_store(url)
    assert made is not None
    await made.open()
    try:
        yield made
    finally:
        await made.close()
        if cleanup is not None:
            await cleanup()


def offsets(rows: list[TopicRecord], topic: str) -> list[int]:
    return [r.offset for r in rows if r.topic == topic]


async def test_records_come_back_per_topic_in_offset_order(store: TopicStore) -> None:
    async with asyncio.timeout(30):
        await store.append([record("a", 0), record("b", 0), record("a", 1)], KEEP)
        await store.append([record("a", 2), record("b", 1)], KEEP)
        rows = await store.load(KEEP)
        assert offsets(rows, "a") == [0, 1, 2]
        assert offsets(rows, "b") == [0, 1]
        groups = topic_events(rows)
        assert sorted((g[0].topic, [e.offset for e in g]) for g in groups) == [
            ("a", [0, 1, 2]),
            ("b", [0, 1]),
        ]


async def test_a_topic_keeps_max_items_of_one_epoch(store: TopicStore) -> None:
    async with asyncio.timeout(30):
        await store.append([record("a", n) for n in range(8)], KEEP)
        assert offsets(await store.load(KEEP), "a") == [3, 4, 5, 6, 7]
        # A new epoch drops the old one's records.
        await store.append([record("a", 0, "f" * 12), record("a", 1, "f" * 12)], KEEP)
        rows = await store.load(KEEP)
        assert [(r.epoch, r.offset) for r in rows if r.topic == "a"] == [
            ("f" * 12, 0),
            ("f" * 12, 1),
        ]


async def test_a_topic_keeps_max_bytes(store: TopicStore) -> None:
    one = len(record("a", 0, size=100).record)
    keep = Retention(max_items=100, max_bytes=3 * one, idle_s=3600)
    async with asyncio.timeout(30):
        await store.append([record("a", n, size=100) for n in range(6)], keep)
        assert offsets(await store.load(keep), "a") == [3, 4, 5]


async def test_an_idle_topic_is_dropped(store: TopicStore) -> None:
    async with asyncio.timeout(30):
        if "redis" in store.name:
            # Redis expires the keys idle_s after the last append.
            await store.append([record("idle", 0)], Retention(5, 1 << 20, idle_s=0.05))
            while offsets(await store.load(KEEP), "idle"):
                await asyncio.sleep(0.02)  # waiting for the server's expiry itself
        else:
            await store.append([record("idle", 0, at=time.time() - 100)], KEEP)
            await store.append([record("live", 0)], KEEP)
            rows = await store.load(Retention(5, 1 << 20, idle_s=50))
            assert offsets(rows, "idle") == []
            assert offsets(rows, "live") == [0]


def test_a_flipped_or_misfiled_record_is_corrupt() -> None:
    good = record("a", 3)
    assert decode_topic_event(good).offset == 3
    for at in range(len(good.record)):
        flipped = bytearray(good.record)
        flipped[at] ^= 0x10
        with pytest.raises(CorruptRecord):
            decode_topic_event(good._replace(record=bytes(flipped)))
    with pytest.raises(CorruptRecord):
        decode_topic_event(good._replace(offset=4))
    with pytest.raises(CorruptRecord):
        decode_topic_event(good._replace(topic="b"))
    odd = TopicEvent("acme", "a", "e" * 12, 3, 3, "sometimes", "x", {})
    with pytest.raises(CorruptRecord):
        decode_topic_event(encode_topic_event(odd))
    # A corrupt record is left out of the groups: a gap, never delivered.
    rows = [record("a", 0), record("a", 1)._replace(record=b"junk"), record("a", 2)]
    assert [[e.offset for e in g] for g in topic_events(rows)] == [[0, 2]]
