"""``/v1/chat`` (the AI SDK UI message stream) over a real socket.

The main test runs the real ``ai`` npm package (tests/js, installed by
``make test``) in Node against a served flow; the others check the wire
details and the refusals with httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from icefloe import Context, Message, Node, create
from icefloe.core.sse import SseParser
from icefloe.transport.app import EdgeSettings
from icefloe.transport.auth import ApiKeyAuthenticator
from jskit import JS_DIR, ROOT, check_node, load, run_node

Serve = Any  # the serve fixture of conftest.py: serve(flow, settings=None) -> url

TOKENS = 200


def token(i: int) -> str:
    """Token ``i`` of the ``tokens`` scenario (tests/js/ai_sdk_chat.mjs computes the same)."""
    return f't{i} é"\n data: {i % 7}\r '


async def chat_node(msg: Message, ctx: Context) -> None:
    """The body's ``scenario``: ``tokens`` (200 of them, ``delay_ms`` apart) or ``tools``."""
    body = msg.payload
    if body.get("scenario") == "tools":
        for data, text in [
            ({"type": "reasoning", "id": "r", "delta": "Look up "}, ""),
            ({"type": "reasoning", "id": "r", "delta": "the weather."}, ""),
            (
                {
                    "type": "tool-input-delta",
                    "id": "call-1",
                    "name": "weather",
                    "delta": '{"city":',
                },
                "",
            ),
            (
                {"type": "tool-input-delta", "id": "call-1", "name": "weather", "delta": '"Oslo"}'},
                "",
            ),
            (
                {
                    "type": "tool-input-available",
                    "id": "call-1",
                    "name": "weather",
                    "input": {"city": "Oslo"},
                },
                "",
            ),
            ({"type": "tool-output-available", "id": "call-1", "output": {"celsius": -3}}, ""),
            ({"type": "step"}, "It is -3 °C"),
            (None, " in Oslo."),
        ]:
            await ctx.emit_chunk(parent=msg, text=text, data=data)
        meta = {"finish_reason": "stop", "usage": {"tokens": 9}}
        await ctx.emit_chunk(parent=msg, text="", done=True, meta=meta)
        return
    delay = float(body.get("delay_ms", 0)) / 1000
    for i in range(int(body.get("tokens", TOKENS))):
        await ctx.emit_chunk(parent=msg, text=token(i))
        if delay:
            await asyncio.sleep(delay)
    await ctx.emit_chunk(parent=msg, text="", done=True)


def chat_flow() -> Any:
    return create(Node(chat_node, name="chat").to())


def chat_body(chat_id: str, **extra: Any) -> dict[str, Any]:
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
    return {"id": chat_id, "messages": [user], "trigger": "submit-message", **extra}


class Parts:
    """The parts of one UI message stream response, read as far as asked ([DONE] as a string)."""

    def __init__(self, response: httpx.Response) -> None:
        self._bytes = response.aiter_bytes()
        self._parser = SseParser()
        self._ready: list[Any] = []
        self.seen: list[Any] = []

    async def next(self) -> Any:
        while not self._ready:
            self._parser.feed_data(await anext(self._bytes))
            self._ready += [
                ev.data if ev.data == "[DONE]" else json.loads(ev.data)
                for ev in self._parser.events_received()
            ]
        part = self._ready.pop(0)
        self.seen.append(part)
        return part

    async def until_deltas(self, count: int) -> list[Any]:
        while sum(isinstance(p, dict) and p["type"] == "text-delta" for p in self.seen) < count:
            await self.next()
        return list(self.seen)

    async def rest(self) -> list[Any]:
        start = len(self.seen)
        while not self.seen or self.seen[-1] != "[DONE]":
            await self.next()
        with contextlib.suppress(StopAsyncIteration):
            await anext(self._bytes)  # the end of the body
            raise AssertionError("data after [DONE]")
        return self.seen[start:]


async def read_parts(response: httpx.Response) -> list[Any]:
    return await Parts(response).rest()


