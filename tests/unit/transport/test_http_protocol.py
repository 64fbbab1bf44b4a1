"""icefloe.transport.http_protocol: uvicorn's protocol with the connection limits,
driven by hand (a recording transport, the parser wrapped to count its input),
and the options and flags that install it."""

from __future__ import annotations

import asyncio
import json
import resource
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner
from uvicorn.config import Config
from uvicorn.server import ServerState

from icefloe.cli import app as cli
from icefloe.core.conntable import ConnectionLimits
from icefloe.core.wire_errors import ErrorCode
from icefloe.transport import app as transport_app
from icefloe.transport.app import EdgeSettings, server_options
from icefloe.transport.http_protocol import (
    FD_RESERVE_MIN,
    GuardedHttpProtocol,
    HttpProtocolFactory,
    error_bytes,
    open_files_capacity,
)


class RecordingTransport(asyncio.Transport):
    """A socket that keeps what the protocol writes and whether it closed."""

    def __init__(self, peer: tuple[str, int] | None = ("10.0.0.1", 5000)) -> None:
        super().__init__()
        self.peer = peer
        self.written = b""
        self.closed = False
        self.eof = False
        self.protocol: asyncio.BaseProtocol | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self.peer, "sockname": ("127.0.0.1", 8765)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class CountingParser:
    """The httptools parser, counting the bytes it is given."""

    def __init__(self, parser: Any) -> None:
        self.inner = parser
        self.fed = 0

    def feed_data(self, data: bytes) -> None:
        self.fed += len(data)
        self.inner.feed_data(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def connect(
    factory: HttpProtocolFactory,
    state: ServerState,
    peer: tuple[str, int] | None = ("10.0.0.1", 5000),
) -> tuple[GuardedHttpProtocol, RecordingTransport, CountingParser]:
    config = Config(app, log_level="warning")
    protocol = factory(config=config, server_state=state, app_state={})
    transport = RecordingTransport(peer)
    protocol.connection_made(transport)
    parser = CountingParser(protocol.parser)
    protocol.parser = parser  # type: ignore[assignment]
    return protocol, transport, parser


def status_and_body(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


# -- header limits ----------------------------------------------------------------------


async def test_an_endless_header_line_reaches_the_parser_only_up_to_the_limit() -> None:
    factory = HttpProtocolFactory(ConnectionLimits())
    protocol, transport, parser = connect(factory, ServerState())
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: ")
    for _ in range(64):  # 4 MiB more of the same line
        protocol.data_received(b"a" * 65536)
    assert parser.fed == 16 * 1024
    status, body = status_and_body(transport.written)
    assert (status, body["error"]["code"]) == (431, ErrorCode.HEADERS_TOO_LARGE.value)
    assert transport.eof
    assert not transport.is_closing()
    protocol.data_received(b"a" * (4 * 1024 * 1024))  # the linger allowance is spent
    assert transport.is_closing()
    assert parser.fed == 16 * 1024


async def test_a_head_and_body_in_one_read_are_parsed_whole() -> None:
    factory = HttpProtocolFactory(ConnectionLimits(max_header_bytes=256))
    protocol, transport, parser = connect(factory, ServerState())
    body = b"x" * 100_000  # far over the head limit: a body is not a head
    request = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
    protocol.data_received(request + body)
    assert parser.fed == len(request) + len(body)
    assert not transport.closed
    assert transport.written == b""


async def test_too_many_fields_are_refused_before_the_app_sees_the_request() -> None:
    factory = HttpProtocolFactory(ConnectionLimits(max_headers=2))
    protocol, transport, _parser = connect(factory, ServerState())
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 2\r\n\r\n")
    status, body = status_and_body(transport.written)
    assert (status, body["error"]["message"]) == (431, "more than 2 header fields")
    assert protocol.cycle is None  # no request reached the app


async def test_a_malformed_request_still_gets_uvicorns_400() -> None:
    factory = HttpProtocolFactory(ConnectionLimits())
    protocol, transport, _parser = connect(factory, ServerState())
    protocol.data_received(b"NOT HTTP\r\n\r\n")
    assert transport.written.startswith(b"HTTP/1.1 400 ")
    assert transport.closed


def test_error_bytes_is_a_whole_closing_response_with_the_json_body() -> None:
    raw = error_bytes(ErrorCode.REQUEST_TIMEOUT, "too slow", [(b"server", b"x")])
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 408 Request Timeout"
    assert b"server: x" in head
    assert b"connection: close" in head
    assert b"content-length: %d" % len(body) in head
    assert json.loads(body) == {"error": {"code": "request_timeout", "message": "too slow"}}


# -- caps -------------------------------------------------------------------------------


async def test_each_server_counts_its_own_connections() -> None:
    factory = HttpProtocolFactory(ConnectionLimits(max_per_address=1))
    first, second = ServerState(), ServerState()
    _p, transport, _ = connect(factory, first)
    assert not transport.closed
    _p, transport, _ = connect(factory, first)
    assert transport.closed  # the same server: over the cap
    _p, transport, _ = connect(factory, second)
    assert not transport.closed  # another server: its own count


async def test_a_unix_socket_peer_has_no_address_and_is_not_capped() -> None:
    factory = HttpProtocolFactory(ConnectionLimits(max_per_address=1))
    state = ServerState()
    transports = [connect(factory, state, peer=None)[1] for _ in range(3)]
    assert not any(t.closed for t in transports)


async def test_a_refused_connection_is_forgotten_when_it_closes() -> None:
    factory = HttpProtocolFactory(ConnectionLimits(max_per_address=1))
    state = ServerState()
    connect(factory, state)
    protocol, transport, _ = connect(factory, state)
    assert transport.closed
    protocol.connection_lost(None)  # nothing to release, nothing raised
    assert protocol not in state.connections


def test_open_files_capacity_keeps_a_reserve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, 4096))
    assert open_files_capacity() == 1024 - max(FD_RESERVE_MIN, 102)
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (100_000, 100_000))
    assert open_files_capacity() == 90_000
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (50, 50))
    assert open_files_capacity() == 1
    monkeypatch.setattr(
        resource, "getrlimit", lambda _which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    )
    assert open_files_capacity() is None


