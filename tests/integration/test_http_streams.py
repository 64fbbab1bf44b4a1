"""The HTTP contract over a real socket: start, read (SSE/NDJSON), resume, poll, cancel."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from icefloe import Context, Message, Node, create
from icefloe.core.sse import SseParser
from icefloe.transport.app import EdgeSettings
from icefloe.transport.limits import EdgeLimits
from icefloe.transport.streaming import PumpSettings

TENANT = {"tenant": "acme"}
Serve = Any  # the serve fixture of conftest.py: serve(flow, settings=None) -> url


def counting_flow(delay_s: float = 0.0) -> Any:
    """payload = n: emit texts 't0'..'t{n-1}' (with awkward characters), then done."""

    async def count(msg: Message, ctx: Context) -> None:
        for i in range(int(msg.payload)):
            await ctx.emit_chunk(parent=msg, text=f"t{i}\n\r data: {i}")
            if delay_s:
                await asyncio.sleep(delay_s)
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return create(Node(count, name="count").to())


def failing_flow() -> Any:
    async def fail(msg: Message, ctx: Context) -> None:
        await ctx.emit_chunk(parent=msg, text="a")
        raise ValueError("boom")

    return create(Node(fail, name="fail").to())


async def start(client: httpx.AsyncClient, payload: Any, **extra: Any) -> str:
    r = await client.post("/v1/streams", json={"payload": payload, "headers": TENANT, **extra})
    assert r.status_code in (200, 201), r.text
    return str(r.json()["stream_id"])


async def read_sse(
    client: httpx.AsyncClient, sid: str, headers: dict[str, str] | None = None
) -> tuple[list[Any], list[Any]]:
    """(chunk payloads, [error payloads]) of one SSE response."""
    parser = SseParser()
    chunks: list[Any] = []
    errors: list[Any] = []
    async with client.stream("GET", f"/v1/streams/{sid}", headers=headers or {}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        async for data in r.aiter_bytes():
            parser.feed_data(data)
            for ev in parser.events_received():
                if ev.event == "error":
                    errors.append(json.loads(ev.data))
                else:
                    chunk = json.loads(ev.data)
                    assert ev.id == str(chunk["seq"])
                    assert ev.event == ("end" if chunk["done"] else "chunk")
                    chunks.append(chunk)
    return chunks, errors


async def test_post_then_sse_delivers_every_chunk_intact(serve: Serve) -> None:
    async with serve(counting_flow()) as url, httpx.AsyncClient(base_url=url) as client:
        r = await client.post("/v1/streams", json={"payload": 50, "headers": TENANT})
        assert r.status_code == 201
        assert r.headers["location"] == f"/v1/streams/{r.json()['stream_id']}"
        chunks, errors = await read_sse(client, r.json()["stream_id"])
    assert errors == []
    assert [c["seq"] for c in chunks] == list(range(51))
    assert [c["text"] for c in chunks[:-1]] == [f"t{i}\n\r data: {i}" for i in range(50)]
    assert chunks[-1]["done"] is True


async def test_ndjson_and_gzip(serve: Serve) -> None:
    async with serve(counting_flow()) as url, httpx.AsyncClient(base_url=url) as client:
        sid = await start(client, 20)
        headers = {"Accept": "application/x-ndjson", "Accept-Encoding": "gzip"}
        async with client.stream("GET", f"/v1/streams/{sid}", headers=headers) as r:
            assert r.headers["content-type"].startswith("application/x-ndjson")
            assert r.headers["content-encoding"] == "gzip"
            raw = b"".join([part async for part in r.aiter_raw()])
    lines = [json.loads(line) for line in gzip.decompress(raw).splitlines() if line]
    assert [c["seq"] for c in lines] == list(range(21))


async def test_resume_with_last_event_id_and_from_seq(serve: Serve) -> None:
    async with serve(counting_flow()) as url, httpx.AsyncClient(base_url=url) as client:
        sid = await start(client, 30)
        first, _ = await read_sse(client, sid)
        again, _ = await read_sse(client, sid, {"Last-Event-ID": "16"})
        assert [c["seq"] for c in again] == list(range(17, 31))
        r = await client.get(f"/v1/streams/{sid}", params={"from_seq": 31})
        assert r.status_code == 204  # the terminal was delivered: stop reconnecting
        r = await client.get(f"/v1/streams/{sid}", headers={"Last-Event-ID": "x1"})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "bad_request"
    assert len(first) == 31


async def test_unknown_stream_is_404_and_trimmed_history_is_410(serve: Serve) -> None:
    settings = EdgeSettings(history=5)
    async with serve(counting_flow(), settings) as url, httpx.AsyncClient(base_url=url) as client:
        r = await client.get("/v1/streams/nope")
        assert r.status_code == 404
        assert r.json() == {"error": {"code": "not_found", "message": "no such stream"}}
        sid = await start(client, 400)  # well past the window: history is trimmed
        await read_sse(client, sid)
        r = await client.get(f"/v1/streams/{sid}", params={"from_seq": 2})
        assert r.status_code == 410
        assert r.json()["error"]["code"] == "history_gone"


async def test_failed_stream_sends_error_event(serve: Serve) -> None:
    async with serve(failing_flow()) as url, httpx.AsyncClient(base_url=url) as client:
        sid = await start(client, None)
        chunks, errors = await read_sse(client, sid)
    assert [c["text"] for c in chunks] == ["a"]
    assert errors[0]["code"] == "failed"


async def test_status_list_cancel_and_poll(serve: Serve) -> None:
    async with serve(counting_flow(delay_s=0.005)) as url, httpx.AsyncClient(base_url=url) as c:
        sid = await start(c, 10_000)
        polled = (await c.get(f"/v1/streams/{sid}/poll", params={"wait_s": 5})).json()
        assert polled
        assert polled[0]["seq"] == 0
        more = (
            await c.get(
                f"/v1/streams/{sid}/poll", params={"after_seq": polled[-1]["seq"], "wait_s": 5}
            )
        ).json()
        assert more[0]["seq"] == polled[-1]["seq"] + 1
        status = (await c.get(f"/v1/streams/{sid}/status")).json()
        assert status["state"] == "running"
        listed = (await c.get("/v1/streams")).json()["streams"]
        assert sid in [s["stream_id"] for s in listed]
        r = await c.delete(f"/v1/streams/{sid}")
        assert r.status_code == 200
        assert r.json()["state"] == "cancelled"
        _chunks, errors = await read_sse(c, sid)
        assert errors
        assert errors[0]["code"] == "cancelled"
        r = await c.get(f"/v1/streams/{sid}/poll", params={"wait_s": "x"})
        assert r.status_code == 400


async def test_idempotency_key_starts_one_run(serve: Serve) -> None:
    async with serve(counting_flow()) as url, httpx.AsyncClient(base_url=url) as client:
        body = {"payload": 3, "headers": TENANT, "idempotency_key": "k-1"}
        first = await client.post("/v1/streams", json=body)
        second = await client.post("/v1/streams", json=body)
        assert first.status_code == 201
        assert second.status_code == 200
        assert first.json() == second.json()


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b'{"payload": 1}',
        b'{"headers": {"tenant": 5}}',
        b'{"headers": {"tenant": "a"}, "extra": 1}',
        b'{"headers": {"tenant": ""}}',
        b"\xff\xfe",
    ],
)
async def test_bad_bodies_get_400(serve: Serve, body: bytes) -> None:
    async with serve(counting_flow()) as url, httpx.AsyncClient(base_url=url) as client:
        r = await client.post("/v1/streams", content=body)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "bad_request"
        r = await client.post("/v1/streams", content=b"x" * (1024 * 1024 + 1))
        assert r.status_code == 413


async def test_health_ready_metrics_openapi(serve: Serve) -> None:
    async with serve(counting_flow()) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).status_code == 200
        sid = await start(client, 5)
        await read_sse(client, sid)
        metrics = (await client.get("/metrics")).text
        assert "icefloe_streams_admitted_total 1.0" in metrics
        assert "icefloe_http_chunks_sent_total 6.0" in metrics
        assert "icefloe_time_to_first_token_seconds_count 1.0" in metrics
        spec = (await client.get("/openapi.json")).json()
        assert "/v1/streams/{stream_id}" in spec["paths"]
        r = await client.get("/no/such/path")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"


async def test_resume_at_random_disconnect_points_is_exact(serve: Serve) -> None:
    """1,000 random disconnects over a 10,000-chunk stream: every seq once, intact."""
    rng = random.Random(7)
    total = int(os.environ.get("RESUME_TOTAL", 10_000))
    # Small writes: each reconnect parses a few events past its cut, not 64 KiB.
    # A thousand reconnects in seconds: the per-address request rate is off.
    settings = EdgeSettings(
        history=total + 1,
        pump=PumpSettings(max_write_bytes=4096),
        edge_limits=EdgeLimits(requests_per_s=None),
    )
    async with serve(counting_flow(), settings) as url, httpx.AsyncClient(base_url=url) as client:
        sid = await start(client, total)
        cuts = sorted(rng.sample(range(1, total), total // 10))
        got: list[Any] = []
        next_seq = 0
        async with asyncio.timeout(120):
            for cut in [*cuts, None]:
                headers = {"Last-Event-ID": str(next_seq - 1)} if next_seq else {}
                parser = SseParser()
                async with client.stream("GET", f"/v1/streams/{sid}", headers=headers) as r:
                    assert r.status_code == 200
                    done = False
                    async for data in r.aiter_bytes():
                        parser.feed_data(data)
                        for ev in parser.events_received():
                            chunk = json.loads(ev.data)
                            if cut is not None and chunk["seq"] >= cut:
                                done = True  # drop the connection here, mid-stream
                                break
                            got.append(chunk)
                            next_seq = chunk["seq"] + 1
                        if done:
                            break
    assert [c["seq"] for c in got] == list(range(total + 1))
    assert [c["text"] for c in got[:-1]] == [f"t{i}\n\r data: {i}" for i in range(total)]


async def test_slow_client_is_cut_and_its_reader_freed(serve: Serve) -> None:
    settings = EdgeSettings(pump=PumpSettings(heartbeat_s=0.2, send_timeout_s=0.3))

    async def flood(msg: Message, ctx: Context) -> None:
        for _ in range(200_000):
            await ctx.emit_chunk(parent=msg, text="x" * 512)

    flow = create(Node(flood, name="flood").to())
    async with serve(flow, settings) as url, httpx.AsyncClient(base_url=url) as client:
        sid = await start(client, None)
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(f"GET /v1/streams/{sid} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await writer.drain()
            await reader.read(1024)  # read a little, then stop reading: the socket fills
            async with asyncio.timeout(20):
                while True:
                    metrics = (await client.get("/metrics")).text
                    if 'icefloe_http_stream_ends_total{outcome="slow_client"} 1.0' in metrics:
                        break
                    await asyncio.sleep(0.05)
            # Read after the cut was counted: the pump frees its reader before counting.
            status = (await client.get(f"/v1/streams/{sid}/status")).json()
            assert status["subscribers"] == 0
            held = flow.stats().streams.bytes_in_flight
            assert held <= 64 * 512 + 1024 * 512  # the stream's window plus its history
        finally:
            writer.close()


async def test_a_run_nobody_reads_is_cancelled_after_the_unread_timeout(serve: Serve) -> None:
    settings = EdgeSettings(unread_timeout_s=0.2)
    flow = counting_flow(delay_s=0.01)
    async with serve(flow, settings) as url, httpx.AsyncClient(base_url=url) as client:
        unread = await start(client, 10_000)
        read = await start(client, 60)
        async with asyncio.timeout(10):
            chunks, errors = await read_sse(client, read)  # ~0.6 s, longer than the timeout
            while (await client.get(f"/v1/streams/{unread}/status")).json()["state"] == "running":
                await asyncio.sleep(0.02)
        status = (await client.get(f"/v1/streams/{unread}/status")).json()
        metrics = (await client.get("/metrics")).text
    assert status["state"] == "cancelled"
    assert [c["seq"] for c in chunks] == list(range(61))
    assert errors == []
    assert "icefloe_http_unread_cancelled_total 1.0" in metrics


async def test_a_client_that_polls_keeps_its_run_alive_past_the_unread_timeout(
    serve: Serve,
) -> None:
    """A poll detaches its reader between requests; a recent poll still counts as reading."""
    settings = EdgeSettings(unread_timeout_s=1.0)
    async with (
        serve(counting_flow(delay_s=0.01), settings) as url,
        httpx.AsyncClient(base_url=url) as client,
        asyncio.timeout(20),
    ):
        sid = await start(client, 10_000)  # about 100 s of chunks
        loop = asyncio.get_running_loop()
        until = loop.time() + 3.0  # three unread timeouts
        after = -1
        polls = 0
        while loop.time() < until:
            r = await client.get(f"/v1/streams/{sid}/poll", params={"after_seq": after})
            assert r.status_code == 200, r.text
            chunks = r.json()
            assert all("error" not in c for c in chunks), chunks
            if chunks:
                after = chunks[-1]["seq"]
            polls += 1
            await asyncio.sleep(0.2)  # the client's polling interval, not a sync
        status = (await client.get(f"/v1/streams/{sid}/status")).json()
    assert polls >= 5
    assert after > 0
    assert status["state"] == "running"


async def cancelled_mid_stream(client: httpx.AsyncClient) -> tuple[str, int, int]:
    """Start a long run, poll until a few chunks were emitted, cancel it.

    Returns (stream id, the last seq polled, the stream's last seq).
    """
    sid = await start(client, 10_000)
    after = -1
    while after < 5:
        polled = await client.get(
            f"/v1/streams/{sid}/poll", params={"after_seq": after, "wait_s": 5}
        )
        after = polled.json()[-1]["seq"]
    assert (await client.delete(f"/v1/streams/{sid}")).json()["state"] == "cancelled"
    last_seq = (await client.get(f"/v1/streams/{sid}/status")).json()["last_seq"]
    assert last_seq >= after
    return sid, after, int(last_seq)


async def test_a_poll_after_cancellation_gets_the_cancelled_terminal(serve: Serve) -> None:
    async with (
        serve(counting_flow(delay_s=0.005)) as url,
        httpx.AsyncClient(base_url=url) as client,
        asyncio.timeout(20),
    ):
        sid, polled_to, last_seq = await cancelled_mid_stream(client)
        # From the start, from where the client stopped, and from the last seq:
        # the chunks were discarded by the cancel, the terminal is the news.
        answers = [
            await client.get(f"/v1/streams/{sid}/poll", params={"after_seq": after})
            for after in (-1, polled_to, last_seq)
        ]
    for r in answers:
        assert r.status_code == 200, r.text
        polled = r.json()
        assert len(polled) == 1
        assert polled[0]["error"]["code"] == "cancelled"


async def test_every_terminal_has_an_id_and_a_reconnect_with_it_gets_204(serve: Serve) -> None:
    """An abnormal end's id is last_seq + 1, so a browser's reconnect with it stops."""
    async with (
        serve(counting_flow(delay_s=0.005)) as url,
        httpx.AsyncClient(base_url=url) as client,
        asyncio.timeout(20),
    ):
        sid, _, last_seq = await cancelled_mid_stream(client)
        ids: list[str | None] = []
        parser = SseParser()
        # A reconnect with the last chunk's id, as a browser makes after a terminal.
        headers = {"Last-Event-ID": "0"}
        async with client.stream("GET", f"/v1/streams/{sid}", headers=headers) as r:
            assert r.status_code == 200
            async for data in r.aiter_bytes():
                parser.feed_data(data)
                ids += [ev.id for ev in parser.events_received() if ev.event == "error"]
        assert ids == [str(last_seq + 1)]
        again = await client.get(f"/v1/streams/{sid}", headers={"Last-Event-ID": ids[0]})
        assert again.status_code == 204
        # NDJSON resumes explicitly: past the terminal's seq is 204 too.
        past = await client.get(
            f"/v1/streams/{sid}",
            params={"from_seq": last_seq + 2},
            headers={"Accept": "application/x-ndjson"},
        )
        assert past.status_code == 204
        ndjson = await client.get(f"/v1/streams/{sid}", headers={"Accept": "application/x-ndjson"})
        lines = [json.loads(line) for line in ndjson.text.splitlines() if line]
        assert [line["error"]["code"] for line in lines] == ["cancelled"]


async def test_a_cancelled_streams_terminal_is_the_same_over_every_transport(
    serve: Serve,
) -> None:
    """Resuming into a cancelled stream from a discarded seq gets ``cancelled``
    over SSE, NDJSON, long-poll and WebSocket alike (not ``history_gone``)."""
    async with (
        serve(counting_flow(delay_s=0.005)) as url,
        httpx.AsyncClient(base_url=url) as client,
        asyncio.timeout(20),
    ):
        sid, _, _ = await cancelled_mid_stream(client)
        _, sse = await read_sse(client, sid, {"Last-Event-ID": "0"})
        ndjson = await client.get(
            f"/v1/streams/{sid}", params={"from_seq": 1}, headers={"Accept": "application/x-ndjson"}
        )
        polled = (await client.get(f"/v1/streams/{sid}/poll", params={"after_seq": 0})).json()
        ws_url = url.replace("http://", "ws://") + "/v1/ws"
        async with connect(ws_url, subprotocols=["icefloe.v1.json"]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"op": "subscribe", "stream_id": sid, "from_seq": 1}))
            ws_op = json.loads(await ws.recv())
    assert [e["code"] for e in sse] == ["cancelled"]
    assert [json.loads(line)["error"]["code"] for line in ndjson.text.split()] == ["cancelled"]
    assert [p["error"]["code"] for p in polled] == ["cancelled"]
    assert (ws_op["op"], ws_op["code"], ws_op["stream_id"]) == ("error", "cancelled", sid)


async def test_a_client_that_reconnects_keeps_its_run_alive_past_the_unread_timeout(
    serve: Serve,
) -> None:
    """Short reads with gaps between them: each read counts until it ends."""
    settings = EdgeSettings(unread_timeout_s=1.0)
    async with (
        serve(counting_flow(delay_s=0.01), settings) as url,
        httpx.AsyncClient(base_url=url) as client,
        asyncio.timeout(20),
    ):
        sid = await start(client, 10_000)  # about 100 s of chunks
        loop = asyncio.get_running_loop()
        until = loop.time() + 3.0  # three unread timeouts
        next_seq = 0
        while loop.time() < until:
            parser = SseParser()
            headers = {"Last-Event-ID": str(next_seq - 1)} if next_seq else {}
            async with client.stream("GET", f"/v1/streams/{sid}", headers=headers) as r:
                assert r.status_code == 200
                async for data in r.aiter_bytes():
                    parser.feed_data(data)
                    events = parser.events_received()
                    assert all(ev.event == "chunk" for ev in events), events
                    if events:
                        next_seq = int(events[-1].id or 0) + 1
                        break  # one write read: leave, as a flaky network would
            await asyncio.sleep(0.6)  # away longer than it reads, not a sync
        status = (await client.get(f"/v1/streams/{sid}/status")).json()
    assert next_seq > 0
    assert status["state"] == "running"
