"""NATS connection loss: ``/readyz`` is false meanwhile, then true again
(issue 12, item 5; the NATS twin of test_engine_outage.py).

The gateway reaches NATS through a TCP proxy the test cuts and restores.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx
import pytest
from cluster import NATS_URL, cluster
from test_engine_outage import _Cuttable, _ready_becomes
from test_nats_backplane import _reachable
from test_shared_streams import _read_sse, _start

pytestmark = pytest.mark.skipif(not _reachable(NATS_URL), reason=f"no NATS server at {NATS_URL}")


async def test_nats_readyz_is_false_while_the_engine_is_unreachable() -> None:
    target = urlsplit(NATS_URL)
    proxy = _Cuttable(target.hostname or "127.0.0.1", target.port or 4222)
    await proxy.up()
    url = f"nats://127.0.0.1:{proxy.port}"
    try:
        async with (
            asyncio.timeout(60),
            cluster(1, engine="nats", nats_url=url) as gws,
            httpx.AsyncClient(base_url=gws[0].url) as client,
        ):
            assert (await client.get("/readyz")).status_code == 200
            await proxy.down()
            await _ready_becomes(client, 503)
            body = (await client.get("/readyz")).json()
            assert body["error"]["code"] == "unavailable"
            await proxy.up()
            await _ready_becomes(client, 200)
            # Streams work again after the outage, and are shared.
            answer = await client.post(
                "/v1/streams", json={"headers": {"tenant": "t"}, "payload": {"n": 3}}
            )
            assert answer.status_code == 201
            sid = answer.json()["stream_id"]
            status = await client.get(f"/v1/streams/{sid}/status")
            assert status.status_code == 200
    finally:
        await proxy.down()


async def test_nats_a_lost_chunk_stream_and_bucket_are_made_again() -> None:
    """As after a restart of a server whose streams were in memory."""
    import nats
    from nats.js.errors import NotFoundError

    async with asyncio.timeout(60), cluster(2, engine="nats") as gws:
        prefix = gws[0].prefix
        client = await nats.connect(NATS_URL)
        try:
            js = client.jetstream()
            for name in (f"{prefix}_chunks", f"KV_{prefix}_meta"):
                await js.delete_stream(name)
            while True:
                try:
                    await js.stream_info(f"{prefix}_chunks")
                    await js.stream_info(f"KV_{prefix}_meta")
                    break
                except NotFoundError:
                    await asyncio.sleep(0.1)  # polling another process's health check
        finally:
            await client.close()
        sid = await _start(gws[0].url, {"n": 50})
        seqs, end = await _read_sse(gws[1].url, sid)
        assert (seqs, end) == (list(range(51)), "done")