# -- options and flags ------------------------------------------------------------------


def test_server_options_install_the_guarded_protocol() -> None:
    limits = ConnectionLimits(keep_alive_timeout_s=7.0, max_per_address=9)
    options = server_options(EdgeSettings(connections=limits, forwarded_allow_ips=("10.0.0.5",)))
    factory = options["http"]
    assert isinstance(factory, HttpProtocolFactory)
    assert factory.limits is limits
    assert factory.proxies.trusts("10.0.0.5")
    assert options["timeout_keep_alive"] == 7.0
    # uvicorn takes the factory as its protocol class
    config = Config(app, **options)
    config.load()
    assert config.http_protocol_class is factory  # type: ignore[comparison-overlap]


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The settings and uvicorn options ``serve`` would run with."""
    seen: list[dict[str, Any]] = []

    def build(flow: Any, settings: EdgeSettings, **options: Any) -> object:
        seen.append({"settings": settings})
        return object()

    def run(_app: object, **options: Any) -> None:
        seen[-1]["options"] = options

    monkeypatch.setattr(transport_app, "create_app", build)
    monkeypatch.setattr(uvicorn, "run", run)
    return seen


def test_serve_flags_set_the_connection_limits(served: list[dict[str, Any]]) -> None:
    flags = [
        "--max-header-bytes",
        "8192",
        "--max-headers",
        "50",
        "--header-timeout",
        "3",
        "--keep-alive-timeout",
        "2.5",
        "--max-connections-per-address",
        "off",
        "--max-open-connections",
        "1000",
    ]
    result = CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow", *flags])
    assert result.exit_code == 0, result.output
    (run,) = served
    assert run["settings"].connections == ConnectionLimits(
        max_header_bytes=8192,
        max_headers=50,
        header_timeout_s=3.0,
        keep_alive_timeout_s=2.5,
        max_per_address=None,
        max_open=1000,
    )
    assert run["options"]["http"].limits == run["settings"].connections


def test_serve_defaults_are_the_documented_ones(served: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow"])
    assert result.exit_code == 0, result.output
    assert served[0]["settings"].connections == ConnectionLimits()


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--max-header-bytes", "10"),
        ("--max-headers", "0"),
        ("--header-timeout", "0"),
        ("--keep-alive-timeout", "-1"),
        ("--max-connections-per-address", "many"),
        ("--max-open-connections", "0"),
    ],
)
def test_a_bad_flag_value_is_refused_naming_the_flag(
    served: list[dict[str, Any]], flag: str, value: str
) -> None:
    result = CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow", flag, value])
    assert result.exit_code == 2
    assert flag in result.output
    assert not served
