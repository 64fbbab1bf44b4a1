"""Cookie authentication over a real socket (issue 16, item 6).

``--auth-cookie NAME``: the cookie authenticates reads and a WebSocket
handshake from an allowed Origin, never a POST or DELETE (those need the
header token), so another site cannot make a browser start or cancel runs.
With CORS on, allowed origins may send it (``Access-Control-Allow-Credentials``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from icefloe.cli import app as cli
from icefloe.demo import Pacing, build_demo_flow
from icefloe.transport import app as transport_app
from icefloe.transport.app import EdgeSettings
from icefloe.transport.auth import ApiKeyAuthenticator, CookieAuthenticator

Serve = Any  # the serve fixture of conftest.py

KEY = "acme-key-0123456789abcdef"
GRANTS = {KEY: {"tenant": "acme", "scopes": ["streams:start", "streams:read", "streams:cancel"]}}
APP = "https://app.example"
EVIL = "https://evil.example"
BODY = {"payload": "hi", "headers": {"tenant": "acme"}}


def cookie_settings(origins: tuple[str, ...] = (APP,)) -> EdgeSettings:
    auth = CookieAuthenticator(ApiKeyAuthenticator(GRANTS), "sid", allowed_origins=origins)
    return EdgeSettings(authenticator=auth, allow_origins=origins)


@asynccontextmanager
async def edge(serve: Serve, settings: EdgeSettings) -> AsyncIterator[httpx.AsyncClient]:
    flow = build_demo_flow(Pacing(0, 0))
    async with (
        asyncio.timeout(30),
        serve(flow, settings) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield client


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def cookie(**more: str) -> dict[str, str]:
    return {"Cookie": f"theme=dark; sid={KEY}", **more}


def error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    return str(r.json()["error"]["message"])


# -- the cookie ---------------------------------------------------------------------------


async def test_a_cookie_reads_but_never_starts_or_cancels(serve: Serve) -> None:
    async with edge(serve, cookie_settings()) as c:
        started = await c.post("/v1/streams", json=BODY, headers=bearer())
        assert started.status_code == 201, started.text
        location = started.headers["location"]
        status = await c.get(f"{location}/status", headers=cookie())
        assert status.status_code == 200, status.text
        poll = await c.get(f"{location}/poll", params={"wait_s": "3"}, headers=cookie())
        assert [chunk["text"] for chunk in poll.json()][:1] == ["hi"]

        # A page on another site can make the browser send these, cookie included.
        for method, url in (("POST", "/v1/streams"), ("DELETE", location)):
            r = await c.request(method, url, json=BODY, headers=cookie(Origin=APP))
            assert error(r, 401) == (
                f"a cookie does not authenticate {method}; "
                "send the token in the Authorization header"
            )
            assert r.headers["www-authenticate"] == "Bearer"
        assert (await c.delete(location, headers=bearer())).status_code in (204, 200, 410)


async def test_a_foreign_origin_cannot_read_with_the_cookie(serve: Serve) -> None:
    async with edge(serve, cookie_settings()) as c:
        started = await c.post("/v1/streams", json=BODY, headers=bearer())
        location = started.headers["location"]
        r = await c.get(f"{location}/status", headers=cookie(Origin=EVIL))
        assert error(r, 403) == "origin not allowed to use the cookie"
        ok = await c.get(f"{location}/status", headers=cookie(Origin=APP))
        assert ok.status_code == 200, ok.text


async def test_without_cookie_auth_the_cookie_is_ignored(serve: Serve) -> None:
    settings = EdgeSettings(authenticator=ApiKeyAuthenticator(GRANTS))
    async with edge(serve, settings) as c:
        r = await c.get("/v1/streams", headers=cookie())
        assert error(r, 401) == "missing credentials"


def ws_url(base: httpx.URL) -> str:
    return str(base).replace("http://", "ws://").rstrip("/") + "/v1/ws"


@pytest.mark.parametrize(
    ("origin", "allowed", "status"),
    [
        (APP, (APP,), None),
        ("same", (), None),  # the server's own page (the inspector)
        (None, (APP,), 401),
        (EVIL, (APP,), 403),
        (EVIL, (), 403),
    ],
)
async def test_a_websocket_handshake_with_the_cookie_needs_an_allowed_origin(
    serve: Serve, origin: str | None, allowed: tuple[str, ...], status: int | None
) -> None:
    async with edge(serve, cookie_settings(allowed)) as c:
        url = ws_url(c.base_url)
        kwargs: dict[str, Any] = {
            "subprotocols": ["icefloe.v1.json"],
            "additional_headers": cookie(),
        }
        if origin is not None:
            kwargs["origin"] = str(c.base_url).rstrip("/") if origin == "same" else origin
        if status is None:
            async with connect(url, **kwargs) as ws:
                await ws.send(json.dumps({"op": "ping"}))
                assert json.loads(await ws.recv())["op"] == "pong"
        else:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, **kwargs):
                    pass
            assert refused.value.response.status_code == status


def test_serve_auth_cookie_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(GRANTS))
    seen: list[EdgeSettings] = []

    def build(flow: Any, settings: EdgeSettings, **options: Any) -> object:
        seen.append(settings)
        return object()

    # The public seams serve goes through: the app factory and uvicorn.
    monkeypatch.setattr(transport_app, "create_app", build)
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: None)
    flags = ["--api-keys", str(keys), "--auth-cookie", "sid", "--allow-origin", APP]
    result = CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow", *flags])
    assert result.exit_code == 0, result.output
    auth = seen[0].authenticator
    assert isinstance(auth, CookieAuthenticator)
    assert (auth.cookie_name, auth.allowed_origins) == ("sid", (APP,))
    headers = {"cookie": f"sid={KEY}", "host": "h"}
    assert auth.token_from_request("GET", headers, None) == KEY


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--auth-cookie", "sid"], "--auth-cookie needs"),
        (["--auth-cookie", "bad name", "--jwt-secret", "s" * 40], "cookie_name"),
        (["--auth-cookie", "sid", "--jwt-secret", "s" * 40, "--allow-origin", "*"], "'*'"),
    ],
)
def test_bad_cookie_flags_are_refused(flags: list[str], message: str) -> None:
    result = CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow", *flags])
    assert result.exit_code == 2
    assert message in " ".join(result.output.replace("│", " ").split())


async def test_cookie_auth_allows_credentials_for_allowed_origins(serve: Serve) -> None:
    async with edge(serve, cookie_settings()) as c:
        r = await c.get("/v1/streams", headers=cookie(Origin=APP))
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == APP
        assert r.headers["access-control-allow-credentials"] == "true"
        evil = await c.get("/v1/streams", headers=cookie(Origin=EVIL))
        assert "access-control-allow-origin" not in evil.headers
