"""``icefloe worker module:flow --backplane URL``: run the starts of ``--no-runs`` gateways.

The command builds the flow, gives it ``--store`` (shared by the workers, so
that a run a dead worker held resumes elsewhere), and runs a
:class:`~icefloe.transport.backplane_worker.Worker` until SIGTERM or SIGINT
(it drains, then exits 0) or, with ``--exit-when-idle``, until it has held
no run for that long (exit 0). docs/deploy.md, "Workers".
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from icefloe._version import __version__
from icefloe.cli import serve_options as options

if TYPE_CHECKING:
    from icefloe.runtime.flow import Flow
    from icefloe.transport.backplane_worker import Worker

__all__ = ["register"]

err = Console(stderr=True, highlight=False)


def register(app: typer.Typer, load_flow: Callable[[str], Flow]) -> None:
    """Add the ``worker`` command to ``app`` (``load_flow`` reads TARGET)."""

    @app.command()
    def worker(
        target: Annotated[str, typer.Argument(help="module:flow (or a function returning one)")],
        backplane: Annotated[
            str,
            typer.Option(help="redis://HOST:PORT/DB[?prefix=P]: the gateways' backplane."),
        ],
        store: Annotated[
            str,
            typer.Option(
                help="The store the workers share (redis://…, postgresql://…): "
                "exactly_once runs of a dead worker resume from it."
            ),
        ] = "memory://",
        concurrency: Annotated[int, typer.Option(min=1, help="Runs held at once.")] = 16,
        drain_timeout: Annotated[
            float,
            typer.Option(
                min=0, help="Seconds the runs get to end on SIGTERM; the rest are handed over."
            ),
        ] = 30.0,
        exit_when_idle: Annotated[
            float | None,
            typer.Option(min=0, help="Exit 0 after this many seconds without a run."),
        ] = None,
    ) -> None:
        """Run the starts ``serve --no-runs`` gateways queue (docs/deploy.md, "Workers")."""
        from icefloe.backplane.keys import parse_url
        from icefloe.transport.backplane_worker import Worker

        try:
            parse_url(backplane)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--backplane") from None
        flow = load_flow(target)
        options.use_store(flow, store)
        running = Worker(
            flow,
            backplane,
            concurrency=concurrency,
            drain_timeout_s=drain_timeout,
            exit_when_idle_s=exit_when_idle,
        )
        err.print(f"icefloe {__version__}: worker {running.id} on {running.engine.keys.prefix}")
        asyncio.run(_work(running))


async def _work(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.drain)
    await worker.run()
