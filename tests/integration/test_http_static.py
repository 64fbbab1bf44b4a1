"""``GET /static/{name}``: the browser client and its types, and nothing else."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from icefloe import Context, Message, Node, create
from icefloe.core.wire_errors import ErrorCode
from icefloe.transport.app import EdgeSettings
from icefloe.transport.auth import ApiKeyAuthenticator

Serve = Any  # the serve fixture of conftest.py


async def test_the_client_and_its_types_are_served_without_credentials(serve: Serve) -> None:
    async def idle(msg: Message, ctx: Context) -> None:
        pass

    grants = {"static-key-0123456789abcdef": {"tenant": "t", "scopes": ["streams:read"]}}
    settings = EdgeSettings(authenticator=ApiKeyAuthenticator(grants))
    async with (
        asyncio.timeout(30),
        serve(create(Node(idle).to()), settings) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        js = await client.get("/static/icefloe.js")
        types = await client.get("/static/icefloe.d.ts")
        assert js.status_code == types.status_code == 200
        assert js.headers["content-type"] == "text/javascript; charset=utf-8"
        assert "export class Client" in js.text
        assert "export class Client" in types.text
        for name in ("inspector.html", "..%2Fapp.py", "icefloe.JS", "x.js"):
            r = await client.get(f"/static/{name}")
            assert r.status_code == 404, name
            assert r.json()["error"]["code"] == ErrorCode.NOT_FOUND.value
