"""The unread timeout with a backplane (issue 12): the backplane's own reader
of a run is no reader, a reader on another gateway is one."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from cluster import cluster, sse_events

SLOW = {"n": 100_000, "every": 1, "pause_ms": 10}


async def _state(url: str, sid: str) -> str:
    async with httpx.AsyncClient(base_url=url) as client:
        state: str = (await client.get(f"/v1/streams/{sid}/status")).json()["state"]
        return state


async def _start(url: str) -> str:
    async with httpx.AsyncClient(base_url=url) as client:
        body = {"headers": {"tenant": "t"}, "payload": SLOW}
        answer = await client.post("/v1/streams", json=body)
        sid: str = answer.json()["stream_id"]
        return sid


# A 2 s unread timeout against the remote reader's first position report:
# timing-sensitive, so it runs with the perf tests, alone (make test).
@pytest.mark.perf
async def test_a_run_nobody_reads_is_cancelled_and_a_remotely_read_one_is_not() -> None:
    async with asyncio.timeout(60), cluster(2, "--unread-timeout", "2") as gws:
        unread = await _start(gws[0].url)
        read = await _start(gws[0].url)
        seen = 0
        async with (
            httpx.AsyncClient(base_url=gws[1].url, timeout=30) as client,
            client.stream("GET", f"/v1/streams/{read}") as response,
        ):
            async for _id, _event, data in sse_events(response):
                seen = json.loads(data)["seq"]
                if seen >= 400:  # about 4 s at 10 ms a chunk: twice the timeout
                    break
            assert await _state(gws[0].url, read) == "running"
        assert await _state(gws[0].url, unread) == "cancelled"
