"""Bridge routes in a running ``icefloe serve --bridge cfg.toml`` (issue 13, gateways).

Real servers only: the machine's Redis, a ``moto_server`` for Kinesis, and
``icefloe serve`` in a process of its own, read by a browser-style SSE client
and written by a WebSocket client.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bridgekit import CHUNK_PRODUCERS, sse_chunks, write_config

from icefloe.connectors.record import Record, chunk_record, record_chunk
from icefloe.core.messages import StreamChunk
from servekit import serve_command

DEMO = "icefloe.demo:build_demo_flow"
STREAMS = 5
CHUNKS = 200


def stream_records(tenant: str) -> tuple[list[str], list[Record]]:
    """STREAMS streams of CHUNKS chunks, interleaved, some neighbours swapped (the
    route's reassembly puts them back)."""
    ids = [f"br-{uuid.uuid4().hex[:10]}" for _ in range(STREAMS)]
    per_stream = [
        [
            chunk_record(
                StreamChunk(sid, seq, f"{sid}:{seq}", done=seq == CHUNKS - 1),
                trace_id=sid,
                tenant=tenant,
            )
            for seq in range(CHUNKS)
        ]
        for sid in ids
    ]
    rng = random.Random(13)
    for records in per_stream:
        for i in range(0, CHUNKS - 1, 17):
            if rng.random() < 0.5:
                records[i], records[i + 1] = records[i + 1], records[i]
    interleaved = [records[i] for i in range(CHUNKS) for records in per_stream]
    return ids, interleaved


async def wait_for_stream(client: httpx.AsyncClient, stream_id: str) -> None:
    while (await client.get(f"/v1/streams/{stream_id}/status")).status_code == 404:
        await asyncio.sleep(0.02)  # polling for the route to open the stream


@pytest.mark.parametrize("broker", sorted(CHUNK_PRODUCERS))
async def test_broker_chunks_reach_an_sse_client_of_serve_in_order(
    broker: str, tmp_path: Path
) -> None:
    try:
        producer = CHUNK_PRODUCERS[broker]()
        source, write = await producer.__aenter__()
    except LookupError as exc:
        pytest.skip(str(exc))
    try:
        cfg = write_config(
            tmp_path / "bridge.toml", {"feed": {"source": source, "sink": {"kind": "streams"}}}
        )
        ids, records = stream_records("acme")
        async with serve_command(DEMO, "--bridge", str(cfg)) as url, asyncio.timeout(60):
            await write(records)
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                for sid in ids:
                    await wait_for_stream(client, sid)
                results = await asyncio.gather(*(sse_chunks(client, sid) for sid in ids))
                # a batch is acked after its flush, and a Redis source sends its
                # acks with its next read: the counters and the lag follow
                while True:
                    routes = (await client.get("/v1/routes")).json()["routes"]
                    if routes[0]["records_out"] == STREAMS * CHUNKS and routes[0]["lag"] in (
                        0,
                        None,
                    ):
                        break
                    await asyncio.sleep(0.05)  # polling the route's status
        for sid, events in zip(ids, results, strict=True):
            assert [e["seq"] for e in events] == list(range(CHUNKS))
            assert [e["text"] for e in events] == [f"{sid}:{s}" for s in range(CHUNKS)]
            assert events[-1]["done"] is True
        (route,) = routes
        assert (route["name"], route["state"], route["source"]) == ("feed", "running", broker)
        assert route["records_in"] == route["records_out"] == STREAMS * CHUNKS
        assert route["lag"] in (0, None)
    finally:
        await producer.__aexit__(None, None, None)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    pytest.importorskip("aiobotocore", reason="the kinesis extra is not installed")
    pytest.importorskip("moto", reason="moto[server] is not installed")
    from motoserver import moto_server

    with moto_server() as url:
        yield url


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from motoserver import CREDENTIALS

    # the served process finds the credentials in its environment, as in production
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS[1])


async def wait_for_kinesis_stream(moto_url: str, stream: str) -> None:
    """Until the route's sink has created ``stream``: both ends of the route are
    open then (the source opens first), so nothing published is missed."""
    from aiobotocore.session import get_session
    from botocore.exceptions import ClientError
    from motoserver import CREDENTIALS, REGION

    session = get_session()
    async with session.create_client(
        "kinesis",
        region_name=REGION,
        endpoint_url=moto_url,
        aws_access_key_id=CREDENTIALS[0],
        aws_secret_access_key=CREDENTIALS[1],
    ) as client:
        while True:
            try:
                summary = await client.describe_stream_summary(StreamName=stream)
            except ClientError:
                pass
            else:
                if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                    return
            await asyncio.sleep(0.05)  # polling the emulator for the stream, not synchronisation


