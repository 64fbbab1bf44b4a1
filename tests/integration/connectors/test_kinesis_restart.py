"""A Kinesis consumer killed and started again in a new process resumes from its store.

Real servers over real sockets: a ``moto_server`` (motoserver.py), the
store (a SQLite file, or the machine's Redis), and two consumer processes
(kinesis_consumer.py). The first is SIGKILLed after 610 acks, with
checkpoints saved every 40 acks per shard; the second resumes each shard
``AFTER_SEQUENCE_NUMBER`` of its checkpoint. Together they must have every
chunk, each stream in order, and exactly the records delivered after the
last checkpoint twice (the core dedup drops and counts them).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiobotocore", reason="the kinesis extra is not installed")
pytest.importorskip("moto", reason="moto[server] is not installed")

from kinesis_consumer import CONSUMER
from motoserver import CREDENTIALS, kinesis_client, moto_server
from streamcheck import StreamCheck, chunk_records

from icefloe.connectors.kinesis import SHARD_END, KinesisSink, StoreCheckpoints, unpack
from icefloe.store import Store, open_store
from servekit import SRC

STREAMS, CHUNKS, CRASH_AFTER = 4, 300, 610
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
async def client(moto_url: str) -> AsyncIterator[Any]:
    async with kinesis_client(moto_url) as kinesis:
        yield kinesis


@pytest.fixture(params=["sqlite", "redis"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'positions.db'}"
        return
    prefix = f"ktest-{uuid.uuid4().hex[:8]}:"
    url = f"redis://127.0.0.1:6379/0?prefix={prefix}"
    store = open_store(url)
    try:
        await store.open()
    except Exception as exc:
        pytest.skip(f"no Redis at 127.0.0.1:6379: {exc}")
    await store.close()
    yield url
    from redis.asyncio import Redis

    redis = Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


async def _consumer(
    moto_url: str, stream: str, store_url: str, out: Path, stop_after: int, *crash: str
) -> int:
    # HERE for motoserver, its parent folder for what motoserver imports (ports).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE), str(HERE.parents[1])])}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "kinesis_consumer.py"),
        moto_url,
        stream,
        store_url,
        str(out),
        "--stop-after",
        str(stop_after),
        *crash,
        env=env,
    )
    try:
        return await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def _checkpoints(store_url: str, stream: str) -> dict[str, str]:
    store: Store = open_store(store_url)
    await store.open()
    try:
        return await StoreCheckpoints(store).load(f"{stream}/{CONSUMER}")
    finally:
        await store.close()


async def test_a_killed_consumer_resumes_after_its_checkpoints_in_a_new_process(
    moto_url: str, client: Any, store_url: str, tmp_path: Path
) -> None:
    stream = f"restart-{uuid.uuid4().hex[:8]}"
    total = STREAMS * CHUNKS
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    async with asyncio.timeout(120):
        async with KinesisSink(stream, create_shards=2, client=client) as sink:
            for record in chunk_records("kr", STREAMS, CHUNKS):
                await sink.send(record)
            await sink.flush()
        crashed = await _consumer(moto_url, stream, store_url, first, CRASH_AFTER, "--crash")
        assert crashed == -signal.SIGKILL
        saved = await _checkpoints(store_url, stream)
        assert saved, "checkpoints were saved before the crash"
        assert SHARD_END not in saved.values()
        before = _lines(first)
        assert len(before) == CRASH_AFTER
        # delivered after its shard's last checkpoint: they must come again
        again = sum(
            1
            for line in before
            if line["shard"] not in saved or int(line["seq"]) > int(saved[line["shard"]])
        )
        assert again > 0  # 610 acks cannot all be on multiples of 40 per shard
        rest = total - CRASH_AFTER + again
        assert await _consumer(moto_url, stream, store_url, second, rest) == 0
    after = _lines(second)
    assert len(after) == rest
    check = StreamCheck()
    for line in before + after:
        check.feed(unpack(line["key"], bytes.fromhex(line["blob"])))
    check.assert_complete("kr", STREAMS, CHUNKS)
    assert check.duplicates == again
    # the second process saved its acked prefix on close: a third would start there
    resumed = await _checkpoints(store_url, stream)
    assert all(int(resumed[s]) >= int(saved.get(s, "0")) for s in resumed)


async def test_a_bridge_route_keeps_its_kinesis_checkpoints_in_the_configured_store(
    moto_url: str, client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridgekit import REDIS_URL

    from icefloe.gateway import Gateway, Served, parse_config

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS[1])
    stream, out = f"bridged-{uuid.uuid4().hex[:8]}", f"bridged-out-{uuid.uuid4().hex[:8]}"
    store_url = f"sqlite:///{tmp_path / 'bridge.db'}"
    route = {
        "source": {"kind": "kinesis", "stream": stream, "endpoint_url": moto_url},
        "sink": {"kind": "redis-streams", "url": REDIS_URL, "key": out},
    }
    config = parse_config({"store": store_url, "routes": {"k": route}})
    first, later = chunk_records("kb", 2, 50), chunk_records("kl", 2, 20)

    async def run(expect: int) -> int:
        gateway = Gateway(config)
        async with gateway.running(Served(None, None)):
            while (status := gateway.statuses()[0]).records_out < expect:
                assert status.failures == 0, status.last_error
                await asyncio.sleep(0.02)  # polling the route's counter
            return status.records_in

    async with asyncio.timeout(60):
        async with KinesisSink(stream, create_shards=2, client=client) as sink:
            for record in first:
                await sink.send(record)
        try:
            assert await run(len(first)) == len(first)
        except Exception as exc:
            if "6379" in str(exc):
                pytest.skip(f"no Redis: {exc}")
            raise
        # closing the route saved each shard's acked prefix in the bridge's store
        store: Store = open_store(store_url)
        await store.open()
        try:
            kept = await StoreCheckpoints(store).load(f"{stream}/icefloe-bridge")
        finally:
            await store.close()
        assert len(kept) == 2
        async with KinesisSink(stream, client=client) as sink:
            for record in later:
                await sink.send(record)
        # a new gateway (as after a restart) reads only what came after
        assert await run(len(later)) == len(later)
    from redis.asyncio import Redis

    redis = Redis.from_url(REDIS_URL)
    await redis.delete(out)
    await redis.aclose()
