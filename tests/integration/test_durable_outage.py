"""A store outage under a real server (issue 11): the real Redis server behind a
TCP proxy the test cuts and restores (store/netservers.py).

Two servers share the store, as replicas of one deployment would: one serves
an ``at_most_once`` node, the other an ``at_least_once`` one. While the store
is cut, ``at_most_once`` streams flow on (one that was streaming at the cut,
and new ones); durable starts are refused with ``503 unavailable`` and the
wire error body, and ``/readyz`` says why; once the store answers again,
durable starts go through. Seven outages in a row leave no task, stream or
store-writer run behind, and no memory growth.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis.asyncio
from redis.exceptions import RedisError
from store.netservers import REDIS_URL, UNREACHABLE, TcpProxy, unreachable
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from icefloe import Context, Flow, Limits, Message, Node, NodePolicy, create
from icefloe.core.breaker import BreakerPolicy
from icefloe.core.sse import SseParser
from icefloe.store.redis import RedisStore
from icefloe.store.resilient import ResilientStore, RetryPolicy

TENANT = {"tenant": "acme"}
#: seconds the breaker stays open before a probe (short: the test waits it out)
RESET_AFTER_S = 0.3
#: outages before the measure (caches, pools and timers fill up) and measured
WARM_UP, OUTAGES = 3, 4
#: how long an ended stream stays registered
LINGER_S = 0.3
#: what each outage may leave behind in this process after the warm-up (tracemalloc;
#: one stream's chunks kept by mistake would be more)
MAX_GROWTH_PER_OUTAGE = 40 * 1024
Serve = Any


async def lines(msg: Message, ctx: Context) -> None:
    """payload = n: n chunks ``line i``, 5 ms apart, then done."""
    for i in range(int(msg.payload)):
        await ctx.emit_chunk(parent=msg, text=f"line {i}\n")
        await asyncio.sleep(0.005)
    await ctx.emit_chunk(parent=msg, text="", done=True)


def flow_over(proxy: TcpProxy, prefix: str, level: str) -> Flow:
    """A flow whose node is at ``level``, on Redis through ``proxy``."""
    db = urlsplit(REDIS_URL).path or "/0"
    inner = RedisStore(f"redis://127.0.0.1:{proxy.listen_port}{db}", prefix=prefix, timeout_s=1)
    store = ResilientStore(
        inner,
        timeout_s=1,
        retry=RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.05),
        breaker=BreakerPolicy(failure_threshold=3, reset_after_s=RESET_AFTER_S),
    )
    node = Node(lines, name="lines", policy=NodePolicy(reliability=level))
    # Ended streams linger briefly, so the test can wait until none is held.
    return create(node.to(), store=store, limits=Limits(linger_s=LINGER_S))


async def settled(*flows: Flow) -> None:
    """Wait until no stream is registered and no run is tracked by a store writer."""

    def held(flow: Flow) -> int:
        stats = flow.stats()
        durable = stats.durable
        assert durable is not None
        return stats.streams.registered + durable.runs + durable.pending

    async with asyncio.timeout(10):
        while any(held(flow) for flow in flows):
            await asyncio.sleep(LINGER_S / 3)


@pytest.fixture
async def redis_proxy() -> AsyncIterator[tuple[TcpProxy, str]]:
    """Redis behind a proxy the test can cut, and a key prefix of this test's
    own (its keys are deleted afterwards)."""
    admin = redis.asyncio.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        await admin.ping()
    except (RedisError, *UNREACHABLE) as exc:
        await admin.aclose()
        unreachable("Redis", REDIS_URL, exc)
    prefix = f"icefloe-outage:{uuid.uuid4().hex[:12]}:"
    parts = urlsplit(REDIS_URL)
    try:
        async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
            yield proxy, prefix
    finally:
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()


async def start(client: httpx.AsyncClient, n: int) -> httpx.Response:
    return await client.post("/v1/streams", json={"payload": n, "headers": TENANT})


async def read_all(client: httpx.AsyncClient, sid: str) -> tuple[list[Any], list[Any]]:
    """The chunks and error events of ``sid``'s SSE stream, to its end."""
    parser = SseParser()
    chunks: list[Any] = []
    errors: list[Any] = []
    async with client.stream("GET", f"/v1/streams/{sid}") as r:
        assert r.status_code == 200, await r.aread()
        async for data in r.aiter_bytes():
            parser.feed_data(data)
            for ev in parser.events_received():
                (errors if ev.event == "error" else chunks).append(json.loads(ev.data))
    return chunks, errors


