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
