"""``/v1/chat`` and the tenant rules across gateways (issue 12).

Real ``icefloe serve --backplane`` processes (:mod:`cluster`); the tenant
tests authenticate with API keys, one per tenant.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from cluster import cluster
from test_remote_ws import Ws, ws_client

SCOPES = ["streams:start", "streams:read", "streams:cancel", "topics:read", "topics:publish"]
KEY_A, KEY_B = "key-a-0123456789", "key-b-0123456789"
AUTH_A = {"Authorization": f"Bearer {KEY_A}"}
AUTH_B = {"Authorization": f"Bearer {KEY_B}"}


def chat_body(chat_id: str, **spec: Any) -> dict[str, Any]:
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
    return {"id": chat_id, "messages": [user], "trigger": "submit-message", **spec}


async def read_parts(response: httpx.Response, stop_after: int | None = None) -> list[Any]:
    parts: list[Any] = []
    async for line in response.aiter_lines():
        if not line.startswith("data: "):
            continue
        data = line[6:]
        parts.append(data if data == "[DONE]" else json.loads(data))
        if stop_after is not None and len(parts) >= stop_after:
            break
    return parts


async def test_a_chat_reply_resumes_and_stops_on_another_gateway() -> None:
    async with asyncio.timeout(60), cluster(2) as gws:
        n = 40
        body = chat_body("c1", n=n, every=1, pause_ms=10)
        async with (
            httpx.AsyncClient(base_url=gws[0].url, timeout=30) as first,
            first.stream("POST", "/v1/chat", json=body) as posted,
        ):
            assert posted.status_code == 200
            await read_parts(posted, stop_after=5)  # the page reloads mid-reply
        async with (
            httpx.AsyncClient(base_url=gws[1].url, timeout=30) as second,
            second.stream("GET", "/v1/chat/c1/stream") as resumed,
        ):
            assert resumed.status_code == 200
            assert resumed.headers["x-vercel-ai-ui-message-stream"] == "v1"
            parts = await read_parts(resumed)
        deltas = [p for p in parts if isinstance(p, dict) and p["type"] == "text-delta"]
        assert len(deltas) == n  # the whole reply, from its start
        assert parts[-2:] == [{"type": "finish"}, "[DONE]"]
        # A stop on another gateway cancels the reply where it runs.
        long = chat_body("c2", n=100_000, every=1, pause_ms=5)
        async with httpx.AsyncClient(base_url=gws[0].url, timeout=30) as first:
            async with first.stream("POST", "/v1/chat", json=long) as posted:
                started = await read_parts(posted, stop_after=1)
            sid = started[0]["messageId"]
            async with httpx.AsyncClient(base_url=gws[1].url) as second:
                stopped = await second.delete("/v1/chat/c2/stream")
                assert stopped.status_code == 200, stopped.text
                assert stopped.json() == {"chat_id": "c2", "stream_id": sid, "state": "cancelled"}
            while (await first.get(f"/v1/streams/{sid}/status")).json()["state"] == "running":
                await asyncio.sleep(0.02)  # the producer acts on the control log
            assert (await first.get(f"/v1/streams/{sid}/status")).json()["state"] == "cancelled"


async def _not_found_over_ws(c: Ws, op: str, sid: str) -> None:
    await c.send(op, stream_id=sid, ref="r")
    answer = await c.recv()
    assert (answer["op"], answer["code"]) == ("error", "not_found"), answer


async def test_another_tenant_finds_nothing_of_a_tenants_streams_on_any_gateway(
    tmp_path: Path,
) -> None:
    keys = {KEY_A: {"tenant": "a", "scopes": SCOPES}, KEY_B: {"tenant": "b", "scopes": SCOPES}}
    (tmp_path / "keys.json").write_text(json.dumps(keys))
    async with asyncio.timeout(60), cluster(2, "--api-keys", str(tmp_path / "keys.json")) as gws:
        start = {"headers": {"tenant": "a"}, "payload": {"n": 100_000, "every": 1, "pause_ms": 5}}
        async with httpx.AsyncClient(base_url=gws[0].url, headers=AUTH_A) as a0:
            answer = await a0.post("/v1/streams", json={**start, "idempotency_key": "k1"})
            assert answer.status_code == 201, answer.text
            sid = answer.json()["stream_id"]
        # The chat runs on the other gateway: on a loaded machine a gateway's
        # load shedding may refuse a tenant's second stream by itself.
        async with httpx.AsyncClient(base_url=gws[1].url, headers=AUTH_A) as a1:
            long_chat = chat_body("c1", n=100_000, pause_ms=5)
            async with a1.stream("POST", "/v1/chat", json=long_chat) as posted:
                assert posted.status_code == 200
                await read_parts(posted, stop_after=1)
        # Tenant a reads and resumes its stream on the other gateway.
        async with ws_client(gws[1].url, AUTH_A) as a1:
            await a1.send("hello")
            session = (await a1.recv())["session_id"]
            await a1.send("subscribe", stream_id=sid, from_seq=0)
            assert (await a1.recv())["seq"] == 0
        # Tenant b, on the other gateway: the stream, the session, the chat and
        # the key read as missing (or as b's own), never as a's.
        async with ws_client(gws[1].url, AUTH_B) as b1:
            await _not_found_over_ws(b1, "subscribe", sid)
            await _not_found_over_ws(b1, "cancel", sid)
            await b1.send("hello", session_id=session, resume=True)
            refused = await b1.recv()
            assert (refused["op"], refused["code"]) == ("error", "session_expired")
        async with httpx.AsyncClient(base_url=gws[0].url, headers=AUTH_B) as b0h:
            assert (await b0h.get("/v1/chat/c1/stream")).status_code == 204
            assert (await b0h.get("/v1/chat/c1/stream?tenant=a")).status_code == 404
            assert (await b0h.delete("/v1/chat/c1/stream")).status_code == 204
        async with httpx.AsyncClient(base_url=gws[1].url, headers=AUTH_B) as b1h:
            assert (await b1h.get(f"/v1/events?stream={sid}")).status_code == 404
            listed = (await b1h.get("/v1/streams")).json()["streams"]
            assert listed == []
            own = await b1h.post(
                "/v1/streams",
                json={"headers": {"tenant": "b"}, "payload": {"n": 1}, "idempotency_key": "k1"},
            )
            assert own.status_code == 201  # the same key in another tenant: another run
            assert own.json()["stream_id"] != sid
            foreign = await b1h.post("/v1/streams", json={**start, "idempotency_key": "k1"})
            assert foreign.status_code == 403
        # Tenant a's stream is untouched by all of it.
        async with (
            httpx.AsyncClient(base_url=gws[0].url, headers=AUTH_A) as a0h,
            a0h.stream("GET", "/v1/chat/c1/stream") as resumed,
        ):
            assert resumed.status_code == 200  # a's chat is still there for a
            assert (await read_parts(resumed, stop_after=1))[0]["type"] == "start"
        async with httpx.AsyncClient(base_url=gws[1].url, headers=AUTH_A) as a1h:
            status = await a1h.get(f"/v1/streams/{sid}/status")
            assert status.json()["state"] == "running"
            assert (await a1h.delete(f"/v1/streams/{sid}")).status_code == 200


def _at_cap(answer: httpx.Response, cap: int) -> bool:
    """Whether ``answer`` is the refusal of a tenant at its stream cap."""
    if answer.status_code != 503:
        return False
    error = answer.json()["error"]
    assert answer.headers["retry-after"] == "1"
    return bool(error["code"] == "overloaded" and f"stream limit ({cap})" in error["message"])


async def test_a_tenants_stream_cap_counts_its_streams_on_every_gateway() -> None:
    # One stream of a tenant per gateway at a time: on a loaded machine a
    # gateway's load shedding may refuse a tenant's second stream by itself.
    async with asyncio.timeout(60), cluster(2, "--max-streams-per-tenant", "2") as gws:
        long = {"n": 100_000, "every": 1, "pause_ms": 100}

        async def post(url: str, tenant: str) -> httpx.Response:
            async with httpx.AsyncClient(base_url=url) as client:
                body = {"headers": {"tenant": tenant}, "payload": long}
                return await client.post("/v1/streams", json=body)

        sids = []
        for gw in gws:
            answer = await post(gw.url, "t1")
            assert answer.status_code == 201, answer.text
            sids.append(answer.json()["stream_id"])
        # Gateway 2 runs one of t1's streams, the cluster two: the cap is reached.
        assert _at_cap(await post(gws[1].url, "t1"), 2)
        assert (await post(gws[0].url, "t2")).status_code == 201  # other tenants go on
        # t1's stream on gateway 1 ends: t1 may start one more.
        async with httpx.AsyncClient(base_url=gws[0].url) as client:
            assert (await client.delete(f"/v1/streams/{sids[0]}")).status_code == 200
        while _at_cap(answer := await post(gws[0].url, "t1"), 2):
            await asyncio.sleep(0.02)  # the producer removes the ended stream's lease
        assert answer.status_code == 201, answer.text
        assert _at_cap(await post(gws[1].url, "t1"), 2)
