"""Streams shared across gateways through the Redis backplane (issue 12).

Real ``icefloe serve --backplane redis://…`` processes on the machine's
Redis, each test under a key prefix of its own; clients reach them directly
or through a round-robin TCP proxy (:mod:`cluster`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
from cluster import cluster, round_robin, sse_events

TENANT = {"tenant": "t1"}


async def _start(url: str, payload: dict[str, Any]) -> str:
    async with httpx.AsyncClient(base_url=url) as client:
        answer = await client.post("/v1/streams", json={"headers": TENANT, "payload": payload})
        assert answer.status_code == 201, answer.text
        sid: str = answer.json()["stream_id"]
        return sid


async def _read_sse(
    url: str, sid: str, *, last_event_id: int | None = None, stop_after: int | None = None
) -> tuple[list[int], str | None]:
    """The seqs read over SSE and the terminal (``done`` or an error code)."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    seqs: list[int] = []
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as client,
        client.stream("GET", f"/v1/streams/{sid}", headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        async for _id, event, data in sse_events(response):
            body = json.loads(data)
            if event == "error":
                return seqs, body["code"]
            seqs.append(body["seq"])
            if body.get("done"):
                return seqs, "done"
            if stop_after is not None and len(seqs) >= stop_after:
                return seqs, None
    return seqs, None


async def test_a_stream_started_on_one_gateway_is_read_on_the_others() -> None:
    async with asyncio.timeout(60), cluster(3) as gws:
        n = 600
        sid = await _start(gws[0].url, {"n": n, "every": 20, "pause_ms": 5})
        results = await asyncio.gather(*(_read_sse(g.url, sid) for g in gws))
        for seqs, end in results:
            assert end == "done"
            assert seqs == list(range(n + 1))  # n chunks and the done chunk


async def test_status_and_list_answer_a_remote_stream() -> None:
    async with asyncio.timeout(60), cluster(2) as gws:
        sid = await _start(gws[0].url, {"n": 5})
        await _read_sse(gws[1].url, sid)
        async with httpx.AsyncClient(base_url=gws[1].url) as client:
            status = (await client.get(f"/v1/streams/{sid}/status")).json()
            assert status["tenant"] == "t1"
            assert status["state"] == "done"
            assert status["last_seq"] == 5
            listed = (await client.get("/v1/streams")).json()["streams"]
            assert sid in {s["stream_id"] for s in listed}
            missing = await client.get("/v1/streams/nope/status")
            assert missing.status_code == 404


async def test_a_reader_reconnecting_through_the_proxy_gets_each_seq_once() -> None:
    async with asyncio.timeout(90), cluster(3) as gws, round_robin(gws) as proxy:
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


async def test_a_remote_gateway_cancels_the_stream() -> None:
    async with asyncio.timeout(60), cluster(2) as gws:
        sid = await _start(gws[0].url, {"n": 100_000, "every": 1, "pause_ms": 2})
        reading = asyncio.ensure_future(_read_sse(gws[1].url, sid))
        async with httpx.AsyncClient(base_url=gws[1].url) as client:
            answer = await client.delete(f"/v1/streams/{sid}")
            assert answer.status_code == 200, answer.text
        seqs, end = await reading
        assert end == "cancelled"
        assert seqs == list(range(len(seqs)))
        async with httpx.AsyncClient(base_url=gws[0].url) as client:
            local = (await client.get(f"/v1/streams/{sid}/status")).json()
        assert local["state"] == "cancelled"


async def test_a_long_poll_on_another_gateway_reads_the_stream() -> None:
    async with asyncio.timeout(60), cluster(2) as gws:
        n = 40
        sid = await _start(gws[0].url, {"n": n, "every": 5, "pause_ms": 5})
        got: list[int] = []
        async with httpx.AsyncClient(base_url=gws[1].url, timeout=30) as client:
            while not got or got[-1] < n:
                after = got[-1] if got else -1
                answer = await client.get(
                    f"/v1/streams/{sid}/poll", params={"after_seq": after, "wait_s": 5}
                )
                assert answer.status_code == 200, answer.text
                got += [chunk["seq"] for chunk in answer.json()]
        assert got == list(range(n + 1))


SCOPES = ["streams:start", "streams:read", "streams:cancel", "topics:read", "topics:publish"]


async def test_another_tenants_remote_stream_reads_as_missing(tmp_path: Path) -> None:
    keys = {"key-a-0123456789": {"tenant": "a", "scopes": SCOPES}}
    keys["key-b-0123456789"] = {"tenant": "b", "scopes": SCOPES}
    (tmp_path / "keys.json").write_text(json.dumps(keys))
    a = {"Authorization": "Bearer key-a-0123456789"}
    b = {"Authorization": "Bearer key-b-0123456789"}
    async with asyncio.timeout(60), cluster(2, "--api-keys", str(tmp_path / "keys.json")) as gws:
        async with httpx.AsyncClient(base_url=gws[0].url, headers=a) as client:
            started = await client.post(
                "/v1/streams",
                json={"headers": {"tenant": "a"}, "payload": {"n": 500, "pause_ms": 10}},
            )
            assert started.status_code == 201, started.text
        sid = started.json()["stream_id"]
        async with httpx.AsyncClient(base_url=gws[1].url, headers=b) as client:
            for method, path in [
                ("GET", f"/v1/streams/{sid}"),
                ("GET", f"/v1/streams/{sid}/status"),
                ("GET", f"/v1/streams/{sid}/poll"),
                ("DELETE", f"/v1/streams/{sid}"),
            ]:
                answer = await client.request(method, path)
                assert answer.status_code == 404, (method, path, answer.text)
            listed = (await client.get("/v1/streams")).json()["streams"]
            assert sid not in {s["stream_id"] for s in listed}
        async with httpx.AsyncClient(base_url=gws[1].url, headers=a) as client:
            status = await client.get(f"/v1/streams/{sid}/status")
            assert status.status_code == 200
            assert status.json()["state"] == "running"


async def test_the_readers_of_a_killed_gateway_resume_on_the_others() -> None:
    async with asyncio.timeout(90), cluster(3) as gws, round_robin(gws[1:]) as proxy:
        n = 400
        sid = await _start(gws[0].url, {"n": n, "every": 10, "pause_ms": 10})
        got, end = await _read_sse(gws[1].url, sid, stop_after=100)
        assert end is None
        os.kill(gws[1].pid, signal.SIGKILL)  # its readers go to the others through the proxy
        while end is None:
            seqs, end = await _read_sse_retrying(proxy, sid, got[-1])
            got += seqs
        assert end == "done"
        assert got == list(range(n + 1))


async def _read_sse_retrying(url: str, sid: str, last: int) -> tuple[list[int], str | None]:
    """One SSE read resuming after ``last``; a refused connection (the dead gateway
    behind the proxy) is tried again, as a browser's EventSource would."""
    while True:
        try:
            return await _read_sse(url, sid, last_event_id=last)
        except httpx.TransportError:
            await asyncio.sleep(0.05)  # the client's reconnect delay