async def test_real_ai_sdk_reads_resumes_and_stops_a_chat(serve: Serve) -> None:
    check_node()
    async with serve(chat_flow()) as url:
        out = await run_node(JS_DIR / "ai_sdk_chat.mjs", url)
    figures = json.loads(out.strip().splitlines()[-1])
    print(f"ai-sdk figures: {figures}", file=sys.stderr)
    assert figures["full"]["tokens"] == TOKENS
    assert figures["resume"]["deltasBeforeAbort"] >= 50


def doc_block(name: str) -> str:
    """The code of the block marked ``<!-- block: name -->`` in docs/ai-sdk.md."""
    docblocks = load(ROOT / "tests" / "e2e" / "docblocks.py")
    code: str = docblocks.block(ROOT / "docs" / "ai-sdk.md", name).code
    return code


async def test_the_docs_node_client_reads_the_example(serve: Serve, tmp_path: Path) -> None:
    check_node()
    script = tmp_path / "client.mjs"
    script.write_text(doc_block("ai-sdk-client"), encoding="utf-8")
    (tmp_path / "node_modules").symlink_to(JS_DIR / "node_modules")
    async with serve(load(ROOT / "examples" / "ai_sdk_chat.py").build_flow()) as url:
        out = await run_node(script, env={"ICEFLOE_URL": url})
    assert out.splitlines() == [
        "reasoning: Count the words first.",
        "tool: { text: 'how many words is this' } -> { words: 5 }",
        "answer: Your message has 5 words. Thanks for asking!",
    ]


async def test_parts_header_and_done(serve: Serve) -> None:
    async with serve(chat_flow()) as url, httpx.AsyncClient(base_url=url) as client:
        body = chat_body("c1", tokens=3)
        async with client.stream("POST", "/v1/chat", json=body) as r:
            assert r.status_code == 200
            assert r.headers["x-vercel-ai-ui-message-stream"] == "v1"
            assert r.headers["content-type"].startswith("text/event-stream")
            parts = await read_parts(r)
    sid = parts[0]["messageId"]
    assert parts == [
        {"type": "start", "messageId": sid},
        {"type": "start-step"},
        {"type": "text-start", "id": "text-1"},
        *({"type": "text-delta", "id": "text-1", "delta": token(i)} for i in range(3)),
        {"type": "text-end", "id": "text-1"},
        {"type": "finish-step"},
        {"type": "finish"},
        "[DONE]",
    ]


