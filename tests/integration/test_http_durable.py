"""Durable streams over a real server, across a simulated restart (issue 11).

A "restart" is a second server and flow over the same MemoryStore object:
the first flow stops with its runs unfinished, as a killed process leaves
them (the SIGKILL test over SQLite is tests/e2e/test_durable_kill.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import msgspec
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from icefloe import Context, Message, Node, NodePolicy, create
from icefloe.core.sse import SseParser
from icefloe.store import MemoryStore, StoredChunk, StoreUnavailable, records

TENANT = {"tenant": "acme"}
WORDS = [f"w{i} " for i in range(20)]
Serve = Any


def words_flow(level: str, store: MemoryStore, *, hang_after: int | None = None) -> Any:
    """Emits WORDS from its checkpoint on (checkpoint each chunk); with
    ``hang_after``, stops producing after that many chunks (the crash to come)."""

    async def words(msg: Message, ctx: Context) -> None:
        pos = 0 if ctx.restored_state is None else int(ctx.restored_state)
        while pos < len(WORDS):
            await ctx.emit_chunk(parent=msg, text=WORDS[pos])
            pos += 1
            if level == "exactly_once":
                await ctx.checkpoint(pos)
            if hang_after is not None and pos == hang_after:
                await asyncio.Event().wait()
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return create(Node(words, name="words", policy=NodePolicy(reliability=level)).to(), store=store)


async def read_sse(
    client: httpx.AsyncClient, sid: str, headers: dict[str, str], limit: int | None = None
) -> tuple[list[Any], list[Any]]:
    parser = SseParser()
    chunks: list[Any] = []
    errors: list[Any] = []
    async with client.stream("GET", f"/v1/streams/{sid}", headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        async for data in r.aiter_bytes():
            parser.feed_data(data)
            for ev in parser.events_received():
                if ev.event == "error":
                    errors.append(json.loads(ev.data))
                else:
                    chunks.append(json.loads(ev.data))
            if limit is not None and len(chunks) >= limit:
                break
    return chunks, errors


async def test_exactly_once_resumes_and_a_reader_resumes_with_last_event_id(serve: Serve) -> None:
    store = MemoryStore()
    async with asyncio.timeout(30):
        async with (
            serve(words_flow("exactly_once", store, hang_after=7)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            r = await client.post("/v1/streams", json={"payload": None, "headers": TENANT})
            sid = r.json()["stream_id"]
            first, _ = await read_sse(client, sid, {}, limit=5)
        first = first[:5]  # a client that saw these five, then lost the server
        assert [c["seq"] for c in first] == [0, 1, 2, 3, 4]
        async with (
            serve(words_flow("exactly_once", store)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            rest, errors = await read_sse(client, sid, {"Last-Event-ID": "4"})
            status = (await client.get(f"/v1/streams/{sid}/status")).json()
            polled = (await client.get(f"/v1/streams/{sid}/poll?after_seq=17")).json()
    assert errors == []
    seqs = [c["seq"] for c in first + rest]
    assert seqs == list(range(len(WORDS) + 1))
    assert [c["text"] for c in (first + rest)[:-1]] == WORDS
    assert status["state"] == "done"
    assert [c["seq"] for c in polled] == [18, 19, 20]


async def test_at_least_once_ends_interrupted_and_its_prefix_stays_readable(serve: Serve) -> None:
    store = MemoryStore()
    async with asyncio.timeout(30):
        async with (
            serve(words_flow("at_least_once", store, hang_after=3)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            r = await client.post("/v1/streams", json={"payload": None, "headers": TENANT})
            sid = r.json()["stream_id"]
            await read_sse(client, sid, {}, limit=3)
        async with (
            serve(words_flow("at_least_once", store)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            chunks, errors = await read_sse(client, sid, {})
            status = (await client.get(f"/v1/streams/{sid}/status")).json()
            polled = (await client.get(f"/v1/streams/{sid}/poll?after_seq=0")).json()
    assert [c["text"] for c in chunks] == WORDS[:3]
    assert [e["code"] for e in errors] == ["interrupted"]
    assert status["code"] == "interrupted"
    assert status["last_seq"] == 2
    assert [c.get("seq") for c in polled[:2]] == [1, 2]
    assert polled[2]["error"]["code"] == "interrupted"


async def test_an_idempotency_key_survives_a_restart(serve: Serve) -> None:
    store = MemoryStore()
    body = {"payload": None, "headers": TENANT, "idempotency_key": "order-7"}
    async with asyncio.timeout(30):
        async with (
            serve(words_flow("at_least_once", store)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            first = await client.post("/v1/streams", json=body)
            sid = first.json()["stream_id"]
            chunks, _ = await read_sse(client, sid, {})
        async with (
            serve(words_flow("at_least_once", store)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            again = await client.post("/v1/streams", json=body)
            replay, _ = await read_sse(client, sid, {})
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["stream_id"] == sid
    assert len(chunks) == len(WORDS) + 1
    assert replay == chunks
    assert store.statistics().runs_created == 1


async def test_concurrent_identical_posts_across_a_restart_start_one_run(serve: Serve) -> None:
    store = MemoryStore()
    body = {"payload": None, "headers": TENANT, "idempotency_key": "pay-42"}
    async with asyncio.timeout(60):
        async with (
            serve(words_flow("at_least_once", store, hang_after=3)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            before = await asyncio.gather(
                *(client.post("/v1/streams", json=body) for _ in range(100))
            )
        async with (
            serve(words_flow("at_least_once", store)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            after = await asyncio.gather(
                *(client.post("/v1/streams", json=body) for _ in range(100))
            )
    ids = {r.json()["stream_id"] for r in before + after}
    assert len(ids) == 1
    assert sorted(r.status_code for r in before) == [200] * 99 + [201]
    assert {r.status_code for r in after} == {200}
    assert store.statistics().runs_created == 1


async def test_a_websocket_start_with_an_idempotency_key_joins_the_first_run(serve: Serve) -> None:
    store = MemoryStore()
    body = {"payload": None, "headers": TENANT, "idempotency_key": "ws-1"}
    async with asyncio.timeout(30):
        async with (
            serve(words_flow("at_least_once", store)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            sid = (await client.post("/v1/streams", json=body)).json()["stream_id"]
            ws_url = url.replace("http://", "ws://") + "/v1/ws"
            ws = await connect(ws_url, subprotocols=[Subprotocol("icefloe.v1.json")])
            start = {"op": "start", "ref": "r1", "headers": TENANT, "idempotency_key": "ws-1"}
            await ws.send(json.dumps(start))
            started = json.loads(await ws.recv())
            closing = asyncio.ensure_future(ws.close())
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await ws.recv()  # drain: the server's close waits behind the chunks
            await closing
    assert started["op"] == "started"
    assert started["stream_id"] == sid
    assert store.statistics().runs_created == 1


class FlippingStore(MemoryStore):
    """Reads seq ``bad`` back with one bit flipped (a disk or network fault)."""

    bad = 5

    async def read(self, stream_id: str, from_seq: int, limit: int) -> list[StoredChunk]:
        chunks = await super().read(stream_id, from_seq, limit)
        return [StoredChunk(c.seq, _flip(c.record)) if c.seq == self.bad else c for c in chunks]


def _flip(record: bytes) -> bytes:
    flipped = bytearray(record)
    flipped[len(flipped) // 2] ^= 0x10
    return bytes(flipped)


async def test_a_corrupt_stored_chunk_is_never_delivered(serve: Serve) -> None:
    store = FlippingStore()
    async with asyncio.timeout(30):
        async with (
            serve(words_flow("at_least_once", store)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            r = await client.post("/v1/streams", json={"payload": None, "headers": TENANT})
            sid = r.json()["stream_id"]
            live, _ = await read_sse(client, sid, {})
        async with (
            serve(words_flow("at_least_once", store)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            chunks, errors = await read_sse(client, sid, {})
            polled = (await client.get(f"/v1/streams/{sid}/poll?after_seq=4")).json()
    assert len(live) == len(WORDS) + 1  # live readers got the chunks before the fault
    assert [c["seq"] for c in chunks] == [0, 1, 2, 3, 4]
    assert [e["code"] for e in errors] == ["corrupt"]
    assert polled == [{"error": {"code": "corrupt", "message": "stored seq 5 failed its check"}}]


class UnreadableStore(MemoryStore):
    """Its reads fail once ``down`` is set (an outage after the restart)."""

    down = False

    async def read(self, stream_id: str, from_seq: int, limit: int) -> list[StoredChunk]:
        if self.down:
            raise StoreUnavailable("the store stopped answering")
        return await super().read(stream_id, from_seq, limit)


async def test_a_store_outage_ends_a_stored_read_unavailable(serve: Serve) -> None:
    store = UnreadableStore()
    async with asyncio.timeout(30):
        async with (
            serve(words_flow("at_least_once", store)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            r = await client.post("/v1/streams", json={"payload": None, "headers": TENANT})
            sid = r.json()["stream_id"]
            await read_sse(client, sid, {})
        store.down = True
        async with (
            serve(words_flow("at_least_once", store)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            chunks, errors = await read_sse(client, sid, {})
    assert chunks == []
    assert [e["code"] for e in errors] == ["unavailable"]


async def test_a_keyed_at_most_once_run_is_not_read_from_the_store(serve: Serve) -> None:
    store = MemoryStore()
    body = {"payload": None, "headers": TENANT, "idempotency_key": "plain"}
    async with asyncio.timeout(30):
        async with (
            serve(words_flow("at_most_once", store)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            sid = (await client.post("/v1/streams", json=body)).json()["stream_id"]
            await read_sse(client, sid, {})
        async with (
            serve(words_flow("at_most_once", store)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            again = await client.post("/v1/streams", json=body)
            read = await client.get(f"/v1/streams/{sid}")
            status = (await client.get(f"/v1/streams/{sid}/status")).json()
    assert again.json()["stream_id"] == sid  # the key held across the restart
    assert read.status_code == 404  # its chunks were never stored
    assert status["state"] == "done"


async def ws_ops(url: str, ops: list[dict[str, Any]], until_end: int) -> list[dict[str, Any]]:
    """Send ``ops`` on a fresh WebSocket; the frames received until ``until_end``
    ``end``/``error`` ops arrived."""
    ws = await connect(
        url.replace("http://", "ws://") + "/v1/ws", subprotocols=[Subprotocol("icefloe.v1.json")]
    )
    got: list[dict[str, Any]] = []
    try:
        for op in ops:
            await ws.send(json.dumps(op))
        ends = 0
        while ends < until_end:
            msg = json.loads(await ws.recv())
            got.append(msg)
            ends += msg["op"] in ("end", "error")
    finally:
        closing = asyncio.ensure_future(ws.close())
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()
        await closing
    return got


async def test_a_websocket_subscribe_after_a_restart_reads_the_store(serve: Serve) -> None:
    store = MemoryStore()
    async with asyncio.timeout(30):
        async with (
            serve(words_flow("exactly_once", store, hang_after=7)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            r = await client.post("/v1/streams", json={"payload": None, "headers": TENANT})
            sid = r.json()["stream_id"]
            await read_sse(client, sid, {}, limit=5)
        async with serve(words_flow("exactly_once", store)) as url:
            got = await ws_ops(url, [{"op": "subscribe", "stream_id": sid, "from_seq": 3}], 1)
    chunks = [m for m in got if m["op"] in ("chunk", "end")]
    assert [m["seq"] for m in chunks] == list(range(3, len(WORDS) + 1))
    assert [m["text"] for m in chunks[:-1]] == WORDS[3:]
    assert chunks[-1]["op"] == "end"


async def acked(store: MemoryStore, session: str, sid: str) -> int | None:
    """The last ack of ``sid`` the stored ``session`` holds."""
    held = await store.get_session(session)
    if held is None:
        return None
    kept = msgspec.msgpack.decode(records.decode_session(held))
    return int(kept["streams"].get(sid, -1))


async def test_a_websocket_session_resumes_after_a_restart(serve: Serve) -> None:
    store = MemoryStore()
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        async with serve(words_flow("exactly_once", store, hang_after=7)) as url:
            ws = await connect(
                url.replace("http://", "ws://") + "/v1/ws",
                subprotocols=[Subprotocol("icefloe.v1.json")],
            )
            await ws.send(json.dumps({"op": "hello"}))
            session = json.loads(await ws.recv())["session_id"]
            await ws.send(json.dumps({"op": "start", "ref": "r", "headers": TENANT}))
            sid = json.loads(await ws.recv())["stream_id"]
            while len(seen) < 5:
                msg = json.loads(await ws.recv())
                seen.append(msg)
                await ws.send(json.dumps({"op": "ack", "stream_id": sid, "seq": msg["seq"]}))
            while await acked(store, session, sid) != 4:
                await asyncio.sleep(0.01)  # the session reaches the store in the background
            closing = asyncio.ensure_future(ws.close())
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await ws.recv()
            await closing
        async with serve(words_flow("exactly_once", store)) as url:
            hello = {"op": "hello", "session_id": session, "resume": True}
            got = await ws_ops(url, [hello], 1)
    assert got[0]["op"] == "welcome"
    assert got[0]["resumed"] is True
    rest = [m for m in got if m["op"] in ("chunk", "end")]
    assert [m["seq"] for m in seen + rest] == list(range(len(WORDS) + 1))
    assert [m["text"] for m in (seen + rest)[:-1]] == WORDS
