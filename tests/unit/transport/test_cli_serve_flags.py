"""``icefloe serve`` turns its flags into the edge's settings."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from icefloe.cli import app as cli
from icefloe.transport import app as transport_app
from icefloe.transport.app import EdgeSettings


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[EdgeSettings]:
    """The settings ``serve`` builds its app with (uvicorn is not started)."""
    seen: list[EdgeSettings] = []

    def build(flow: Any, settings: EdgeSettings) -> object:
        seen.append(settings)
        return object()

    def run(app: object, **options: Any) -> None:
        assert options["port"] == 8765  # serve's default: the recorder stands in for it

    monkeypatch.setattr(transport_app, "create_app", build)
    monkeypatch.setattr(uvicorn, "run", run)
    return seen


def test_connection_bandwidth_applies_to_http_and_websocket(served: list[EdgeSettings]) -> None:
    flags = ["--window", "10", "--max-frame", "4096", "--connection-bytes-per-s", "65536"]
    result = CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow", *flags])
    assert result.exit_code == 0, result.output
    (settings,) = served
    assert settings.pump.bytes_per_s == 65536
    assert settings.ws.bytes_per_s == 65536
    assert (settings.ws.window, settings.ws.max_frame) == (10, 4096)


def test_no_bandwidth_cap_by_default(served: list[EdgeSettings]) -> None:
    result = CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow"])
    assert result.exit_code == 0, result.output
    assert served[0].pump.bytes_per_s is None
    assert served[0].ws.bytes_per_s is None


def test_a_tiny_cap_is_refused(served: list[EdgeSettings]) -> None:
    result = CliRunner().invoke(
        cli.app, ["serve", "icefloe.demo:build_demo_flow", "--connection-bytes-per-s", "10"]
    )
    assert result.exit_code == 2
    assert served == []


# -- edge limits behind a proxy ------------------------------------------------------


def test_edge_limit_defaults(served: list[EdgeSettings]) -> None:
    result = CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow"])
    assert result.exit_code == 0, result.output
    limits = served[0].edge_limits
    assert (limits.max_connections, limits.requests_per_s, limits.request_burst) == (
        4096,
        1000.0,
        2000,
    )
    assert served[0].forwarded_allow_ips == ()


def test_edge_limit_flags(served: list[EdgeSettings]) -> None:
    flags = ["--max-connections", "5", "--requests-per-s", "2.5", "--request-burst", "7"]
    flags += ["--forwarded-allow-ips", "127.0.0.1, 10.0.0.0/8"]
    result = CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow", *flags])
    assert result.exit_code == 0, result.output
    (settings,) = served
    limits = settings.edge_limits
    assert (limits.max_connections, limits.requests_per_s, limits.request_burst) == (5, 2.5, 7)
    assert settings.forwarded_allow_ips == ("127.0.0.1", "10.0.0.0/8")


@pytest.mark.parametrize("off", ["0", "off", "OFF"])
def test_zero_or_off_turns_edge_limits_off(served: list[EdgeSettings], off: str) -> None:
    flags = ["--max-connections", off, "--requests-per-s", off]
    result = CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow", *flags])
    assert result.exit_code == 0, result.output
    limits = served[0].edge_limits
    assert (limits.max_connections, limits.requests_per_s) == (None, None)


@pytest.mark.parametrize(
    "flags",
    [
        ["--max-connections", "-3"],
        ["--max-connections", "many"],
        ["--requests-per-s", "inf"],
        ["--forwarded-allow-ips", "proxy.local"],
    ],
)
def test_bad_edge_limit_flags_are_refused(served: list[EdgeSettings], flags: list[str]) -> None:
    result = CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow", *flags])
    assert result.exit_code == 2
    assert served == []
