"""``icefloe serve`` turns its hub budget flags into the hub's limits (issue 15, item 1)."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from icefloe.cli import app as cli
from icefloe.hub import HubLimits
from icefloe.transport import app as transport_app
from icefloe.transport.app import EdgeSettings

TARGET = "icefloe.demo:build_demo_flow"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[EdgeSettings]:
    """The settings ``serve`` builds its app with (uvicorn is not started)."""
    seen: list[EdgeSettings] = []

    def build(flow: Any, settings: EdgeSettings, **options: Any) -> object:
        seen.append(settings)
        return object()

    monkeypatch.setattr(transport_app, "create_app", build)
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: None)
    return seen


def test_the_hub_budgets_default_to_the_hubs(served: list[EdgeSettings]) -> None:
    result = CliRunner().invoke(cli.app, ["serve", TARGET])
    assert result.exit_code == 0, result.output
    assert served[0].hub_limits == HubLimits()


def test_hub_budget_flags(served: list[EdgeSettings]) -> None:
    flags = ["--hub-bytes-per-tenant", "1048576", "--hub-topics-per-tenant", "50"]
    result = CliRunner().invoke(cli.app, ["serve", TARGET, *flags, "--hub-topic-idle", "30"])
    assert result.exit_code == 0, result.output
    limits = served[0].hub_limits
    assert (limits.max_bytes_per_tenant, limits.max_topics_per_tenant) == (1048576, 50)
    assert limits.topic_idle_s == 30


@pytest.mark.parametrize("off", ["0", "off"])
def test_zero_or_off_turns_a_hub_budget_off(served: list[EdgeSettings], off: str) -> None:
    flags = ["--hub-bytes-per-tenant", off, "--hub-topics-per-tenant", off]
    result = CliRunner().invoke(cli.app, ["serve", TARGET, *flags])
    assert result.exit_code == 0, result.output
    limits = served[0].hub_limits
    assert (limits.max_bytes_per_tenant, limits.max_topics_per_tenant) == (None, None)


@pytest.mark.parametrize(
    "flags",
    [
        ["--hub-bytes-per-tenant", "lots"],
        ["--hub-topics-per-tenant", "-3"],
        ["--hub-topic-idle", "-1"],
    ],
)
def test_bad_hub_budget_flags_are_refused(served: list[EdgeSettings], flags: list[str]) -> None:
    result = CliRunner().invoke(cli.app, ["serve", TARGET, *flags])
    assert result.exit_code == 2
    assert not served
