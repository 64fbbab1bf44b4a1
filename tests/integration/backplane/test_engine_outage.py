"""Engine connection loss: ``/readyz`` is false meanwhile, then true again (issue 12, item 5).

The gateway reaches Redis through a TCP proxy the test cuts and restores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket

import httpx
from cluster import REDIS_URL, cluster

HOST, _, REST = REDIS_URL.removeprefix("redis://").partition(":")
REDIS_PORT = int(REST.split("/")[0])


class _Cuttable:
    """A TCP proxy to Redis (or another server) on a fixed port that can be cut and restored."""

    def __init__(self, host: str = HOST, port: int = REDIS_PORT) -> None:
        self._target = (host, port)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _ready_becomes(client: httpx.AsyncClient, status: int) -> None:
    while (await client.get("/readyz")).status_code != status:
        await asyncio.sleep(0.1)  # polling another process's health check


async def test_readyz_is_false_while_the_engine_is_unreachable() -> None:
    proxy = _Cuttable()
    await proxy.up()
    url = f"redis://127.0.0.1:{proxy.port}/0"
    try:
        async with (
            asyncio.timeout(60),
            cluster(1, redis_url=url) as gws,
            httpx.AsyncClient(base_url=gws[0].url) as client,
        ):
            assert (await client.get("/readyz")).status_code == 200
            await proxy.down()
            await _ready_becomes(client, 503)
            body = (await client.get("/readyz")).json()
            assert body["error"]["code"] == "unavailable"
            await proxy.up()
            await _ready_becomes(client, 200)
            # Streams work again after the outage.
            answer = await client.post(
                "/v1/streams", json={"headers": {"tenant": "t"}, "payload": {"n": 3}}
            )
            assert answer.status_code == 201
    finally:
        await proxy.down()


async def test_a_topic_publish_is_refused_while_the_engine_is_unreachable() -> None:
    """The engine numbers topics: without it a publish answers 503 and reaches
    nobody; afterwards the numbering goes on under the same epoch."""
    proxy = _Cuttable()
    await proxy.up()
    url = f"redis://127.0.0.1:{proxy.port}/0"
    path = "/v1/topics/room.outage"
    try:
        async with (
            asyncio.timeout(60),
            cluster(1, redis_url=url) as gws,
            httpx.AsyncClient(base_url=gws[0].url, timeout=20) as client,
        ):
            first = (await client.post(path, json={"data": 0})).json()
            await proxy.down()
            await _ready_becomes(client, 503)
            refused = await client.post(path, json={"data": "lost"})
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "unavailable"
            await proxy.up()
            await _ready_becomes(client, 200)
            after = (await client.post(path, json={"data": 1})).json()
            assert (after["epoch"], after["offset"]) == (first["epoch"], first["offset"] + 1)
            params = {"from_offset": "0", "epoch": first["epoch"]}
            async with client.stream("GET", path, params=params) as response:
                assert response.status_code == 200
                data = []
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        data.append(json.loads(line[5:])["data"])
                        if len(data) == 2:
                            break
            assert data == [0, 1]
    finally:
        await proxy.down()
