"""Hub topic history survives a restart (issue 11): ``icefloe serve --store URL``
keeps topic events in the store, and after a SIGKILL and a restart a client
resuming a topic with (offset, epoch) gets exactly the events after its
offset under the same epoch; a changed epoch, an offset ahead of the topic,
or a corrupt stored record in the way is ``410 history_gone``. SQLite,
Redis and PostgreSQL (the real servers; skipped when unreachable)."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import httpx
import pytest
import redis.asyncio
from redis.exceptions import RedisError
from store.netservers import (
    REDIS_URL,
    UNREACHABLE,
    drop_schema,
    postgres_test_url,
    unreachable,
)

from icefloe.core.sse import SseParser
from ports import free_port
from serveproc import ServeProcess, ready

# Servers killed and restarted on a shared PostgreSQL and Redis: run alone,
# with the perf tests (make test), not beside another worker's servers.
pytestmark = [pytest.mark.perf, pytest.mark.timeout(120)]


class Backend(NamedTuple):
    name: str
    url: str


@pytest.fixture(params=["sqlite", "redis", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite:///{tmp_path / 'topics.db'}")
        return
    if request.param == "postgres":
        url = await postgres_test_url()
        schema = f"topics_{uuid.uuid4().hex[:12]}"
        try:
            yield Backend("postgres", f"{url}?schema={schema}")
        finally:
            await drop_schema(url, schema)
        return
    admin = redis.asyncio.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        await admin.ping()
    except (RedisError, *UNREACHABLE) as exc:
        await admin.aclose()
        unreachable("Redis", REDIS_URL, exc)
    prefix = f"icefloe-topics:{uuid.uuid4().hex[:12]}:"
    try:
        yield Backend("redis", f"{REDIS_URL}?prefix={quote(prefix)}")
    finally:
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()


async def read(client: httpx.AsyncClient, topic: str, want: int, **query: Any) -> list[Any]:
    """The first ``want`` events of a subscription to ``topic`` with ``query``."""
    got: list[Any] = []
    async with asyncio.timeout(20), client.stream("GET", f"/v1/topics/{topic}", params=query) as r:
        assert r.status_code == 200, await r.aread()
        parser = SseParser()
        async for data in r.aiter_bytes():
            parser.feed_data(data)
            for ev in parser.events_received():
                assert ev.event == "event", ev.data
                got.append(json.loads(ev.data))
                if len(got) == want:
                    return got
    return got


async def refused(client: httpx.AsyncClient, topic: str, **query: Any) -> str:
    """The error code of a subscription the server refuses."""
    async with asyncio.timeout(20), client.stream("GET", f"/v1/topics/{topic}", params=query) as r:
        assert r.status_code == 410, r.status_code
        body = json.loads(await r.aread())
        return str(body["error"]["code"])


async def publish(client: httpx.AsyncClient, topic: str, n: int) -> tuple[str, int]:
    answer = await client.post(f"/v1/topics/{topic}", json={"data": {"n": n}})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    return body["epoch"], body["offset"]


def serve(port: int, store: str) -> ServeProcess:
    return ServeProcess(port, store, "durable_flow:build")


class Server:
    def __init__(self, store: str) -> None:
        self.store = store
        self.port = free_port()
        self.proc = serve(self.port, store)

    def kill_restart(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = serve(self.port, self.store)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


async def test_a_topic_resumes_after_sigkill_with_the_same_epoch(backend: Backend) -> None:
    server = Server(backend.url)
    topic = f"room.{uuid.uuid4().hex[:10]}"
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            await ready(client, server.proc)
            answers = [await publish(client, topic, n) for n in range(20)]
            epoch = answers[0][0]
            assert answers == [(epoch, n) for n in range(20)]
            seen = await read(client, topic, 10, from_offset=0, epoch=epoch)
            assert [e["offset"] for e in seen] == list(range(10))

            server.kill_restart()
            await ready(client, server.proc)
            rest = await read(client, topic, 10, from_offset=10, epoch=epoch)
            assert [(e["offset"], e["epoch"], e["data"]["n"]) for e in rest] == [
                (n, epoch, n) for n in range(10, 20)
            ]
            # The numbering goes on under the same epoch.
            assert await publish(client, topic, 20) == (epoch, 20)
            tail = await read(client, topic, 2, from_offset=19, epoch=epoch)
            assert [e["data"]["n"] for e in tail] == [19, 20]
            # A resume under another epoch, or from ahead of the topic, is refused.
            assert await refused(client, topic, from_offset=5, epoch="0123456789ab") == (
                "history_gone"
            )
            assert await refused(client, topic, from_offset=40, epoch=epoch) == "history_gone"
    finally:
        server.stop()


async def test_a_corrupt_stored_topic_event_is_never_delivered(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    server = Server(f"sqlite:///{path}")
    topic = f"room.{uuid.uuid4().hex[:10]}"
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            await ready(client, server.proc)
            epoch = (await publish(client, topic, 0))[0]
            for n in range(1, 10):
                await publish(client, topic, n)
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(10)
            with sqlite3.connect(path) as db:
                (record,) = db.execute(
                    'SELECT record FROM hub_topics WHERE topic = ? AND "offset" = 4', (topic,)
                ).fetchone()
                flipped = bytearray(record)
                flipped[-6] ^= 0x01
                db.execute(
                    'UPDATE hub_topics SET record = ? WHERE topic = ? AND "offset" = 4',
                    (bytes(flipped), topic),
                )
            server.proc = serve(server.port, server.store)
            await ready(client, server.proc)
            # Offset 4 is gone, so no resume may cross it ...
            assert await refused(client, topic, from_offset=2, epoch=epoch) == "history_gone"
            # ... and what follows it is intact.
            after = await read(client, topic, 5, from_offset=5, epoch=epoch)
            assert [e["data"]["n"] for e in after] == [5, 6, 7, 8, 9]
    finally:
        server.stop()
