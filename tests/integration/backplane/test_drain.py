"""SIGTERM drains a gateway under load: no client loses a chunk (issue 12, lifecycle).

Three ``icefloe serve --backplane`` processes behind the round-robin TCP
proxy of :mod:`cluster`. One run is produced on the gateway that gets
SIGTERM and one on another; 30 SSE readers connect through the proxy (a
third of them land on the draining gateway). On SIGTERM the draining gateway answers
``/readyz`` 503 ``draining``, refuses new runs, hands its readers off with
``event: reconnect``, finishes its runs (read by the others through the
backplane) and exits 0; every reader gets every seq exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cluster import SRC, Gateway, cluster, round_robin, sse_events
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from icefloe.core.wire_errors import CloseReason, close_frame
from ports import free_port

TENANT = {"tenant": "t1"}
#: chunks per run (and the done chunk)
N = 600
#: a run pauses 15 ms after each chunk: about 9 s of producing, so the
#: drain starts with every run in the middle even on a loaded machine
SPEC = {"n": N, "every": 1, "pause_ms": 15}
#: chunks each reader has before the SIGTERM
BEFORE = 5


async def _start(url: str) -> str:
    async with httpx.AsyncClient(base_url=url) as client:
        while True:
            answer = await client.post("/v1/streams", json={"headers": TENANT, "payload": SPEC})
            # A loaded machine (the suite shares two cores) may be overloaded
            # for a moment: a client retries a 503 after its Retry-After.
            if answer.status_code != 503:
                break
            await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
        assert answer.status_code == 201, answer.text
        sid: str = answer.json()["stream_id"]
        return sid


class Reader:
    """One SSE client through the proxy: resumes with Last-Event-ID after a
    hand-off, a dropped or refused connection, as a browser would."""

    def __init__(self, proxy: str, sid: str, ready: asyncio.Event, counter: list[int]) -> None:
        self.proxy = proxy
        self.sid = sid
        self.seqs: list[int] = []
        self.handed_off = 0
        self.connections = 0
        self.errors: list[str] = []
        self._ready = ready
        self._counter = counter

    def _got(self, seq: int) -> None:
        self.seqs.append(seq)
        if len(self.seqs) == BEFORE:
            self._counter[0] -= 1
            if not self._counter[0]:
                self._ready.set()

    async def run(self) -> None:
        # No keep-alive: every attempt is a new TCP connection, so the proxy
        # sends it to the next gateway (a browser's new connection would go
        # wherever its balancer says).
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=self.proxy, timeout=30, limits=limits) as client:
            while True:
                headers = {"Last-Event-ID": str(self.seqs[-1])} if self.seqs else {}
                delay = 0.05
                try:
                    async with client.stream(
                        "GET", f"/v1/streams/{self.sid}", headers=headers
                    ) as response:
                        assert response.status_code == 200, await response.aread()
                        self.connections += 1
                        async for _id, event, data in sse_events(response):
                            body = json.loads(data)
                            if event == "reconnect":
                                self.handed_off += 1
                                delay = body["retry_ms"] / 1000  # the server's hint
                                break
                            if event == "error":
                                self.errors.append(body["code"])
                                break
                            self._got(body["seq"])
                            if body["done"]:
                                return
                except httpx.TransportError:
                    pass  # the draining gateway's listener closed under the proxy
                await asyncio.sleep(delay)  # the client's reconnect delay


async def _wait_draining(gateway: Gateway) -> dict[str, Any]:
    """``/readyz`` of ``gateway`` once it says it drains (the signal is async)."""
    assert gateway.proc is not None
    async with httpx.AsyncClient(base_url=gateway.url) as client, asyncio.timeout(10):
        while True:
            assert gateway.proc.returncode is None, "the gateway exited: its runs had ended"
            answer = await client.get("/readyz")
            if answer.status_code == 503:
                body: dict[str, Any] = answer.json()
                return body
            await asyncio.sleep(0.02)  # polling another process's state


async def test_sigterm_under_load_loses_no_chunk_of_any_reader() -> None:
    async with asyncio.timeout(120), cluster(3) as gws, round_robin(gws) as proxy:
        draining = gws[0]
        # One run per gateway: the flow's node runs one invocation at a time,
        # so a second run would wait for the first to end.
        sids = await asyncio.gather(_start(draining.url), _start(gws[1].url))
        ready = asyncio.Event()
        counter = [len(sids) * 15]
        readers = [Reader(proxy, sid, ready, counter) for sid in sids for _ in range(15)]
        tasks = [asyncio.ensure_future(r.run()) for r in readers]
        await ready.wait()
        assert draining.proc is not None
        draining.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        readyz = await _wait_draining(draining)
        assert readyz["error"]["code"] == "unavailable"
        assert readyz["error"]["message"] == "draining"
        async with httpx.AsyncClient(base_url=draining.url) as client:
            refused = await client.post("/v1/streams", json={"headers": TENANT, "payload": SPEC})
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "unavailable"
            assert refused.headers["retry-after"] == "1"

        await asyncio.gather(*tasks)
        assert await asyncio.wait_for(draining.proc.wait(), 30) == 0
        drained_s = time.monotonic() - signalled
        for reader in readers:
            assert reader.errors == []
            assert reader.seqs == list(range(N + 1)), (reader.sid, len(reader.seqs))
        # The readers the proxy had sent to the draining gateway (a third) were
        # handed off.
        handed_off = sum(r.handed_off for r in readers)
        assert handed_off >= 5
        print(f"drain: {handed_off} hand-offs, exit 0 after {drained_s:.1f} s")  # -s shows it


async def _ws_json(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await ws.recv())
    return message


async def _read_chunks(ws: ClientConnection, seqs: list[int]) -> None:
    """Append the seq of each chunk until the connection closes."""
    while True:
        op = await _ws_json(ws)
        if op["op"] == "chunk":
            seqs.append(op["seq"])


async def test_a_draining_gateway_closes_websockets_with_reconnect() -> None:
    async with asyncio.timeout(90), cluster(3) as gws, round_robin(gws[1:]) as proxy:
        draining = gws[0]
        sid = await _start(draining.url)
        ws_url = draining.url.replace("http://", "ws://") + "/v1/ws"
        seqs: list[int] = []
        async with connect(ws_url, subprotocols=["icefloe.v1.json"]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"op": "hello"}))
            welcome = await _ws_json(ws)
            assert welcome["op"] == "welcome"
            await ws.send(json.dumps({"op": "subscribe", "stream_id": sid, "from_seq": 0}))
            while len(seqs) < BEFORE:
                op = await _ws_json(ws)
                if op["op"] == "chunk":
                    seqs.append(op["seq"])
            assert draining.proc is not None
            draining.proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                await _read_chunks(ws, seqs)
        received = closed.value.rcvd
        assert received is not None
        assert (received.code, received.reason) == close_frame(CloseReason.DRAINING)
        assert seqs == list(range(len(seqs)))

        # Resume on another gateway: the stream is followed again from the
        # seq after the last one received (a session resume on another
        # gateway is tested in test_remote_ws.py).
        proxy_ws = proxy.replace("http://", "ws://") + "/v1/ws"
        async with connect(proxy_ws, subprotocols=["icefloe.v1.json"]) as ws:  # type: ignore[list-item]
            await ws.send(
                json.dumps({"op": "subscribe", "stream_id": sid, "from_seq": seqs[-1] + 1})
            )
            # More than one window's worth is left: credit for all of it.
            await ws.send(json.dumps({"op": "credit", "stream_id": sid, "n": N}))
            while True:
                op = await _ws_json(ws)
                assert op["op"] != "error", op
                if op["op"] in ("chunk", "end"):
                    seqs.append(op["seq"])
                    if op["op"] == "end" or op.get("done"):
                        break
        assert seqs == list(range(N + 1))
        assert await asyncio.wait_for(draining.proc.wait(), 30) == 0


async def test_without_a_backplane_readers_finish_their_run_before_the_exit() -> None:
    """Nowhere else to read the run: its reader stays to the end, new runs are
    refused meanwhile, and the process exits 0 once the run has ended."""
    port = free_port()
    path = os.pathsep.join([str(SRC), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    code = "from icefloe.cli import main; main()"
    args = [sys.executable, "-c", code, "serve", "bpflow:build", "--port", str(port)]
    proc = await asyncio.create_subprocess_exec(
        *args, env={**os.environ, "PYTHONPATH": path}, stderr=asyncio.subprocess.DEVNULL
    )
    gateway = Gateway(f"http://127.0.0.1:{port}", proc.pid, proc=proc)
    try:
        async with asyncio.timeout(60):
            await _serving(gateway)
            sid = await _start(gateway.url)
            seqs: list[int] = []
            events: list[str] = []
            async with (
                httpx.AsyncClient(base_url=gateway.url, timeout=30) as client,
                client.stream("GET", f"/v1/streams/{sid}") as response,
            ):
                async for _id, event, data in sse_events(response):
                    events.append(event)
                    if event in ("chunk", "end"):
                        seqs.append(json.loads(data)["seq"])
                    if len(seqs) == BEFORE and proc.returncode is None:
                        proc.send_signal(signal.SIGTERM)
                        await _wait_draining(gateway)
                        refused = await _post(gateway.url)
                        assert refused.status_code == 503, refused.text
                    if event == "end":
                        break
            assert seqs == list(range(N + 1))
            assert "reconnect" not in events
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _serving(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as client, asyncio.timeout(30):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)  # polling a starting process


async def _post(url: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as client:
        return await client.post("/v1/streams", json={"headers": TENANT, "payload": SPEC})