async def run_through(client: httpx.AsyncClient, n: int) -> None:
    """Start a run of ``n`` chunks and read it whole: every seq, in order, done."""
    r = await start(client, n)
    assert r.status_code == 201, r.text
    chunks, errors = await read_all(client, r.json()["stream_id"])
    assert errors == []
    assert [c["seq"] for c in chunks] == list(range(n + 1))
    assert chunks[-1]["done"] is True


async def ws_run_through(base_url: str, n: int) -> None:
    """A WebSocket session (kept in the store when it answers) starts a run of
    ``n`` chunks and reads it whole."""
    url = base_url.replace("http://", "ws://") + "/v1/ws"
    async with connect(url, subprotocols=[Subprotocol("icefloe.v1.json")]) as ws:
        await ws.send(json.dumps({"op": "hello"}))
        assert "session_id" in json.loads(await ws.recv())
        await ws.send(json.dumps({"op": "start", "ref": "r", "payload": n, "headers": TENANT}))
        started = json.loads(await ws.recv())
        assert "stream_id" in started, started
        seqs = []
        while True:
            msg = json.loads(await ws.recv())
            assert msg["op"] in ("chunk", "end"), msg
            seqs.append(msg["seq"])
            await ws.send(
                json.dumps({"op": "ack", "stream_id": msg["stream_id"], "seq": msg["seq"]})
            )
            if msg["op"] == "end":
                break
    assert seqs == list(range(n + 1))


async def refused_while_down(client: httpx.AsyncClient) -> list[Any]:
    """Durable starts during the outage: each is a 503 with the wire error body."""
    bodies = []
    for _ in range(6):  # past the breaker's threshold: the later ones fail fast
        r = await start(client, 5)
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "1"
        bodies.append(r.json())
    return bodies


async def recovered(client: httpx.AsyncClient) -> tuple[int, float]:
    """Poll durable starts until one goes through: the refusals before it, and
    the seconds from the first try to its answer."""
    refusals = 0
    began = time.monotonic()
    while True:
        r = await start(client, 5)
        if r.status_code == 201:
            took = time.monotonic() - began
            chunks, errors = await read_all(client, r.json()["stream_id"])
            assert errors == []
            assert [c["seq"] for c in chunks] == list(range(6))
            return refusals, took
        assert r.status_code == 503, r.text
        refusals += 1
        await asyncio.sleep(RESET_AFTER_S / 3)  # the breaker's probe comes after reset_after_s


