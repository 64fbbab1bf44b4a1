"""``icefloe serve``'s admission flags: the tenant layer and the per-tenant stream cap."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from icefloe.cli import app as cli
from icefloe.runtime.flow import Flow
from icefloe.transport import app as transport_app
from icefloe.transport.app import EdgeSettings

TARGET = "icefloe.demo:build_demo_flow"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Flow, EdgeSettings]]:
    """The flow and settings ``serve`` builds its app with (uvicorn is not started)."""
    seen: list[tuple[Flow, EdgeSettings]] = []

    def build(flow: Flow, settings: EdgeSettings, **options: Any) -> object:
        seen.append((flow, settings))
        return object()

    def run(app: object, **options: Any) -> None:
        pass

    monkeypatch.setattr(transport_app, "create_app", build)
    monkeypatch.setattr(uvicorn, "run", run)
    return seen


def test_defaults(served: list[tuple[Flow, EdgeSettings]]) -> None:
    result = CliRunner().invoke(cli.app, ["serve", TARGET])
    assert result.exit_code == 0, result.output
    ((flow, settings),) = served
    limits = settings.edge_limits
    assert (limits.tenant_requests_per_s, limits.tenant_request_burst) == (4000.0, 8000)
    assert limits.tenant_max_connections == 16384
    assert flow.limits.max_streams_per_tenant == 2500


def test_flags(served: list[tuple[Flow, EdgeSettings]]) -> None:
    flags = [
        "--tenant-requests-per-s",
        "50",
        "--tenant-request-burst",
        "7",
        "--tenant-max-connections",
        "off",
        "--max-streams-per-tenant",
        "12",
    ]
    result = CliRunner().invoke(cli.app, ["serve", TARGET, *flags])
    assert result.exit_code == 0, result.output
    ((flow, settings),) = served
    limits = settings.edge_limits
    assert (limits.tenant_requests_per_s, limits.tenant_request_burst) == (50.0, 7)
    assert limits.tenant_max_connections is None
    assert flow.limits.max_streams_per_tenant == 12


def test_max_streams_per_tenant_off(served: list[tuple[Flow, EdgeSettings]]) -> None:
    result = CliRunner().invoke(cli.app, ["serve", TARGET, "--max-streams-per-tenant", "off"])
    assert result.exit_code == 0, result.output
    assert served[0][0].limits.max_streams_per_tenant is None


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--max-streams-per-tenant", "-3"),
        ("--max-streams-per-tenant", "many"),
        ("--tenant-requests-per-s", "nan"),
        ("--tenant-max-connections", "x"),
    ],
)
def test_bad_values_name_their_flag(
    served: list[tuple[Flow, EdgeSettings]], flag: str, value: str
) -> None:
    result = CliRunner().invoke(cli.app, ["serve", TARGET, flag, value])
    assert result.exit_code == 2
    assert flag in result.output
    assert served == []
