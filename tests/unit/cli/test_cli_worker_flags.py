"""``serve --no-runs`` and ``icefloe worker``: their flags (the processes
themselves are tested in tests/integration/backplane/test_workers.py)."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from icefloe.cli import app as cli
from icefloe.transport import app as transport_app
from icefloe.transport.app import EdgeSettings

FLOW = "icefloe.demo:build_demo_flow"


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


def test_no_runs_goes_with_the_backplane(served: list[EdgeSettings]) -> None:
    url = "redis://127.0.0.1:6379/0"
    result = CliRunner().invoke(cli.app, ["serve", FLOW, "--backplane", url, "--no-runs"])
    assert result.exit_code == 0, result.output
    assert (served[0].backplane, served[0].no_runs) == (url, True)
    result = CliRunner().invoke(cli.app, ["serve", FLOW, "--backplane", url])
    assert result.exit_code == 0, result.output
    assert served[1].no_runs is False


def test_no_runs_without_a_backplane_is_refused(served: list[EdgeSettings]) -> None:
    result = CliRunner().invoke(cli.app, ["serve", FLOW, "--no-runs"])
    assert result.exit_code == 2
    assert "--no-runs needs --backplane" in result.output
    assert served == []
    with pytest.raises(ValueError, match="no_runs needs a backplane"):
        EdgeSettings(no_runs=True)


def test_worker_refuses_a_bad_backplane_and_a_bad_concurrency() -> None:
    runner = CliRunner()
    result = runner.invoke(cli.app, ["worker", FLOW, "--backplane", "http://x"])
    assert result.exit_code == 2
    assert "redis://" in result.output
    result = runner.invoke(
        cli.app, ["worker", FLOW, "--backplane", "redis://x", "--concurrency", "0"]
    )
    assert result.exit_code == 2
    result = runner.invoke(cli.app, ["worker", "--help"])
    assert result.exit_code == 0
    for flag in ("--store", "--concurrency", "--drain-timeout", "--exit-when-idle"):
        assert flag in result.output