async def outage(
    proxy: TcpProxy, fast: httpx.AsyncClient, durable: httpx.AsyncClient, *, with_ws: bool = False
) -> tuple[int, int, float]:
    """One outage: cut the store mid-run, check both servers, restore, recover.

    ``with_ws``: also run an ``at_most_once`` stream over a WebSocket session
    (its writes to the store fail). Only in the warm-up: a detached session is
    kept ``session_ttl_s`` (30 s) for a resume, which the memory check would count.
    """
    streaming = await start(fast, 200)  # about 1 s of chunks, read across the cut
    assert streaming.status_code == 201, streaming.text
    long_read = asyncio.ensure_future(read_all(fast, streaming.json()["stream_id"]))
    in_flight = await start(durable, 400)
    assert in_flight.status_code == 201, in_flight.text
    in_flight_read = asyncio.ensure_future(read_all(durable, in_flight.json()["stream_id"]))
    proxy.cut()
    bodies = await refused_while_down(durable)
    ready = (await durable.get("/readyz")).json()
    await run_through(fast, 20)  # a new at_most_once stream during the outage
    if with_ws:  # and one over a WebSocket session
        await ws_run_through(str(fast.base_url), 20)
    chunks, errors = await long_read
    assert errors == []
    assert [c["seq"] for c in chunks] == list(range(201))
    # The durable run that was producing at the cut ends, and says why.
    durable_chunks, durable_errors = await in_flight_read
    proxy.restore()
    refusals, took = await recovered(durable)
    after = (await durable.get("/readyz")).json()
    check_outage(bodies, ready, after, durable_chunks, durable_errors)
    # Counts only: the test keeps nothing per outage that could look like a leak.
    return len(bodies), refusals, took


def check_outage(
    bodies: list[Any], ready: Any, after: Any, chunks: list[Any], errors: list[Any]
) -> None:
    for body in bodies:
        assert set(body) == {"error"}
        assert body["error"]["code"] == "unavailable"
        assert "stream store is unavailable" in body["error"]["message"]
        assert "at_least_once" in body["error"]["message"]
    assert ready["status"] == "ready"  # at_most_once runs go on
    store = ready["store"]
    assert store["available"] is False
    assert "calls failed in a row" in store["reason"], store
    assert after["store"] == {"available": True}
    assert [e["code"] for e in errors] == ["unavailable"], errors
    assert [c["seq"] for c in chunks] == list(range(len(chunks)))


async def test_a_store_outage_refuses_durable_starts_and_spares_at_most_once(
    serve: Serve, redis_proxy: tuple[TcpProxy, str], caplog: pytest.LogCaptureFixture
) -> None:
    # Each failed durable run and session write logs, which pytest would keep
    # (and the memory check count): this test is not about logs.
    caplog.set_level(logging.CRITICAL, logger="icefloe.durable")
    caplog.set_level(logging.CRITICAL, logger="icefloe.store")
    proxy, prefix = redis_proxy
    fast_flow = flow_over(proxy, prefix, "at_most_once")
    durable_flow = flow_over(proxy, prefix, "at_least_once")
    async with asyncio.timeout(90):
        async with (
            serve(fast_flow) as fast_url,
            serve(durable_flow) as durable_url,
            httpx.AsyncClient(base_url=fast_url, timeout=10) as fast,
            httpx.AsyncClient(base_url=durable_url, timeout=10) as durable,
        ):
            await run_through(durable, 20)  # the store works before the outage
            assert (await durable.get("/readyz")).json()["store"] == {"available": True}
            seen = [await outage(proxy, fast, durable, with_ws=True) for _ in range(WARM_UP)]
            await settled(fast_flow, durable_flow)
            gc.collect()
            tasks_before = len(asyncio.all_tasks())
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                seen += [await outage(proxy, fast, durable) for _ in range(OUTAGES)]
                await settled(fast_flow, durable_flow)
                gc.collect()
                grown = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            tasks_after = len(asyncio.all_tasks())
    # Nothing accumulates across outages: streams and writer runs (settled()),
    # tasks (both servers, their flows and store writers, this test's clients)
    # and memory.
    assert tasks_after <= tasks_before, (tasks_before, tasks_after)
    assert grown < OUTAGES * MAX_GROWTH_PER_OUTAGE, grown
    print(
        f"{WARM_UP + OUTAGES} outages: {sum(s[0] for s in seen)} durable starts refused"
        f" with 503, {sum(s[1] for s in seen)} more after the store came back; first"
        f" durable start after it in {max(s[2] for s in seen) * 1000:.0f} ms at worst; tasks"
        f" {tasks_before} -> {tasks_after}, memory +{grown} bytes over the last {OUTAGES}"
    )
