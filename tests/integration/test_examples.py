"""The in-process examples run to completion (the WebSocket one needs a server: see test_ws.py)."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("llm_tokens.py", "stream complete"),
        ("hub_chat.py", ""),
        ("qos.py", "high priority behind 10 queued low ones"),
        ("durable_flow.py", "stored seqs 0..40, each once: True"),  # issue 11
    ],
)
def test_example_runs(script: str, expected: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_run_it_with_names_the_command_that_runs_the_example(script: str) -> None:
    # "Run it with ``make demo``" once said of llm_tokens.py, which make demo never runs.
    doc = ast.get_docstring(ast.parse((EXAMPLES / script).read_text(encoding="utf-8")))
    assert doc is not None
    claimed = re.search(r"Run it with ``([^`]+)``", doc)
    if claimed is not None:
        assert claimed.group(1) == f"python examples/{script}"


def test_hub_chat_late_joiner_works_when_another_topic_publishes_first(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The lobby's first offset is then not 0: the late joiner must not assume it is.
    spec = importlib.util.spec_from_file_location("hub_chat_example", EXAMPLES / "hub_chat.py")
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    replies = dict(reversed(list(example.REPLIES.items())))
    assert next(iter(replies)) == "support"  # its assistant publishes first
    monkeypatch.setattr(example, "REPLIES", replies)
    asyncio.run(example.main())
    lines = capsys.readouterr().out.splitlines()
    lobby = [line.split(":", 1)[1] for line in lines if line.strip().startswith("lobby:")]
    late = [line.split(":", 1)[1] for line in lines if line.strip().startswith("late:")]
    assert len(lobby) == 1
    assert "@0," not in lobby[0]  # the case this test is about
    assert late == lobby  # the late joiner replayed all the watcher saw
