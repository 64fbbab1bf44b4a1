"""Edge limits of a real ``icefloe serve`` (issue 16): many readers from one
address, and per-address limits that see real clients behind a trusted proxy.

Each test runs the command line in a subprocess, so it checks the defaults
and flags a user gets, and uvicorn's own proxy-header handling with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from icefloe import Context, Message, Node, create
from icefloe.runtime.flow import Flow
from icefloe.transport.auth import ApiKeyAuthenticator
from icefloe.transport.edge import EdgeSettings
from icefloe.transport.limits import EdgeLimits
from servekit import serve_command

#: the icefloe under test (the subprocess must run the same one)

FLOW_MODULE = textwrap.dedent(
    """
    import asyncio

    from icefloe import Context, Message, Node, create


    async def ticks(msg: Message, ctx: Context) -> None:
        # payload: {"n": chunks, "gap": seconds between them}; n < 0 holds forever
        n, gap = msg.payload["n"], msg.payload["gap"]
        if n < 0:
            await ctx.emit_chunk(parent=msg, text="held")
            await asyncio.Event().wait()
        for i in range(n):
            await ctx.emit_chunk(parent=msg, text=f"t{i}")
            await asyncio.sleep(gap)
        await ctx.emit_chunk(parent=msg, text="", done=True)


    flow = create(Node(ticks, name="ticks").to())
    """
)


@contextlib.asynccontextmanager
async def icefloe_serve(tmp_path: Path, *flags: str) -> AsyncIterator[str]:
    """``icefloe serve ticks:flow FLAGS`` on a free loopback port; yields its URL."""
    (tmp_path / "ticksflow.py").write_text(FLOW_MODULE)
    async with serve_command("ticksflow:flow", *flags, cwd=tmp_path) as url:
        yield url


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def _start(url: str, n: int, gap: float) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        r = await client.post(
            "/v1/streams", json={"payload": {"n": n, "gap": gap}, "headers": {"tenant": "t"}}
        )
        assert r.status_code == 201, r.text
        stream_id: str = r.json()["stream_id"]
        return stream_id


async def _sse_reader(port: int, path: str) -> tuple[int, list[int], bool]:
    """One raw-socket SSE reader: the status, every chunk event's id, and
    whether the stream's ``end`` terminal came."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        body = await reader.read()  # the server closes after the terminal
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    ids: list[int] = []
    ended = False
    for event in body.split(b"\n\n"):
        lines = event.split(b"\n")
        ended = ended or b"event: end" in lines
        if b"event: chunk" in lines:
            (id_line,) = [line for line in lines if line.startswith(b"id: ")]
            ids.append(int(id_line[4:]))
    return status, ids, ended


async def test_a_thousand_sse_readers_from_one_address_get_every_chunk(tmp_path: Path) -> None:
    readers = 1000
    chunks = 40
    _raise_fd_limit(readers * 2 + 256)
    async with icefloe_serve(tmp_path) as url, asyncio.timeout(90):
        port = int(url.rsplit(":", 1)[1])
        # Long enough (40 x 0.1 s) that most readers are attached while it runs.
        stream_id = await _start(url, chunks, 0.1)
        path = f"/v1/streams/{stream_id}"
        results = await asyncio.gather(*(_sse_reader(port, path) for _ in range(readers)))
    statuses = sorted({status for status, _, _ in results})
    assert statuses == [200]
    # Every chunk, in order, then the end, to every reader.
    expected = list(range(chunks))
    short = [ids for _, ids, ended in results if ids != expected or not ended]
    assert short == [], f"{len(short)} of {readers} readers missed chunks"


async def _hold(
    client: httpx.AsyncClient, path: str, forwarded_for: str, stack: contextlib.AsyncExitStack
) -> int:
    """Open an SSE reader as ``forwarded_for`` and keep it open; its status."""
    response = await stack.enter_async_context(
        client.stream(
            "GET", path, headers={"accept": "text/event-stream", "x-forwarded-for": forwarded_for}
        )
    )
    return response.status_code


async def _holds(url: str, stream_id: str, addresses: list[str]) -> list[int]:
    async with (
        httpx.AsyncClient(base_url=url, timeout=10) as client,
        contextlib.AsyncExitStack() as stack,
    ):
        return [await _hold(client, f"/v1/streams/{stream_id}", a, stack) for a in addresses]


A, B = "203.0.113.1", "198.51.100.2"


async def test_a_trusted_proxy_s_clients_are_limited_separately(tmp_path: Path) -> None:
    flags = ("--forwarded-allow-ips", "127.0.0.1", "--max-connections", "5")
    async with icefloe_serve(tmp_path, *flags) as url, asyncio.timeout(30):
        stream_id = await _start(url, -1, 0)
        statuses = await _holds(url, stream_id, [A] * 6 + [B] * 5)
    # A's sixth is refused; B, another client behind the same proxy, has its own five.
    assert statuses == [200] * 5 + [429] + [200] * 5


async def test_a_forged_forwarded_for_from_an_untrusted_peer_is_ignored(tmp_path: Path) -> None:
    # The only trusted proxy is elsewhere: 127.0.0.1's headers count for nothing.
    flags = ("--forwarded-allow-ips", "10.9.8.7", "--max-connections", "5")
    async with icefloe_serve(tmp_path, *flags) as url, asyncio.timeout(30):
        stream_id = await _start(url, -1, 0)
        statuses = await _holds(url, stream_id, [A] * 3 + [B] * 3)
    # All six are one client, 127.0.0.1, whatever the header says.
    assert statuses == [200] * 5 + [429]


# -- start-up bursts (issue 16 item 2, docs/qos.md "Start-up bursts") ---------------------


