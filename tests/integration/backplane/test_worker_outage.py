"""A worker's engine outage (issue 12): its appends are retried within the
backplane's budget, as a producing gateway's are, so a blip costs the
readers a pause and no chunk.

The worker runs in this process and reaches Redis through :class:`ReplyCut`,
which cuts it off just after one of its appends reached Redis: the append
went through, its answer is lost, and the worker's retry sends it again.
The run's reader is a ``--no-runs`` gateway on Redis itself.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
import redis.asyncio
from cluster import REDIS_URL, cluster, sse_events
from wflow import at_least_once, text_of

from icefloe.backplane.keys import Keys
from icefloe.transport.backplane_worker import Worker

pytestmark = pytest.mark.timeout(90)

#: longer than redis-py's own reconnect attempts (10, at most about 5.3 s in
#: all), longer than the 3 s lease, well within the 20 s retry budget
OUTAGE_S = 7.0


class ReplyCut:
    """A TCP proxy to Redis that, once a command carrying ``marker`` has gone
    through to Redis, drops every answer, closes every connection and turns
    new ones away for ``outage_s`` seconds."""

    def __init__(self, marker: bytes, outage_s: float) -> None:
        host, _, rest = REDIS_URL.removeprefix("redis://").partition(":")
        self._target = (host, int(rest.split("/")[0]))
        self._marker = marker
        self._outage_s = outage_s
        #: the worker's side of each connection
        self._clients: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._down = False
        #: set once the marked command went through and the cut began
        self.cut = asyncio.Event()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def __aenter__(self) -> ReplyCut:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._hang_up()
        await self._server.wait_closed()

    def _hang_up(self) -> None:
        for writer in self._clients:
            writer.close()
        self._clients.clear()

    def _begin_cut(self) -> None:
        self._down = True  # from here on no answer reaches the worker
        self.cut.set()
        self._hang_up()
        asyncio.get_running_loop().call_later(self._outage_s, setattr, self, "_down", False)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._down:
            writer.close()
            return
        self._clients.add(writer)
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        await asyncio.gather(
            self._relay(reader, up_writer, requests=True),
            self._relay(up_reader, writer, requests=False),
            return_exceptions=True,  # a cut connection: nothing to report
        )

    async def _relay(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, requests: bool
    ) -> None:
        """Requests go on to Redis (the marked one included, before the cut:
        the worker's connection closes, Redis still gets it); answers are
        dropped from the cut on."""
        tail = b""  # a marker may straddle two reads
        try:
            while (data := await src.read(1 << 16)) and (requests or not self._down):
                dst.write(data)
                if requests and not self.cut.is_set() and self._marker in tail + data:
                    self._begin_cut()
                tail = (tail + data)[-len(self._marker) :]
                await dst.drain()
        finally:
            dst.close()


async def _events(url: str, sid: str) -> list[tuple[str, dict[str, Any]]]:
    """The stream's SSE events from seq 0 to its end, as (event, data)."""
    async with (
        httpx.AsyncClient(base_url=url, timeout=60) as client,
        client.stream("GET", f"/v1/streams/{sid}") as response,
    ):
        assert response.status_code == 200, await response.aread()
        return [(event, json.loads(data)) async for _id, event, data in sse_events(response)]


async def test_a_worker_run_loses_nothing_across_an_engine_blip() -> None:
    """An at_least_once run (which a take-over would end ``interrupted``)
    goes on across a cut longer than redis-py's own reconnects: every seq
    once, in order, then ``done``."""
    n, cut_seq = 120, 50
    prefix = f"icefloe:test:{uuid.uuid4().hex[:10]}:"
    direct = redis.asyncio.Redis.from_url(REDIS_URL)
    async with (
        asyncio.timeout(80),
        cluster(1, "--no-runs", prefix=prefix) as gws,
        ReplyCut(text_of(cut_seq).encode(), OUTAGE_S) as proxy,
    ):
        worker = Worker(at_least_once(), f"{proxy.url}?prefix={prefix}", drain_timeout_s=5)
        running = asyncio.ensure_future(worker.run())
        try:
            async with httpx.AsyncClient(base_url=gws[0].url) as client:
                started = await client.post(
                    "/v1/streams",
                    json={"headers": {"tenant": "t1"}, "payload": {"n": n, "pace_ms": 10}},
                )
            assert started.status_code == 201, started.text
            sid = started.json()["stream_id"]
            reader = asyncio.ensure_future(_events(gws[0].url, sid))
            await proxy.cut.wait()
            # The cut append went through: only its answer was lost.
            meta = Keys(prefix).meta(sid)
            async with asyncio.timeout(5):
                while int(await direct.hget(meta, "last_seq") or -1) < cut_seq:
                    await asyncio.sleep(0.01)  # polling what Redis ran of the proxied command
            events = await reader
            # Every seq once, in order, each with its text, then the done chunk.
            assert [event for event, _data in events] == ["chunk"] * n + ["end"]
            assert [data["seq"] for _event, data in events] == list(range(n + 1))
            assert [data["text"] for _event, data in events] == [*map(text_of, range(n)), ""]
            async with asyncio.timeout(5):  # the done chunk is in the log before the state
                while await direct.hget(meta, "state") != b"done":
                    await asyncio.sleep(0.01)  # polling the worker's next script
        finally:
            worker.drain()
            await running
            await direct.aclose()
