"""Running the real ``ai`` npm package (tests/js) in Node from a test.

``check_node`` fails a test clearly when Node or the installed packages are
missing (``npm ci`` in tests/js, which ``make test`` runs); ``run_node`` runs a
script with a timeout and returns its stdout; ``load`` loads a module by path
(examples/ and tests/e2e are not packages).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

__all__ = ["JS_DIR", "ROOT", "check_node", "load", "run_node"]

ROOT = Path(__file__).resolve().parents[1]
JS_DIR = ROOT / "tests" / "js"


def check_node() -> None:
    if shutil.which("node") is None:
        pytest.fail("needs Node.js 20+ on PATH (see README: make test)")
    if not (JS_DIR / "node_modules" / "ai").is_dir():
        pytest.fail("tests/js/node_modules is missing: run `make test` (npm ci in tests/js)")


async def run_node(script: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``script`` in Node (60 s at most); its stdout, or the test fails with its stderr."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=script.parent,
        env={**os.environ, "NODE_NO_WARNINGS": "1", **(env or {})},
    )
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    return out.decode()


def load(path: Path) -> Any:
    """The module at ``path``, loaded by path (examples/ and tests/e2e are not packages)."""
    name = f"_loaded_{path.stem}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # Registered first: dataclasses resolve their module's annotations through it.
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module
