"""``icefloe demo``: the built-in simulated LLM, served with the inspector or to this terminal.

The demo runs without authentication, so it binds loopback only (exit 2
otherwise); ``--terminal`` streams one answer here instead of serving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from icefloe.cli import serve_options as options
from icefloe.cli.serve_settings import Host, Port, edge_settings, is_loopback
from icefloe.core.messages import Headers, Message
from icefloe.demo import DEMO_TEXT, Pacing, build_demo_flow

if TYPE_CHECKING:
    from icefloe.runtime.flow import Flow
    from icefloe.transport.app import EdgeSettings

__all__ = ["register"]

err = Console(stderr=True, highlight=False)


def register(app: typer.Typer, run_server: Callable[[Flow, EdgeSettings, str, int], None]) -> None:
    """Add the ``demo`` command to ``app`` (``run_server`` serves the flow)."""

    @app.command()
    def demo(
        host: Host = "127.0.0.1",
        port: Port = 8765,
        first_token_ms: Annotated[float, typer.Option(min=0, help="Time to first token.")] = 250,
        inter_token_ms: Annotated[float, typer.Option(min=0, help="Mean gap between tokens.")] = 40,
        terminal: Annotated[
            bool, typer.Option(help="Stream one answer to this terminal instead of serving.")
        ] = False,
    ) -> None:
        """Serve the built-in simulated LLM with the inspector page (auth off, loopback)."""
        pacing = Pacing(first_token_ms / 1000, inter_token_ms / 1000)
        if terminal:
            asyncio.run(_terminal_demo(DEMO_TEXT, pacing, Console(highlight=False)))
            return
        if not is_loopback(host):
            err.print("[red]the demo runs without authentication and binds loopback only[/red]")
            raise typer.Exit(2)
        settings = options.allowed_hosts(edge_settings(15.0, 10.0, 1024, None, []), host, [])
        run_server(build_demo_flow(pacing), settings, host, port)


async def _terminal_demo(text: str, pacing: Pacing, console: Console) -> None:
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
