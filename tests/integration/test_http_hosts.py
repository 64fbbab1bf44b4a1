"""The Host allow-list (DNS rebinding) and the same-origin check, over a real socket.

docs/security.md (DNS rebinding): a page on another site whose name resolves
to a loopback server sends ``Host: evil.example:P`` and ``Origin:
http://evil.example:P``; with ``allowed_hosts`` set (``icefloe serve`` and
``demo`` set it) the server answers 400 ``bad_request`` "host not allowed",
over HTTP and to the WebSocket handshake. Same-origin compares the scheme too.
Refused handshakes log no ERROR, and a few aggregated INFO lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from icefloe.demo import Pacing, build_demo_flow
from icefloe.transport.app import EdgeSettings
from icefloe.transport.edge import LOOPBACK_HOSTS, host_allowed
from icefloe.transport.ws_handshake import REFUSALS

Serve = Any  # the serve fixture of conftest.py: serve(flow, settings=None) -> url

LOCAL = EdgeSettings(allowed_hosts=("127.0.0.1", *LOOPBACK_HOSTS))


def flow() -> Any:
    return build_demo_flow(Pacing(0.0, 0.0))


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


async def handshake(base: str, name: str, origin: str | None, **kwargs: Any) -> int:
    """Open /v1/ws naming ``name`` (Host and URI) while connecting to ``base``:
    101 (then a ping answered) or the refusal's status."""
    port = port_of(base)
    uri = f"ws://{name}:{port}/v1/ws"
    extra: dict[str, Any] = {"origin": origin} if origin else {}
    try:
        async with connect(uri, host="127.0.0.1", port=port, **extra, **kwargs) as ws:
            await ws.send(json.dumps({"op": "ping", "ref": "p"}))
            assert json.loads(await ws.recv()) == {"op": "pong", "ref": "p"}
            return 101
    except InvalidStatus as refused:
        response = refused.response
        if response.status_code == 400:
            assert json.loads(response.body or b"") == {
                "error": {"code": "bad_request", "message": "host not allowed"}
            }
        return response.status_code


@pytest.mark.parametrize(
    ("entry", "host", "ok"),
    [
        ("localhost", "localhost:8765", True),
        ("localhost", "LOCALHOST", True),
        ("127.0.0.1", "127.0.0.1:1", True),
        ("::1", "[::1]:8765", True),
        ("[::1]", "[::1]", True),
        ("app.example:443", "app.example:443", True),
        ("app.example:443", "app.example:8443", False),
        ("localhost", "evil.example:8765", False),
        ("localhost", "localhost.evil.example", False),
        ("localhost", None, False),
        ("*", "evil.example", True),
    ],
)
def test_host_allowed_matches_names_and_ports(entry: str, host: str | None, ok: bool) -> None:
    assert host_allowed(host, (entry,)) is ok


def test_no_allowed_hosts_allows_every_host() -> None:
    assert host_allowed("evil.example:1", ())


async def test_dns_rebinding_is_refused_over_http_and_websocket(serve: Serve) -> None:
    async with serve(flow(), LOCAL) as base, asyncio.timeout(30):
        port = port_of(base)
        evil = f"evil.example:{port}"
        async with httpx.AsyncClient(base_url=base) as http:
            r = await http.get("/healthz", headers={"Host": evil})
            assert r.status_code == 400
            assert r.json() == {"error": {"code": "bad_request", "message": "host not allowed"}}
            for good in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost:1", "[::1]"):
                assert (await http.get("/healthz", headers={"Host": good})).status_code == 200
        assert await handshake(base, "evil.example", f"http://{evil}") == 400
        assert await handshake(base, "evil.example", None) == 400
        assert await handshake(base, "127.0.0.1", f"http://127.0.0.1:{port}") == 101
        assert await handshake(base, "localhost", f"http://localhost:{port}") == 101


async def test_create_app_alone_serves_every_host(serve: Serve) -> None:
    async with (
        serve(flow()) as base,
        asyncio.timeout(30),
        httpx.AsyncClient(base_url=base) as http,
    ):
        r = await http.get("/healthz", headers={"Host": "evil.example"})
        assert r.status_code == 200


