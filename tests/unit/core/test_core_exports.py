"""``icefloe.core``'s lazy exports: every name resolves, and the three lists agree."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import icefloe.core

INIT = Path(icefloe.core.__file__)


def _type_checking_imports() -> dict[str, str]:
    """Each name the ``if TYPE_CHECKING:`` block imports, and its module."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    names: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                assert imp.module is not None
                for alias in imp.names:
                    names[alias.name] = imp.module.removeprefix("icefloe.core.")
    return names


def _where() -> dict[str, str]:
    # The table is a module global read by __getattr__; compare it by value.
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "_WHERE":
            value = ast.literal_eval(node.value)
            assert isinstance(value, dict)
            return value
    raise AssertionError("no _WHERE table")


def test_all_is_unique_and_is_the_lazy_table() -> None:
    assert len(set(icefloe.core.__all__)) == len(icefloe.core.__all__)
    assert set(icefloe.core.__all__) == set(_where())


def test_the_type_checking_imports_match_the_lazy_table() -> None:
    assert _type_checking_imports() == _where()


@pytest.mark.parametrize("name", icefloe.core.__all__)
def test_every_name_resolves_to_its_module(name: str) -> None:
    module = importlib.import_module(f"icefloe.core.{_where()[name]}")
    assert getattr(icefloe.core, name) is getattr(module, name)
    assert name in module.__all__


def test_the_wire_error_table_is_exported() -> None:
    from icefloe.core.wire_errors import WIRE_ERRORS, ErrorCode, close_frame, http_status

    assert icefloe.core.ErrorCode is ErrorCode
    assert icefloe.core.WIRE_ERRORS is WIRE_ERRORS
    assert icefloe.core.close_frame is close_frame
    assert icefloe.core.http_status is http_status


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nonesuch'"):
        _ = icefloe.core.Nonesuch


def test_importing_icefloe_does_not_load_the_frame_codec_or_crc32c() -> None:
    script = (
        "import sys, icefloe, icefloe.core\n"
        "print(sorted(m for m in ('icefloe.core.framing', 'icefloe.core.dedup', 'google_crc32c')"
        " if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
