"""Bounded across processes on NATS JetStream: a stalled remote reader holds
no memory (issue 12, item 2; the NATS twin of test_bounded.py), and many
readers over three gateways (the twin of test_many_readers.py).

The producer may run at most the window (1,024 chunks) ahead of the slowest
fresh position the readers publish; a reader that stops reading is cut by
its gateway's send timeout (2 s) and stops holding anything back.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from cluster import NATS_URL, cluster, round_robin, rss_bytes
from test_bounded import CHUNKS, MB, PAYLOAD, SIZE, _read_all, _stalled_reader
from test_many_readers import CHUNKS as MANY_CHUNKS
from test_many_readers import READERS, _read
from test_nats_backplane import _reachable

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _reachable(NATS_URL), reason=f"no NATS server at {NATS_URL}"),
]


class _Lead:
    """How far the producer is ahead of the slowest reported position."""

    def __init__(self, prefix: str, sid: str) -> None:
        self._prefix, self._sid = prefix, sid
        self._positions: dict[str, int] = {}
        self.leads: list[int] = []

    async def watch(self, stop: asyncio.Future[object]) -> None:
        import nats

        client = await nats.connect(NATS_URL)
        try:

            async def on_report(msg: object) -> None:
                process, pos, _ts = msg.data.decode().split(" ")  # type: ignore[attr-defined]
                if int(pos) < 0:
                    self._positions.pop(process, None)
                else:
                    self._positions[process] = int(pos)

            await client.subscribe(f"{self._prefix}.p.{self._sid}", cb=on_report)
            kv = await client.jetstream().key_value(f"{self._prefix}_meta")
            while not stop.done():
                entry = await kv.get(self._sid)
                last_seq = json.loads(entry.value or b"{}").get("last_seq", -1)
                if self._positions:
                    self.leads.append(last_seq + 1 - min(self._positions.values()))
                await asyncio.wait({stop}, timeout=0.1)
        finally:
            await client.close()


async def test_nats_a_stalled_remote_reader_holds_the_producer_back_and_no_memory() -> None:
    async with asyncio.timeout(240), cluster(2, "--send-timeout", "2", engine="nats") as gws:
        producer, gateway = gws
        async with httpx.AsyncClient(base_url=producer.url) as client:
            answer = await client.post(
                "/v1/streams", json={"headers": {"tenant": "t"}, "payload": PAYLOAD}
            )
        sid = answer.json()["stream_id"]
        before = {g.pid: rss_bytes(g.pid) for g in gws}
        peak = dict(before)
        stalled = _stalled_reader(gateway.url, sid)
        lead = _Lead(producer.prefix, sid)
        try:
            reading = asyncio.ensure_future(_read_all(gateway.url, sid))
            watching = asyncio.ensure_future(lead.watch(reading))
            started = time.monotonic()
            while not reading.done():
                for g in gws:
                    peak[g.pid] = max(peak[g.pid], rss_bytes(g.pid))
                await asyncio.wait({reading}, timeout=0.2)
            total, tail = reading.result()
            elapsed = time.monotonic() - started
            await watching
        finally:
            stalled.close()
        assert total > CHUNKS * SIZE, tail[-300:]
        assert b'"done":true' in tail
        growth = {pid: (peak[pid] - before[pid]) / MB for pid in before}
        print(f"\n100 MB in {elapsed:.1f} s; RSS growth MB {growth}; max lead {max(lead.leads)}")
        assert all(g < 64 for g in growth.values()), growth
        assert lead.leads
        assert max(lead.leads) <= 1024 + 256 + 64, max(lead.leads)


async def test_nats_hundreds_of_readers_over_three_gateways_get_every_chunk_in_order() -> None:
    async with asyncio.timeout(180), cluster(3, engine="nats") as gws, round_robin(gws) as proxy:
        async with httpx.AsyncClient(base_url=gws[0].url) as client:
            answer = await client.post(
                "/v1/streams",
                json={
                    "headers": {"tenant": "t"},
                    "payload": {"n": MANY_CHUNKS, "delay_ms": 3000, "every": 10, "pause_ms": 20},
                },
            )
        sid = answer.json()["stream_id"]
        limits = httpx.Limits(max_connections=READERS + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=proxy, timeout=120, limits=limits) as client:
            results = await asyncio.gather(*(_read(client, sid) for _ in range(READERS)))
        for seqs in results:
            assert seqs == list(range(MANY_CHUNKS + 1))