async def test_same_origin_compares_the_scheme(serve: Serve) -> None:
    async with serve(flow()) as base, asyncio.timeout(30):
        port = port_of(base)
        assert await handshake(base, "127.0.0.1", f"http://127.0.0.1:{port}") == 101
        assert await handshake(base, "127.0.0.1", f"https://127.0.0.1:{port}") == 403


async def test_a_trusted_proxy_names_the_scheme(serve: Serve) -> None:
    settings = EdgeSettings(forwarded_allow_ips=("127.0.0.1",))
    async with serve(flow(), settings) as base, asyncio.timeout(30):
        port = port_of(base)
        origin = f"https://127.0.0.1:{port}"
        tls = {"additional_headers": {"X-Forwarded-Proto": "https"}}
        assert await handshake(base, "127.0.0.1", origin, **tls) == 101
        fwd = {"additional_headers": {"Forwarded": "for=192.0.2.1;proto=https"}}
        assert await handshake(base, "127.0.0.1", origin, **fwd) == 101
        plain = {"additional_headers": {"X-Forwarded-Proto": "http"}}
        assert await handshake(base, "127.0.0.1", origin, **plain) == 403


async def test_an_untrusted_peer_cannot_name_the_scheme(serve: Serve) -> None:
    async with serve(flow()) as base, asyncio.timeout(30):
        origin = f"https://127.0.0.1:{port_of(base)}"
        tls = {"additional_headers": {"X-Forwarded-Proto": "https"}}
        assert await handshake(base, "127.0.0.1", origin, **tls) == 403


# -- the CLI wires the default --------------------------------------------------------


@pytest.fixture
def served_apps(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """uvicorn.run replaced by a recorder of the app: no socket is bound."""
    apps: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: apps.append(app))
    return apps


async def status_for(app: Any, host: str) -> int:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as http:
        return (await http.get("/healthz", headers={"Host": host})).status_code


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "icefloe.demo:build_demo_flow", "--allowed-host", "app.example"],
        ["demo"],
    ],
)
async def test_the_cli_allows_the_bound_address_and_localhost(
    args: list[str], served_apps: list[Any]
) -> None:
    from icefloe.cli.app import app as cli

    result = CliRunner().invoke(cli, [*args, "--host", "127.0.0.1", "--port", "8765"])
    assert result.exit_code == 0, result.output
    [app] = served_apps
    assert await status_for(app, "evil.example:8765") == 400
    assert await status_for(app, "127.0.0.1:8765") != 400
    assert await status_for(app, "localhost:8765") != 400
    assert (await status_for(app, "app.example") != 400) is (args[0] == "serve")


# -- refusals do not flood the log ----------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def log_records() -> Iterator[list[logging.LogRecord]]:
    """Every record of uvicorn's and icefloe's WebSocket loggers, icefloe's at INFO."""
    REFUSALS.flush()  # refusals of earlier tests are not this test's
    handler = _Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "uvicorn", "icefloe.ws")]
    ws_level = loggers[2].level
    loggers[2].setLevel(logging.INFO)
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        loggers[2].setLevel(ws_level)


async def test_bad_origin_handshakes_log_no_error_and_few_lines(
    serve: Serve, log_records: list[logging.LogRecord]
) -> None:
    loop = asyncio.get_running_loop()
    async with serve(flow()) as base, asyncio.timeout(120):
        began = loop.time()
        for _ in range(200):
            assert await handshake(base, "127.0.0.1", "http://evil.example") == 403
        elapsed = loop.time() - began
    REFUSALS.flush()
    errors = [r.getMessage() for r in log_records if r.levelno >= logging.ERROR]
    assert errors == []
    lines = [r for r in log_records if r.name == "icefloe.ws"]
    assert all(r.levelno == logging.INFO for r in lines)
    # one line a second at most (plus the first and the final flush)
    assert len(lines) <= elapsed + 2, [r.getMessage() for r in lines]
    counts = [int(r.getMessage().split(": ")[1].split(" ")[0]) for r in lines]
    assert sum(counts) == 200
    assert "403 origin not allowed" in lines[-1].getMessage()