async def test_the_node_receives_the_body_as_payload(serve: Serve) -> None:
    seen: list[Any] = []

    async def echo(msg: Message, ctx: Context) -> None:
        seen.append((msg.payload, msg.headers.tenant))
        await ctx.emit_chunk(parent=msg, text="ok", done=True)

    async with serve(create(Node(echo).to())) as url, httpx.AsyncClient(base_url=url) as client:
        body = chat_body("c1", extra={"model": "m"})
        async with client.stream("POST", "/v1/chat", json=body) as r:
            await read_parts(r)
    assert seen == [(body, "default")]


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (b"{", "invalid body"),
        (b"[]", "JSON object"),
        (json.dumps({"messages": []}).encode(), "`id`"),
        (json.dumps({"id": "", "messages": []}).encode(), "$.id"),
        (json.dumps({"id": "c", "messages": "hi"}).encode(), "$.messages"),
        (json.dumps({"id": "c", "messages": [], "trigger": "x"}).encode(), "$.trigger"),
    ],
)
async def test_bad_bodies_get_400_naming_the_field(serve: Serve, body: bytes, names: str) -> None:
    async with serve(chat_flow()) as url, httpx.AsyncClient(base_url=url) as client:
        r = await client.post("/v1/chat", content=body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "bad_request"
    assert names in error["message"]


async def test_resume_of_unknown_chat_is_204_and_stop_is_204(serve: Serve) -> None:
    async with serve(chat_flow()) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/v1/chat/nope/stream")).status_code == 204
        assert (await client.delete("/v1/chat/nope/stream")).status_code == 204


async def test_a_dropped_connection_does_not_cancel_and_resume_replays_exactly(
    serve: Serve,
) -> None:
    async with serve(chat_flow()) as url, httpx.AsyncClient(base_url=url) as client:
        body = chat_body("c1", tokens=40, delay_ms=20)
        async with client.stream("POST", "/v1/chat", json=body) as r:
            first = await Parts(r).until_deltas(5)
        async with client.stream("GET", "/v1/chat/c1/stream") as r:
            assert r.status_code == 200
            parts = await read_parts(r)
    deltas = [p["delta"] for p in parts if isinstance(p, dict) and p["type"] == "text-delta"]
    assert "".join(deltas) == "".join(token(i) for i in range(40))
    assert parts[: len(first)] == first  # the same message from its start
    assert parts[-2:] == [{"type": "finish"}, "[DONE]"]


async def test_a_new_post_supersedes_the_chats_running_reply(serve: Serve) -> None:
    async with (
        serve(chat_flow()) as url,
        httpx.AsyncClient(base_url=url) as client,
        client.stream("POST", "/v1/chat", json=chat_body("c1", delay_ms=50)) as r,
    ):
        old = Parts(r)
        await old.until_deltas(1)
        async with client.stream("POST", "/v1/chat", json=chat_body("c1", tokens=2)) as r2:
            new = await read_parts(r2)
        rest = await old.rest()
    assert rest[-3:] == [
        {"type": "text-end", "id": "text-1"},
        {"type": "abort", "reason": "cancelled"},
        "[DONE]",
    ]
    assert new[0]["messageId"] != old.seen[0]["messageId"]
    assert new[-2:] == [{"type": "finish"}, "[DONE]"]


async def test_scopes_and_tenants(serve: Serve) -> None:
    every = ["streams:start", "streams:read", "streams:cancel"]
    keys = ApiKeyAuthenticator(
        {
            "key-acme-all-0123456789": {"tenant": "acme", "scopes": every},
            "key-acme-read-0123456789": {"tenant": "acme", "scopes": ["streams:read"]},
            "key-beta-all-0123456789": {"tenant": "beta", "scopes": every},
        }
    )
    settings = EdgeSettings(authenticator=keys)

    def auth(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer key-{key}-0123456789"}

    async with serve(chat_flow(), settings) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.post("/v1/chat", json=chat_body("c1"))).status_code == 401
        r = await client.post("/v1/chat", json=chat_body("c1"), headers=auth("acme-read"))
        assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
        r = await client.post(
            "/v1/chat", json=chat_body("c1", tenant="beta"), headers=auth("acme-all")
        )
        assert r.status_code == 403
        async with client.stream(
            "POST", "/v1/chat", json=chat_body("c1", delay_ms=50), headers=auth("acme-all")
        ) as r:
            assert r.status_code == 200
            await Parts(r).next()
            # Another tenant: its own chat "c1" has no reply; naming acme is 404.
            assert (
                await client.get("/v1/chat/c1/stream", headers=auth("beta-all"))
            ).status_code == 204
            r404 = await client.get("/v1/chat/c1/stream?tenant=acme", headers=auth("beta-all"))
            assert (r404.status_code, r404.json()["error"]["code"]) == (404, "not_found")
            d404 = await client.delete("/v1/chat/c1/stream?tenant=acme", headers=auth("beta-all"))
            assert d404.status_code == 404
            assert (
                await client.delete("/v1/chat/c1/stream", headers=auth("beta-all"))
            ).status_code == 204
            denied = await client.delete("/v1/chat/c1/stream", headers=auth("acme-read"))
            assert denied.status_code == 403
            stopped = await client.delete("/v1/chat/c1/stream", headers=auth("acme-all"))
            assert stopped.json()["state"] == "cancelled"
        assert (
            await client.get("/v1/chat/c1/stream", headers=auth("acme-read"))
        ).status_code == 204
