"""Bounded across processes: a stalled remote reader holds no memory (issue 12, item 2).

The producer may run at most the backplane window (the history, 1,024
chunks here) ahead of the slowest fresh reader position; a reader that
stops reading is cut by its gateway's send timeout (2 s here) and stops
holding anything back. Meanwhile no process grows.
"""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest
import redis.asyncio
from cluster import REDIS_URL, cluster, rss_bytes

pytestmark = pytest.mark.slow

#: chunks and bytes per chunk: 100 MB of text
CHUNKS = 100_000
SIZE = 1000
MB = 1024 * 1024
#: the run: a pause first, for the readers to attach
PAYLOAD = {"n": CHUNKS, "size": SIZE, "delay_ms": 1500}


def _stalled_reader(url: str, sid: str) -> socket.socket:
    """An SSE request whose client never reads a byte of the answer."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(f"GET /v1/streams/{sid} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return sock


async def _read_all(url: str, sid: str) -> tuple[int, bytes]:
    """Bytes of the whole SSE answer and its last bytes."""
    total = 0
    tail = b""
    async with (
        httpx.AsyncClient(base_url=url, timeout=60) as client,
        client.stream(
            "GET", f"/v1/streams/{sid}", headers={"Accept-Encoding": "identity"}
        ) as response,
    ):
        assert response.status_code == 200
        async for part in response.aiter_raw():
            total += len(part)
            tail = (tail + part)[-4096:]
    return total, tail


async def _lead(client: redis.asyncio.Redis, prefix: str, sid: str) -> int | None:
    """How far the producer is ahead of the slowest reported reader (None: none)."""
    meta = await client.hgetall(f"{prefix}s:{sid}:meta")
    readers = await client.hgetall(f"{prefix}s:{sid}:readers")
    if not meta or not readers:
        return None
    slowest = min(int(v.split()[0]) for v in readers.values())
    return int(meta[b"last_seq"]) + 1 - slowest


async def test_a_stalled_remote_reader_holds_the_producer_back_and_no_memory() -> None:
    async with asyncio.timeout(240), cluster(2, "--send-timeout", "2") as gws:
        producer, gateway = gws
        async with httpx.AsyncClient(base_url=producer.url) as client:
            answer = await client.post(
                "/v1/streams",
                json={"headers": {"tenant": "t"}, "payload": PAYLOAD},
            )
        sid = answer.json()["stream_id"]
        before = {g.pid: rss_bytes(g.pid) for g in gws}
        stalled = _stalled_reader(gateway.url, sid)
        peak = dict(before)
        leads: list[int] = []
        prefix = await _prefix_of(sid)
        probe = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            reading = asyncio.ensure_future(_read_all(gateway.url, sid))
            started = time.monotonic()
            while not reading.done():
                for g in gws:
                    peak[g.pid] = max(peak[g.pid], rss_bytes(g.pid))
                lead = await _lead(probe, prefix, sid)
                if lead is not None:
                    leads.append(lead)
                await asyncio.wait({reading}, timeout=0.2)
            total, tail = reading.result()
            elapsed = time.monotonic() - started
        finally:
            stalled.close()
            await probe.aclose()
        assert total > CHUNKS * SIZE, tail[-300:]
        assert b'"done":true' in tail
        growth = {pid: (peak[pid] - before[pid]) / MB for pid in before}
        print(f"\n100 MB in {elapsed:.1f} s; RSS growth MB {growth}; max lead {max(leads)}")
        assert all(g < 64 for g in growth.values()), growth
        # The window (1,024) plus one pipelined batch (256), whatever the reports' age.
        assert leads
        assert max(leads) <= 1024 + 256 + 64, max(leads)


async def _prefix_of(sid: str) -> str:
    """The key prefix the cluster's gateways write ``sid`` under."""
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        async with asyncio.timeout(10):
            while True:
                async for key in client.scan_iter(match=f"*s:{sid}:meta", count=1000):
                    return key.decode().removesuffix(f"s:{sid}:meta")
                await asyncio.sleep(0.05)  # polling another process's write
    finally:
        await client.aclose()
