"""``GET /v1/events``: several streams and topics on one SSE connection (issue 14, part 4).

Every test talks to a real uvicorn server over a real socket: tagging,
per-stream resume through the cursor id, auth and tenants, bad parameters
(400 with the wire error body) and the limits.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx

from icefloe import Context, Message, Node, NodePolicy, create
from icefloe.core.wire_errors import ErrorCode
from icefloe.runtime.flow import Flow
from icefloe.transport.app import EdgeSettings
from icefloe.transport.auth import ApiKeyAuthenticator
from icefloe.transport.limits import EdgeLimits
from icefloe.transport.multiplex import MAX_SOURCES
from icefloe.transport.streaming import PumpSettings

Serve = Any  # the serve fixture of conftest.py

#: chunks each test stream emits before its end
CHUNKS = 12
KEY_A = "tenant-a-key-0123456789"
KEY_B = "tenant-b-key-0123456789"
KEY_NO_TOPICS = "no-topics-key-0123456789"
GRANTS = {
    KEY_A: {"tenant": "a", "scopes": ["streams:start", "streams:read", "topics:read"]},
    KEY_B: {"tenant": "b", "scopes": ["streams:start", "streams:read", "topics:read"]},
    KEY_NO_TOPICS: {"tenant": "a", "scopes": ["streams:read"]},
}

Event = tuple[str, str | None, dict[str, Any]]


def gated_flow(gate: asyncio.Event) -> Flow:
    """Each stream emits half its chunks, waits for ``gate``, then the rest and its end."""

    async def tokens(msg: Message, ctx: Context) -> None:
        for i in range(CHUNKS):
            if i == CHUNKS // 2:
                await gate.wait()
            await ctx.emit_chunk(parent=msg, text=f"{msg.payload}-{i} ")
        await ctx.emit_chunk(parent=msg, text="", done=True)

    policy = NodePolicy(max_concurrency=16)
    return create(Node(tokens, name="tokens", policy=policy).to(), congestion=None)


async def start(client: httpx.AsyncClient, name: str, tenant: str = "t") -> str:
    r = await client.post("/v1/streams", json={"payload": name, "headers": {"tenant": tenant}})
    assert r.status_code == 201, r.text
    stream_id: str = r.json()["stream_id"]
    return stream_id


async def sse(response: httpx.Response) -> AsyncIterator[Event]:
    """(event, id, data) of each SSE event of ``response``."""
    name, ident, data = "message", None, ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("id: "):
            ident = line[4:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and data:
            yield name, ident, json.loads(data)
            name, ident, data = "message", None, ""


Params = list[tuple[str, str | int | float | bool | None]]


def query(streams: list[str], topics: tuple[str, ...] = ()) -> Params:
    params: Params = [("stream", s) for s in streams]
    params += [("topic", t) for t in topics]
    return params


async def test_each_event_is_tagged_with_its_stream_or_topic(serve: Serve) -> None:
    gate = asyncio.Event()
    async with (
        asyncio.timeout(30),
        serve(gated_flow(gate)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        ids = [await start(client, f"s{i}") for i in range(3)]
        seen: dict[str, list[int]] = {sid: [] for sid in ids}
        events: list[dict[str, Any]] = []
        ends: set[str] = set()
        params = query(ids, ("news",))
        async with client.stream("GET", "/v1/events", params=params) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            published = False
            async for name, ident, data in sse(r):
                assert ident is not None
                assert ident.count(",") == len(params) - 1
                if name in ("chunk", "end"):
                    seen[data["stream_id"]].append(data["seq"])
                    if name == "end":
                        ends.add(data["stream_id"])
                elif name == "event":
                    events.append(data)
                if not published and all(len(v) == CHUNKS // 2 for v in seen.values()):
                    published = True
                    p = await client.post("/v1/topics/news", json={"data": {"n": 1}})
                    assert p.status_code == 201
                if events and not gate.is_set():
                    gate.set()
                if len(ends) == len(ids) and events:
                    break
        for sid in ids:
            assert seen[sid] == list(range(CHUNKS + 1)), sid  # CHUNKS chunks and the end
        assert [(e["topic"], e["data"]) for e in events] == [("news", {"n": 1})]


async def test_last_event_id_resumes_every_stream_exactly(serve: Serve) -> None:
    gate = asyncio.Event()
    async with (
        asyncio.timeout(30),
        serve(gated_flow(gate)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        ids = [await start(client, f"s{i}") for i in range(4)]
        got: dict[str, list[int]] = {sid: [] for sid in ids}
        last: str | None = None
        # First connection: stop after the first few events, mid-streams.
        async with client.stream("GET", "/v1/events", params=query(ids)) as r:
            async for _, ident, data in sse(r):
                got[data["stream_id"]].append(data["seq"])
                last = ident
                if sum(map(len, got.values())) == 7:
                    break
        assert last is not None
        gate.set()
        ended = 0
        headers = {"Last-Event-ID": last}
        async with client.stream("GET", "/v1/events", params=query(ids), headers=headers) as r:
            async for name, ident, data in sse(r):
                got[data["stream_id"]].append(data["seq"])
                last = ident
                ended += name == "end"
                if ended == len(ids):
                    break
        for sid in ids:
            assert got[sid] == list(range(CHUNKS + 1)), sid
        # Everything was delivered: the cursor now says so, and the server answers 204.
        assert last is not None
        assert last.endswith(",".join(["x"] * len(ids)))
        again = await client.get("/v1/events", params=query(ids), headers={"Last-Event-ID": last})
        assert again.status_code == 204


async def test_a_raw_socket_resumes_with_from_and_sees_the_framing(serve: Serve) -> None:
    gate = asyncio.Event()
    gate.set()
    async with (
        asyncio.timeout(30),
        serve(gated_flow(gate)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        sid = await start(client, "raw")
        async with client.stream("GET", "/v1/events", params=query([sid])) as r:
            first = [e async for e in sse(r)]
        assert [e[0] for e in first] == ["chunk"] * CHUNKS + ["end"]
        # Resume after seq 9 (the cursor's position is the next seq: 10).
        cursor = first[9][1]
        assert cursor is not None
        assert cursor.endswith(":10")
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        path = f"/v1/events?stream={sid}&from={cursor}"
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n".encode())
        await writer.drain()
        raw = b""
        while b"event: end" not in raw:
            chunk = await reader.read(65536)
            assert chunk, raw
            raw += chunk
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"text/event-stream" in head
        assert b"retry: " in body
        assert body.count(b"event: chunk") == CHUNKS - 10
        assert f'"stream_id":"{sid}","seq":10,'.encode() in body


async def test_another_tenants_stream_reads_as_unknown(serve: Serve) -> None:
    gate = asyncio.Event()
    gate.set()
    settings = EdgeSettings(authenticator=ApiKeyAuthenticator(GRANTS))
    async with (
        asyncio.timeout(30),
        serve(gated_flow(gate), settings) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        a = {"Authorization": f"Bearer {KEY_A}"}
        b = {"Authorization": f"Bearer {KEY_B}"}
        r = await client.post(
            "/v1/streams", json={"payload": "x", "headers": {"tenant": "a"}}, headers=a
        )
        sid = r.json()["stream_id"]
        foreign = await client.get("/v1/events", params=query([sid]), headers=b)
        unknown = await client.get("/v1/events", params=query(["nope"]), headers=b)
        assert foreign.status_code == unknown.status_code == 404
        assert foreign.json()["error"]["code"] == ErrorCode.NOT_FOUND.value
        assert foreign.json()["error"]["message"].replace(sid, "ID") == unknown.json()["error"][
            "message"
        ].replace("nope", "ID")
        assert (await client.get("/v1/events", params=query([sid]))).status_code == 401
        # EventSource cannot send headers: the token may come as ?access_token=.
        by_query = [*query([sid]), ("access_token", KEY_A)]
        async with client.stream("GET", "/v1/events", params=by_query) as ok:
            assert ok.status_code == 200
        no_topics = {"Authorization": f"Bearer {KEY_NO_TOPICS}"}
        r = await client.get("/v1/events", params=query([sid], ("news",)), headers=no_topics)
        assert r.status_code == 403
        async with client.stream("GET", "/v1/events", params=query([sid]), headers=a) as ok:
            assert ok.status_code == 200
            names = [e[0] async for e in sse(ok)]
        assert names[-1] == "end"


async def test_bad_parameters_are_400_with_the_wire_error_body(serve: Serve) -> None:
    gate = asyncio.Event()
    async with (
        asyncio.timeout(30),
        serve(gated_flow(gate)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        sid = await start(client, "s")
        too_many: Params = [("topic", f"t{i}") for i in range(MAX_SOURCES + 1)]
        cases: list[tuple[Params, dict[str, str], str]] = [
            ([], {}, "at least one"),
            ([("stream", sid), ("from_seq", "3")], {}, "from_seq"),
            (too_many, {}, f"at most {MAX_SOURCES}"),
            ([("stream", sid), ("stream", sid)], {}, "twice"),
            ([("topic", "a.>.b")], {}, "topic"),
            ([("stream", sid)], {"Last-Event-ID": "garbage"}, "Last-Event-ID"),
            ([("stream", sid)], {"Last-Event-ID": "00000000:1"}, "Last-Event-ID"),
            ([("stream", sid), ("from", "zz")], {}, "Last-Event-ID"),
        ]
        for params, headers, needle in cases:
            r = await client.get("/v1/events", params=params, headers=headers)
            assert r.status_code == 400, (params, r.text)
            body = r.json()
            assert set(body) == {"error"}
            assert body["error"]["code"] == ErrorCode.BAD_REQUEST.value
            assert needle in body["error"]["message"], (needle, body)
        # A well-formed cursor of this list whose position is past the stream's end.
        async with client.stream("GET", "/v1/events", params=query([sid])) as r:
            async for _, ident, _data in sse(r):
                assert ident is not None
                tag = ident.partition(":")[0]
                break
        r = await client.get(
            "/v1/events", params=query([sid]), headers={"Last-Event-ID": f"{tag}:999"}
        )
        assert r.status_code == 400
        assert "past its end" in r.json()["error"]["message"]
        gate.set()


async def test_a_cancelled_stream_ends_alone_and_the_others_go_on(serve: Serve) -> None:
    gate = asyncio.Event()
    async with (
        asyncio.timeout(30),
        serve(gated_flow(gate)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        doomed, other = await start(client, "d"), await start(client, "o")
        errors: list[dict[str, Any]] = []
        ended: list[str] = []
        async with client.stream("GET", "/v1/events", params=query([doomed, other])) as r:
            cancelled = False
            async for name, _, data in sse(r):
                if not cancelled:
                    cancelled = True
                    assert (await client.delete(f"/v1/streams/{doomed}")).status_code == 200
                if name == "error":
                    errors.append(data)
                    gate.set()
                if name == "end":
                    ended.append(data["stream_id"])
        assert [(e["stream_id"], e["code"]) for e in errors] == [(doomed, "cancelled")]
        assert ended == [other]  # then the response ended: nothing was left to follow


#: chunks of the flood streams, and their size
FLOOD = 20_000
FAT = "x" * 100
HISTORY = 512


def flood_flow(gate: asyncio.Event) -> Flow:
    async def flood(msg: Message, ctx: Context) -> None:
        await gate.wait()
        for _ in range(FLOOD):
            await ctx.emit_chunk(parent=msg, text=FAT)
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return create(Node(flood, name="flood", policy=NodePolicy(max_concurrency=4)).to())


async def test_a_client_that_stops_reading_holds_no_memory_and_is_cut(serve: Serve) -> None:
    gate = asyncio.Event()
    settings = EdgeSettings(
        history=HISTORY,
        pump=PumpSettings(heartbeat_s=0.25, send_timeout_s=1.0),
        edge_limits=EdgeLimits(requests_per_s=None, max_connections=None),
    )
    flow = flood_flow(gate)
    async with (
        asyncio.timeout(60),
        serve(flow, settings) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        ids = [await start(client, f"s{i}") for i in range(2)]
        host, port = url.removeprefix("http://").split(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never read
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        _, stalled = await asyncio.open_connection(sock=sock)
        query_string = "&".join(f"stream={sid}" for sid in ids)
        stalled.write(f"GET /v1/events?{query_string} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        await stalled.drain()
        while not all(getattr(flow.lookup(sid), "subscribers", 0) for sid in ids):
            await asyncio.sleep(0.01)
        gate.set()
        # A reader that keeps up reads both streams to their ends meanwhile.
        ends = 0
        async with client.stream("GET", "/v1/events", params=query(ids)) as r:
            async for name, _, _data in sse(r):
                ends += name == "end"
        assert ends == 2
        held = [s.buffered_bytes for s in map(flow.lookup, ids) if s is not None]
        # What the stalled client costs: each stream's history and window, no more.
        assert all(h <= (HISTORY + 256 + 32) * len(FAT) for h in held), held
        # It is cut by the send timeout (or left behind with history_gone): no
        # connection is left open, and the streams have no reader.
        while "icefloe_http_stream_connections 0.0" not in (await client.get("/metrics")).text:
            await asyncio.sleep(0.05)
        stalled.close()
        # From seq 0 again: the history no longer holds it. That stream alone
        # says so in the body, with its id; the response then ends.
        async with client.stream("GET", "/v1/events", params=query(ids[:1])) as r:
            events = [e async for e in sse(r)]
        assert [(name, data["code"], data["stream_id"]) for name, _, data in events] == [
            ("error", "history_gone", ids[0])
        ]
        again = await client.get(
            "/v1/events", params=query(ids[:1]), headers={"Last-Event-ID": str(events[0][1])}
        )
        assert again.status_code == 204


async def test_thirty_two_sources_are_accepted(serve: Serve) -> None:
    gate = asyncio.Event()
    gate.set()
    async with (
        asyncio.timeout(30),
        serve(gated_flow(gate)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        ids = [await start(client, f"s{i}") for i in range(MAX_SOURCES // 2)]
        topics = tuple(f"t.{i}" for i in range(MAX_SOURCES - len(ids)))
        ends = 0
        async with client.stream("GET", "/v1/events", params=query(ids, topics)) as r:
            assert r.status_code == 200
            async for name, ident, _ in sse(r):
                assert ident is not None
                assert len(ident) <= 9 + MAX_SOURCES * 20
                ends += name == "end"
                if ends == len(ids):
                    break
