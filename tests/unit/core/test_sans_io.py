"""The core stays sans-I/O: no module in icefloe.core imports an I/O or async library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import icefloe.core

CORE = Path(icefloe.core.__file__).parent

BANNED = frozenset(
    {
        "anyio",
        "asyncio",
        "selectors",
        "socket",
        "starlette",
        "threading",
        "uvicorn",
        "websockets",
    }
)

# Clocks are injected into the state machines as ``Callable[[], float]``.
# Only messages.py may read the time, to stamp a chunk's creation time.
CLOCK_READERS = frozenset({"messages.py"})

MODULES = sorted(CORE.rglob("*.py"))


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_walk_finds_the_core_modules() -> None:
    names = {path.name for path in MODULES}
    assert {"__init__.py", "sequencer.py", "framing.py", "codec.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_core_module_does_no_io(path: Path) -> None:
    banned = _imported_roots(path) & BANNED
    assert not banned, f"{path.name} imports {sorted(banned)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_core_module_reads_no_hidden_clock(path: Path) -> None:
    if path.name in CLOCK_READERS:
        return
    assert "time" not in _imported_roots(path), f"{path.name} imports time; inject a clock"


def test_the_checker_catches_every_import_form(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os, asyncio.events\nfrom socket import socket\nfrom . import x\n")
    assert _imported_roots(module) == {"os", "asyncio", "socket"}
