"""``icefloe bridge CONFIG``: run a bridge config's routes, broker to broker (docs/bridge.md).

Routes to the hub or to streams need a gateway's app: ``serve --bridge``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from icefloe._version import __version__
from icefloe.cli import serve_options as options

__all__ = ["register"]

err = Console(stderr=True, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``bridge`` command to ``app`` (issue 13, gateways)."""

    @app.command()
    def bridge(
        config: Annotated[
            Path, typer.Argument(help="Bridge config (TOML) naming the routes to run.")
        ],
    ) -> None:
        """Run the routes of a bridge config (broker to broker; hub/streams need serve --bridge)."""
        gateway = options.load_gateway(config, standalone=True)
        err.print(f"icefloe {__version__}: bridging {len(gateway.routes())} route(s)")
        try:
            asyncio.run(options.run_bridge(gateway))
        except KeyboardInterrupt:
            pass
