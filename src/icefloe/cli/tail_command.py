"""``icefloe tail URL``: the command around :func:`icefloe.cli.tail.tail_stream`.

Kept apart from the client so that building the app imports no httpx.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

__all__ = ["register"]

err = Console(stderr=True, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``tail`` command to ``app``."""

    @app.command()
    def tail(
        url: Annotated[str, typer.Argument(help="http://host:port/v1/streams/<id>")],
        token: Annotated[
            str | None, typer.Option(envvar="ICEFLOE_TOKEN", help="Bearer token.")
        ] = None,
        from_seq: Annotated[int, typer.Option(min=0, help="First seq to print.")] = 0,
    ) -> None:
        """Print a stream live; reconnects with Last-Event-ID after a disconnect."""
        from icefloe.cli.tail import tail_stream

        code = asyncio.run(tail_stream(url, token, from_seq, Console(highlight=False), err))
        raise typer.Exit(code)
