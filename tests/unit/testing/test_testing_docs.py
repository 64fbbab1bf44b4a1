"""docs/testing.md's pytest example passes under pytest, as a user would run it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).parents[3] / "docs" / "testing.md"


def test_the_pytest_example_of_docs_testing_md_passes(tmp_path: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    found = re.search(r"<!-- block: test_chat.py -->\n```python\n(.*?)```", text, re.S)
    assert found is not None, "docs/testing.md lost its test_chat.py block"
    (tmp_path / "test_chat.py").write_text(found.group(1), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_chat.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
