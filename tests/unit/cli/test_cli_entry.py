"""The ``icefloe`` console script without the ``server`` extra: one line, exit 1, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from icefloe.cli import INSTALL_HINT, SERVER_MODULES, main

# Runs in a fresh interpreter: a meta path finder that refuses the blocked
# modules, as if they were not installed, then the console script's entry.
_RUN_BLOCKED = """
import sys

BLOCKED = {blocked!r}

class Uninstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Uninstalled())
sys.argv = ["icefloe", *{argv!r}]
from icefloe.cli import main
main()
"""

_SERVE = ["serve", "icefloe.demo:build_demo_flow", "--host", "127.0.0.1", "--port", "0"]


def _run(blocked: set[str], argv: list[str]) -> subprocess.CompletedProcess[str]:
    script = _RUN_BLOCKED.format(blocked=blocked, argv=argv)
    # The timeout fails the test should a command ever get past the missing
    # module and start serving.
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("missing", "argv"),
    [
        ("typer", ["--version"]),
        ("rich", ["--version"]),
        ("jwt", _SERVE),
        ("starlette", _SERVE),
        ("uvicorn", _SERVE),
        ("httpx", ["tail", "http://127.0.0.1:9/v1/streams/s"]),
    ],
)
def test_a_missing_server_module_is_one_line_naming_the_extra(
    missing: str, argv: list[str]
) -> None:
    result = _run({missing}, argv)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert INSTALL_HINT in lines[0]
    assert f"({missing} is not installed)" in lines[0]
    assert "Traceback" not in result.stderr


def test_with_the_extra_installed_the_entry_runs_the_app() -> None:
    result = _run(set(), ["--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("icefloe ")


def test_another_missing_module_is_not_blamed_on_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A None entry makes the import fail with ModuleNotFoundError naming it.
    monkeypatch.setitem(sys.modules, "icefloe.cli.app", None)
    with pytest.raises(ModuleNotFoundError) as info:
        main()
    assert info.value.name == "icefloe.cli.app"


def test_the_hint_names_the_extra_that_holds_every_module() -> None:
    assert INSTALL_HINT == "pip install 'icefloe[server]'"
    assert {"typer", "rich", "starlette", "uvicorn", "jwt"} <= SERVER_MODULES


def test_importing_icefloe_and_its_cli_package_loads_neither_typer_nor_rich() -> None:
    script = (
        "import json, sys\n"
        "import icefloe, icefloe.cli\n"
        "print(json.dumps([m for m in ('typer', 'rich') if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout) == []