async def read_kinesis(moto_url: str, stream: str, count: int) -> list[Record]:
    from motoserver import CREDENTIALS, REGION

    from icefloe.connectors.kinesis import KinesisSource

    got: list[Record] = []
    source = KinesisSource(
        stream,
        consumer_name="test",
        region=REGION,
        endpoint_url=moto_url,
        credentials=CREDENTIALS,
        poll_interval_s=0.05,
    )
    async with source:
        async for inbound in source:
            got.append(inbound.record)
            await source.ack(inbound)
            if len(got) == count:
                break
    return got


async def ws_publish(url: str, topic: str, items: list[Any]) -> None:
    from websockets.asyncio.client import connect

    ws_url = url.replace("http://", "ws://") + "/v1/ws"
    async with connect(ws_url, subprotocols=["icefloe.v1.json"]) as ws:  # type: ignore[list-item]
        for item in items:
            await ws.send(json.dumps({"op": "publish", "topic": topic, "data": item}))
        await ws.send(json.dumps({"op": "ping", "ref": "done"}))
        while True:  # ops run in order: the pong comes after every publish was taken
            reply = json.loads(await ws.recv())
            assert reply["op"] != "error", reply
            if reply["op"] == "pong":
                return


async def test_a_ws_publish_reaches_a_kinesis_stream(
    moto_url: str, aws_env: None, tmp_path: Path
) -> None:
    stream = f"bridge-{uuid.uuid4().hex[:8]}"
    sink = {"kind": "kinesis", "stream": stream, "endpoint_url": moto_url, "create_shards": 2}
    route = {
        "source": {"kind": "hub", "topic": "orders.>"},
        "translate": {"text": "data.msg"},
        "sink": sink,
    }
    cfg = write_config(tmp_path / "bridge.toml", {"orders": route})
    items = [{"msg": f"order {i}", "n": i} for i in range(50)]
    async with (
        serve_command(DEMO, "--bridge", str(cfg)) as url,
        httpx.AsyncClient(base_url=url) as client,
        asyncio.timeout(60),
    ):
        await wait_for_kinesis_stream(moto_url, stream)
        # "starting" until the sink's open (which made the stream) returned
        while (status := (await client.get("/v1/routes")).json()["routes"][0])["state"] != (
            "running"
        ):
            assert status["state"] == "starting", status
            await asyncio.sleep(0.02)  # polling the route's status
        await ws_publish(url, "orders.eu", items)
        records = await read_kinesis(moto_url, stream, len(items))
        (status,) = (await client.get("/v1/routes")).json()["routes"]
    chunks = [record_chunk(r).chunk for r in records]
    # one topic is one stream: one key, one shard, its order kept
    assert {c.stream_id for c in chunks} == {"orders.eu"}
    assert [c.seq for c in chunks] == list(range(len(items)))
    assert [c.text for c in chunks] == [item["msg"] for item in items]
    assert [c.data for c in chunks] == items
    assert status["records_out"] == len(items)


async def test_icefloe_bridge_copies_a_redis_stream_to_nats(tmp_path: Path) -> None:
    import os
    import sys

    nats = pytest.importorskip("nats")
    from icefloe.connectors.nats import NatsSource
    from servekit import SRC

    try:
        nc = await asyncio.wait_for(nats.connect("nats://127.0.0.1:4222", connect_timeout=1), 3)
    except Exception as exc:
        pytest.skip(f"no NATS: {exc!r}")
    name = f"BRIDGE_{uuid.uuid4().hex[:10]}"
    producer = CHUNK_PRODUCERS["redis-streams"]()
    try:
        source, write = await producer.__aenter__()
    except LookupError as exc:
        await nc.close()
        pytest.skip(str(exc))
    sink = {"kind": "nats", "stream": name, "subject": f"{name}.chunks"}
    cfg = write_config(tmp_path / "bridge.toml", {"copy": {"source": source, "sink": sink}})
    ids, records = stream_records("acme")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    code = "from icefloe.cli import main; main()"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "bridge", str(cfg), env=env, stderr=asyncio.subprocess.PIPE
    )
    got: dict[str, list[int]] = {sid: [] for sid in ids}
    try:
        async with asyncio.timeout(60):
            await write(records)
            reader = NatsSource(
                nc, name, durable="test", subject=f"{name}.chunks", fetch_timeout_s=0.2
            )
            while True:  # the bridge creates the JetStream stream on its first turn
                try:
                    await nc.jetstream().stream_info(name)
                    break
                except Exception:
                    await asyncio.sleep(0.05)  # polling for the bridge process
            async with reader:
                async for inbound in reader:
                    chunk = record_chunk(inbound.record).chunk
                    got[chunk.stream_id].append(chunk.seq)
                    await reader.ack(inbound)
                    if sum(map(len, got.values())) == len(records):
                        break
    finally:
        proc.terminate()
        await proc.wait()
        await producer.__aexit__(None, None, None)
        await nc.jetstream().delete_stream(name)
        await nc.close()
    # batches sent in order, each confirmed before the next: the Redis order, kept
    by_stream = {
        sid: [int(r.header("icefloe-seq") or b"-1") for r in records if r.key == sid.encode()]
        for sid in ids
    }
    assert got == by_stream
