"""The code blocks of README.md and docs/*.md that tests run, found by marker.

An HTML comment on the line before a fenced block marks it (GitHub does not
render the comment):

* ``<!-- runnable -->``: a ``python`` block that runs on its own, as a
  script, and must exit 0 (test_doc_blocks.py);
* ``<!-- block: NAME -->``: a block a test uses by name, as the reader would
  (the README's ``myflow.py``, its ``curl`` calls, its EventSource snippet:
  test_readme_new_user.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ROOT", "Block", "block", "blocks", "doc_files"]

ROOT = Path(__file__).parents[2]

_MARKER = re.compile(r"^<!--\s*(runnable|block:\s*(\S+))\s*-->\s*$")
_FENCE = re.compile(r"^( *)```(\w*)\s*$")


@dataclass(frozen=True)
class Block:
    """One marked block: where it is, its marker, its language and its code."""

    path: Path
    line: int
    runnable: bool
    name: str | None
    lang: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """The marked blocks of one Markdown file, in order.

    :raises ValueError: a marker not followed by a fenced block, or an
        unclosed fence: a marker must never be silently ignored.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        marker = _MARKER.match(lines[i].strip())
        i += 1
        if marker is None:
            continue
        fence = _FENCE.match(lines[i]) if i < len(lines) else None
        if fence is None:
            raise ValueError(f"{path}:{i}: a marker must be followed by a ``` fence")
        # A block inside a list item is indented: its code is, by as much.
        indent = fence.group(1)
        start = i + 1
        end = start
        while end < len(lines) and not lines[end].startswith(f"{indent}```"):
            end += 1
        if end == len(lines):
            raise ValueError(f"{path}:{start}: unclosed fence")
        found.append(
            Block(
                path=path,
                line=start,
                runnable=marker.group(1) == "runnable",
                name=marker.group(2),
                lang=fence.group(2),
                code="\n".join(line.removeprefix(indent) for line in lines[start:end]) + "\n",
            )
        )
        i = end + 1
    return found


def block(path: Path, name: str) -> Block:
    """The block named ``name`` in ``path``.

    :raises LookupError: none, or more than one.
    """
    named = [b for b in blocks(path) if b.name == name]
    if len(named) != 1:
        raise LookupError(f"{path}: {len(named)} blocks named {name!r}")
    return named[0]
