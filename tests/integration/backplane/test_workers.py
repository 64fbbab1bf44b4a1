"""Workers (issue 12): ``serve --no-runs`` gateways queue starts on the
backplane, ``icefloe worker`` processes run them, and a worker that dies
(SIGKILL) or drains (SIGTERM) has its runs taken over by another.

Real processes on the machine's Redis (gateways from :mod:`cluster`, workers
from :mod:`workerproc`), each test under a key prefix of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from typing import Any

import httpx
import redis.asyncio
from cluster import REDIS_URL, cluster, round_robin, sse_events
from wflow import text_of
from workerproc import WorkerProc, start_worker, workers

from icefloe.backplane.keys import Keys
from icefloe.backplane.runqueue import RunQueue

TENANT = {"tenant": "t1"}


def _prefix() -> str:
    return f"icefloe:test:{uuid.uuid4().hex[:10]}:"


async def _start(url: str, payload: dict[str, Any]) -> str:
    async with httpx.AsyncClient(base_url=url) as client:
        answer = await client.post("/v1/streams", json={"headers": TENANT, "payload": payload})
        assert answer.status_code == 201, answer.text
        sid: str = answer.json()["stream_id"]
        return sid


async def _status(url: str, sid: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url) as client:
        answer = await client.get(f"/v1/streams/{sid}/status")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body


async def _read(
    url: str, sid: str, seen: list[tuple[int, str]] | None = None
) -> tuple[list[tuple[int, str]], str | None]:
    """(seq, text) of each chunk read over SSE from seq 0, and the terminal;
    ``seen`` fills as the chunks come (for a test to watch)."""
    chunks = [] if seen is None else seen
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as client,
        client.stream("GET", f"/v1/streams/{sid}") as response,
    ):
        assert response.status_code == 200, await response.aread()
        async for _id, event, data in sse_events(response):
            body = json.loads(data)
            if event == "error":
                return chunks, body["code"]
            chunks.append((body["seq"], body.get("text", "")))
            if body.get("done"):
                return chunks, "done"
    return chunks, None


def _expected(n: int) -> list[tuple[int, str]]:
    return [(i, text_of(i)) for i in range(n)] + [(n, "")]


async def _stats(prefix: str) -> dict[str, Any]:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        return await RunQueue(client, Keys(prefix)).stats()
    finally:
        await client.aclose()


async def _holder(prefix: str, ws: list[WorkerProc]) -> WorkerProc:
    """The worker running the one run there is."""
    while True:
        for entry in (await _stats(prefix))["workers"]:
            if entry["running"]:
                return next(w for w in ws if w.id == entry["id"])
        await asyncio.sleep(0.05)  # polling another process's heartbeat


async def _until(seen: list[Any], count: int) -> None:
    while len(seen) < count:
        await asyncio.sleep(0.01)  # polling what a reader task read so far


async def test_a_queued_start_runs_on_a_worker_and_reads_on_every_gateway() -> None:
    prefix = _prefix()
    async with asyncio.timeout(40), cluster(2, "--no-runs", prefix=prefix) as gws:
        sid = await _start(gws[0].url, {"n": 20})
        # No worker yet: queued, and visible on the other gateway at once.
        assert (await _status(gws[1].url, sid))["state"] == "queued"
        stats = await _stats(prefix)
        assert (stats["queued"], stats["running"]) == (1, 0)
        # A queued start cancelled on any gateway ends there and then; no worker runs it.
        dropped = await _start(gws[0].url, {"n": 5})
        async with httpx.AsyncClient(base_url=gws[1].url) as client:
            assert (await client.delete(f"/v1/streams/{dropped}")).status_code == 200
        assert await _read(gws[0].url, dropped) == ([], "cancelled")
        readers = [asyncio.ensure_future(_read(g.url, sid)) for g in gws]
        w = await start_worker(prefix, "wflow:exactly_once", "--exit-when-idle", "1")
        try:
            for chunks, end in await asyncio.gather(*readers):
                assert (chunks, end) == (_expected(20), "done")
            assert (await _status(gws[1].url, sid))["state"] == "done"
            # Idle for 1 s after its run: it exits 0 by itself.
            async with asyncio.timeout(10):
                assert await w.proc.wait() == 0
            stats = await _stats(prefix)
            assert (stats["queued"], stats["running"], stats["workers"]) == (0, 0, [])
        finally:
            if w.proc.returncode is None:
                w.proc.kill()
                await w.proc.wait()
            if w.reading is not None:
                await w.reading


async def test_kill_9_of_the_worker_running_an_exactly_once_run_resumes_it_elsewhere() -> None:
    prefix = _prefix()
    n = 150
    async with (
        asyncio.timeout(60),
        cluster(3, "--no-runs", prefix=prefix) as gws,
        workers(prefix, 2, "wflow:exactly_once") as ws,
        round_robin(gws) as proxy,
    ):
        sid = await _start(proxy, {"n": n, "pace_ms": 20})
        seen: list[tuple[int, str]] = []
        readers = [asyncio.ensure_future(_read(proxy, sid, seen))]
        readers += [asyncio.ensure_future(_read(proxy, sid)) for _ in range(2)]
        await _until(seen, 30)
        victim = await _holder(prefix, ws)
        os.kill(victim.proc.pid, signal.SIGKILL)
        killed_at, at_kill = time.monotonic(), len(seen)
        await _until(seen, at_kill + 10)  # past what the store held: the resumed node's
        print(f"kill -9 to 10 more chunks read: {time.monotonic() - killed_at:.2f} s")
        for chunks, end in await asyncio.gather(*readers):
            assert end == "done"
            assert chunks == _expected(n)  # every seq once, in order, the right text
        assert (await _status(proxy, sid))["state"] == "done"


async def test_an_at_least_once_run_whose_worker_dies_ends_interrupted() -> None:
    prefix = _prefix()
    async with (
        asyncio.timeout(40),
        cluster(2, "--no-runs", prefix=prefix) as gws,
        workers(prefix, 2, "wflow:at_least_once") as ws,
    ):
        sid = await _start(gws[0].url, {"n": 1000, "pace_ms": 10})
        seen: list[tuple[int, str]] = []
        reader = asyncio.ensure_future(_read(gws[1].url, sid, seen))
        await _until(seen, 10)
        os.kill((await _holder(prefix, ws)).proc.pid, signal.SIGKILL)
        chunks, end = await reader
        assert end == "interrupted"
        k = len(chunks)
        assert 10 <= k < 1000
        assert chunks == [(i, text_of(i)) for i in range(k)]
        # The prefix stays readable, from the start, on any gateway.
        assert await _read(gws[0].url, sid) == (chunks, "interrupted")


async def test_a_draining_worker_hands_its_run_over_and_exits_0() -> None:
    prefix = _prefix()
    n = 150
    async with (
        asyncio.timeout(60),
        cluster(2, "--no-runs", prefix=prefix) as gws,
        workers(prefix, 2, "wflow:exactly_once", "--drain-timeout", "0.3") as ws,
    ):
        sid = await _start(gws[0].url, {"n": n, "pace_ms": 20})
        seen: list[tuple[int, str]] = []
        reader = asyncio.ensure_future(_read(gws[1].url, sid, seen))
        await _until(seen, 20)
        holder = await _holder(prefix, ws)
        holder.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        async with asyncio.timeout(20):
            assert await holder.proc.wait() == 0
        print(f"SIGTERM to exit (drain timeout 0.3 s): {time.monotonic() - signalled:.2f} s")
        chunks, end = await reader
        assert (chunks, end) == (_expected(n), "done")
        other = next(w for w in ws if w is not holder)
        assert other.proc.returncode is None


async def test_a_worker_that_stalls_past_its_lease_is_fenced_when_it_comes_back() -> None:
    prefix = _prefix()
    n = 150
    async with (
        asyncio.timeout(60),
        cluster(2, "--no-runs", prefix=prefix) as gws,
        workers(prefix, 2, "wflow:exactly_once") as ws,
    ):
        sid = await _start(gws[0].url, {"n": n, "pace_ms": 20})
        seen: list[tuple[int, str]] = []
        reader = asyncio.ensure_future(_read(gws[1].url, sid, seen))
        await _until(seen, 20)
        stalled = await _holder(prefix, ws)
        stalled.proc.send_signal(signal.SIGSTOP)  # frozen past its lease
        await _until(seen, len(seen) + 30)  # the other worker took the run over
        stalled.proc.send_signal(signal.SIGCONT)
        assert await reader == (_expected(n), "done")
        assert stalled.proc.returncode is None  # it came back, and appended nothing
