"""``icefloe``: the command line.

``icefloe demo`` streams the built-in simulated LLM to the terminal (the HTTP
server and inspector come with the transport layer); ``icefloe --version``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer
from rich.console import Console

from icefloe._version import __version__
from icefloe.core.messages import Headers, Message
from icefloe.demo import DEMO_TEXT, Pacing, build_demo_flow

__all__ = ["app", "main"]

app = typer.Typer(
    name="icefloe",
    help="Real-time token streaming for agent and LLM flows.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"icefloe {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Real-time token streaming for agent and LLM flows."""


@app.command()
def demo(
    text: Annotated[str, typer.Option(help="What the simulated model says.")] = DEMO_TEXT,
    first_token_ms: Annotated[float, typer.Option(min=0, help="Time to first token.")] = 250,
    inter_token_ms: Annotated[float, typer.Option(min=0, help="Mean gap between tokens.")] = 40,
) -> None:
    """Stream the built-in simulated LLM's tokens to the terminal, live."""
    pacing = Pacing(first_token_ms / 1000, inter_token_ms / 1000)
    asyncio.run(_demo(text, pacing, Console(highlight=False)))


async def _demo(text: str, pacing: Pacing, console: Console) -> None:
    async with build_demo_flow(pacing) as flow:
        started = time.perf_counter()
        first: float | None = None
        count = 0
        async for chunk in flow.stream(Message(payload=text, headers=Headers(tenant="demo"))):
            if first is None:
                first = time.perf_counter() - started
            count += 1
            console.print(chunk.text, end="", soft_wrap=True)
        elapsed = time.perf_counter() - started
        console.print()
        console.print(
            f"[dim]{count} chunks in {elapsed:.2f} s, first token after "
            f"{(first or 0) * 1000:.0f} ms[/dim]"
        )


def main() -> None:
    """Console-script entry point."""
    app()
