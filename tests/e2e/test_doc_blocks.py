"""Every code block of README.md and docs/*.md marked runnable runs as written.

See docblocks.py for the markers. A python block runs as a script in a fresh
interpreter (this one, so it imports the icefloe under test), in an empty
directory, and must exit 0 within the timeout.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from docblocks import ROOT, Block, blocks, doc_files

RUNNABLE = [b for path in doc_files() for b in blocks(path) if b.runnable]


def test_the_readme_opens_with_a_runnable_snippet() -> None:
    readme = ROOT / "README.md"
    first = next(b for b in blocks(readme) if b.lang == "python")
    assert first.runnable, "the README's first python block must be marked runnable"
    text = readme.read_text(encoding="utf-8")
    assert text.index(first.code) < text.index("```sh"), "the first block of the README"


def test_every_doc_file_parses_and_markers_name_a_supported_language() -> None:
    for path in doc_files():
        for b in blocks(path):
            if b.runnable:
                assert b.lang == "python", f"{b.where}: only python blocks are runnable"


@pytest.mark.parametrize("b", RUNNABLE, ids=[b.where for b in RUNNABLE])
def test_runnable_block_runs(b: Block, tmp_path: Path) -> None:
    script = tmp_path / "block.py"
    script.write_text(b.code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, f"{b.where} failed:\n{done.stderr}"


def test_a_block_with_top_level_await_fails_here(tmp_path: Path) -> None:
    # The runner is a real interpreter: a snippet with a top-level `async with`
    # (the README's first snippet before) cannot pass.
    script = tmp_path / "block.py"
    script.write_text("async with open('x') as f:\n    pass\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, timeout=60, check=False
    )
    assert done.returncode != 0
