"""The backplane's core cases on NATS JetStream (issue 12, acceptance).

The same scenarios as test_shared_streams.py and test_shared_topics.py, with
``icefloe serve --backplane nats://…`` processes on the machine's NATS
server (JetStream on), each test under a prefix of its own (its chunk
stream and meta bucket are deleted afterwards).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from urllib.parse import urlsplit

import httpx
import pytest
from cluster import NATS_URL, cluster, round_robin
from test_shared_streams import _read_sse, _read_sse_retrying, _start
from test_shared_topics import PER_GATEWAY, _publish, _subscribe
from test_unread_timeout import _start as _start_slow
from test_unread_timeout import _state


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 4222), timeout=2):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    not _reachable(NATS_URL), reason=f"no NATS server at {NATS_URL} (ICEFLOE_TEST_NATS_URL)"
)


async def test_nats_a_stream_started_on_one_gateway_is_read_on_the_others() -> None:
    async with asyncio.timeout(60), cluster(3, engine="nats") as gws:
        n = 600
        sid = await _start(gws[0].url, {"n": n, "every": 20, "pause_ms": 5})
        results = await asyncio.gather(*(_read_sse(g.url, sid) for g in gws))
        for seqs, end in results:
            assert end == "done"
            assert seqs == list(range(n + 1))


async def test_nats_a_reader_reconnecting_through_the_proxy_gets_each_seq_once() -> None:
    async with asyncio.timeout(90), cluster(3, engine="nats") as gws, round_robin(gws) as proxy:
        n = 500
        sid = await _start(gws[0].url, {"n": n, "every": 10, "pause_ms": 5})
        got: list[int] = []
        end: str | None = None
        connections = 0
        while end is None:
            last = got[-1] if got else None
            seqs, end = await _read_sse(proxy, sid, last_event_id=last, stop_after=50)
            got += seqs
            connections += 1
        assert end == "done"
        assert got == list(range(n + 1))
        assert connections >= n // 50


async def test_nats_a_late_reader_resumes_from_a_seq_behind_the_shared_run() -> None:
    async with asyncio.timeout(60), cluster(2, engine="nats") as gws:
        n = 300
        sid = await _start(gws[0].url, {"n": n, "every": 10, "pause_ms": 5})
        ahead = asyncio.ensure_future(_read_sse(gws[1].url, sid))
        first, _ = await _read_sse(gws[1].url, sid, stop_after=150)
        # The first reader runs ahead on gws[1]; this one resumes behind it.
        seqs, end = await _read_sse(gws[1].url, sid, last_event_id=first[-1] - 100)
        assert end == "done"
        assert seqs == list(range(first[-1] - 99, n + 1))
        assert (await ahead)[0] == list(range(n + 1))


async def test_nats_status_list_cancel_and_long_poll_on_another_gateway() -> None:
    async with asyncio.timeout(60), cluster(2, engine="nats") as gws:
        done = await _start(gws[0].url, {"n": 5})
        await _read_sse(gws[1].url, done)
        sid = await _start(gws[0].url, {"n": 100_000, "every": 1, "pause_ms": 2})
        async with httpx.AsyncClient(base_url=gws[1].url, timeout=30) as client:
            status = (await client.get(f"/v1/streams/{done}/status")).json()
            assert (status["state"], status["last_seq"], status["tenant"]) == ("done", 5, "t1")
            listed = {s["stream_id"] for s in (await client.get("/v1/streams")).json()["streams"]}
            assert {done, sid} <= listed
            assert (await client.get("/v1/streams/nope/status")).status_code == 404
            params = {"after_seq": -1, "wait_s": 5}
            polled = await client.get(f"/v1/streams/{sid}/poll", params=params)
            assert polled.status_code == 200, polled.text
            assert [c["seq"] for c in polled.json()][:1] == [0]
            reading = asyncio.ensure_future(_read_sse(gws[1].url, sid))
            answer = await client.delete(f"/v1/streams/{sid}")
            assert answer.status_code == 200, answer.text
        seqs, end = await reading
        assert end == "cancelled"
        assert seqs == list(range(len(seqs)))


async def test_nats_the_readers_of_a_killed_gateway_resume_on_the_others() -> None:
    async with (
        asyncio.timeout(90),
        cluster(3, engine="nats") as gws,
        round_robin(gws[1:]) as proxy,
    ):
        n = 400
        sid = await _start(gws[0].url, {"n": n, "every": 10, "pause_ms": 10})
        got, end = await _read_sse(gws[1].url, sid, stop_after=100)
        assert end is None
        os.kill(gws[1].pid, signal.SIGKILL)
        while end is None:
            seqs, end = await _read_sse_retrying(proxy, sid, got[-1])
            got += seqs
        assert end == "done"
        assert got == list(range(n + 1))


async def test_nats_an_event_published_on_one_gateway_reaches_every_gateway_once() -> None:
    async with asyncio.timeout(60), cluster(3, engine="nats") as gws:
        want = PER_GATEWAY * len(gws)
        ready = [asyncio.Event() for _ in gws]
        readers = [
            asyncio.ensure_future(_subscribe(g.url, r, want))
            for g, r in zip(gws, ready, strict=True)
        ]
        await asyncio.gather(*(r.wait() for r in ready))
        await asyncio.gather(*(_publish(g, i) for i, g in enumerate(gws)))
        for reader in readers:
            seen = [(e["data"]["from"], e["data"]["n"]) for e in await reader]
            assert sorted(seen) == sorted((i, n) for i in range(3) for n in range(PER_GATEWAY))
            for origin in range(3):
                assert [n for i, n in seen if i == origin] == list(range(PER_GATEWAY))


# A 2 s unread timeout against the remote reader's first position report:
# timing-sensitive, so it runs with the perf tests, alone (make test).
@pytest.mark.perf
async def test_nats_a_run_nobody_reads_is_cancelled_and_a_remotely_read_one_is_not() -> None:
    async with asyncio.timeout(60), cluster(2, "--unread-timeout", "2", engine="nats") as gws:
        unread = await _start_slow(gws[0].url)
        read = await _start_slow(gws[0].url)
        # About 4 s at 10 ms a chunk: twice the timeout.
        seqs, end = await _read_sse(gws[1].url, read, stop_after=400)
        assert (len(seqs), end) == (400, None)
        assert await _state(gws[0].url, read) == "running"
        assert await _state(gws[0].url, unread) == "cancelled"
