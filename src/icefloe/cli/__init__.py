"""The ``icefloe`` command line (typer + rich), behind the ``server`` extra.

``import icefloe.cli`` imports neither: :func:`main`, the console script,
imports the typer app only when it runs, so that a missing extra becomes
one line naming what to install instead of a traceback.
"""

from __future__ import annotations

import sys
from typing import Final

__all__ = ["INSTALL_HINT", "SERVER_MODULES", "main"]

#: the top-level modules of the ``server`` extra the command line imports
#: (typer and rich for the CLI itself; the rest for ``serve`` and ``tail``)
SERVER_MODULES: Final = frozenset(
    {
        "httptools",
        "httpx",
        "jwt",
        "prometheus_client",
        "rich",
        "starlette",
        "typer",
        "uvicorn",
        "websockets",
    }
)

#: what to run when one of them is missing
INSTALL_HINT: Final = "pip install 'icefloe[server]'"


def main() -> None:
    """Console-script entry point: run the typer app.

    A module of the ``server`` extra that is not installed ends the command
    with one line on stderr naming the extra, and exit status 1.
    """
    try:
        from icefloe.cli.app import app

        app()
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in SERVER_MODULES:
            raise
        print(
            f"icefloe: the command line needs the server extra ({missing} is not installed); "
            f"install it with: {INSTALL_HINT}",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
