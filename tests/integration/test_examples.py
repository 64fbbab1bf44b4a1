"""The in-process examples run to completion (the WebSocket one needs a server: see test_ws.py)."""

from __future__ import annotations

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