async def _raw_post(port: int, body: bytes) -> tuple[int, bytes]:
    """One POST on its own connection, so the whole burst arrives at once."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /v1/streams HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, payload = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), payload


async def test_a_burst_of_200_starts_is_accepted_and_every_run_ends(tmp_path: Path) -> None:
    starts = 200
    _raise_fd_limit(starts + 256)
    body = json.dumps({"payload": {"n": 0, "gap": 0}, "headers": {"tenant": "t"}}).encode()
    async with icefloe_serve(tmp_path) as url, asyncio.timeout(60):
        port = int(url.rsplit(":", 1)[1])
        answers = await asyncio.gather(*(_raw_post(port, body) for _ in range(starts)))
        refused = [payload for status, payload in answers if status != 201]
        assert refused == []
        ids = [json.loads(payload)["stream_id"] for _, payload in answers]
        # Accepted means run: every stream ends with its end terminal, none with an error.
        async with httpx.AsyncClient(base_url=url, timeout=20) as client:
            ends = [
                (await client.get(f"/v1/streams/{sid}", headers={"accept": "text/event-stream"}))
                for sid in ids
            ]
    failed = [r.text for r in ends if r.status_code != 200 or "event: end" not in r.text]
    assert failed == []


# -- a principal's own limits (API key file; JWT claims use the same parser) ---------


BIG_KEY = "key-big-aaaaaaaaaaaaaaaaaaaa"
SMALL_KEY = "key-small-bbbbbbbbbbbbbbbbbb"


def _held_flow() -> Flow:
    async def hold(msg: Message, ctx: Context) -> None:
        await ctx.emit_chunk(parent=msg, text="held")
        await asyncio.Event().wait()  # runs until the flow stops

    return create(Node(hold, name="hold").to())


async def test_an_api_key_s_own_limit_replaces_the_edge_s_over_http_and_websocket(
    serve: Any,
) -> None:
    keys = ApiKeyAuthenticator(
        {
            BIG_KEY: {"tenant": "acme", "scopes": ["admin"], "limits": {"connections": 3}},
            SMALL_KEY: {"tenant": "acme", "scopes": ["admin"]},
        }
    )
    settings = EdgeSettings(authenticator=keys, edge_limits=EdgeLimits(max_connections=1))
    async with (
        serve(_held_flow(), settings) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
        contextlib.AsyncExitStack() as stack,
        asyncio.timeout(30),
    ):
        r = await client.post(
            "/v1/streams",
            json={"payload": 0, "headers": {"tenant": "acme"}},
            headers={"authorization": f"Bearer {BIG_KEY}"},
        )
        assert r.status_code == 201, r.text
        path = f"/v1/streams/{r.json()['stream_id']}"

        async def sse(key: str) -> int:
            headers = {"authorization": f"Bearer {key}", "accept": "text/event-stream"}
            response = await stack.enter_async_context(client.stream("GET", path, headers=headers))
            return response.status_code

        # The big key: two SSE readers and one WebSocket, then its fourth is refused.
        assert [await sse(BIG_KEY), await sse(BIG_KEY)] == [200, 200]
        ws_url = url.replace("http://", "ws://") + "/v1/ws"
        auth = {"Authorization": f"Bearer {BIG_KEY}"}
        await stack.enter_async_context(
            ws_connect(ws_url, subprotocols=["icefloe.v1.json"], additional_headers=auth)  # type: ignore[list-item]
        )
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(
                ws_url,
                subprotocols=["icefloe.v1.json"],  # type: ignore[list-item]
                additional_headers=auth,
            ):
                pass
        assert refused.value.response.status_code == 429
        assert await sse(BIG_KEY) == 429
        # The small key keeps the edge's limit of one.
        assert [await sse(SMALL_KEY), await sse(SMALL_KEY)] == [200, 429]


# -- admission flags of icefloe serve (issue 15, item 3) -----------------------------


async def _keyed_start(client: httpx.AsyncClient, key: str, tenant: str) -> httpx.Response:
    return await client.post(
        "/v1/streams",
        json={"payload": {"n": -1, "gap": 0}, "headers": {"tenant": tenant}},
        headers={"Authorization": f"Bearer {key}"},
    )


async def test_serve_caps_each_tenant_s_streams_and_connections(tmp_path: Path) -> None:
    scopes = ["streams:start", "streams:read"]
    keys = {
        BIG_KEY: {"tenant": "a", "scopes": scopes},
        SMALL_KEY: {"tenant": "b", "scopes": scopes},
    }
    (tmp_path / "keys.json").write_text(json.dumps(keys))
    flags = (
        "--api-keys",
        "keys.json",
        "--max-streams-per-tenant",
        "3",
        "--tenant-max-connections",
        "2",
    )
    async with (
        icefloe_serve(tmp_path, *flags) as url,
        asyncio.timeout(30),
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        a = [await _keyed_start(client, BIG_KEY, "a") for _ in range(4)]
        assert [r.status_code for r in a] == [201, 201, 201, 503]
        assert a[3].json()["error"]["message"] == (
            "tenant 'a' has reached its stream limit (3); retry later"
        )
        assert (await _keyed_start(client, SMALL_KEY, "b")).status_code == 201
        # Two connections for all of tenant a; the third is refused.
        sid = a[0].json()["stream_id"]
        auth = {"Authorization": f"Bearer {BIG_KEY}", "accept": "text/event-stream"}
        async with contextlib.AsyncExitStack() as stack:
            statuses = [
                (
                    await stack.enter_async_context(
                        client.stream("GET", f"/v1/streams/{sid}", headers=auth)
                    )
                ).status_code
                for _ in range(3)
            ]
        assert statuses == [200, 200, 429]
