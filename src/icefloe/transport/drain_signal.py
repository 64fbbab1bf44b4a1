"""SIGTERM drains an app served by uvicorn, then stops the server; the process exits 0.

uvicorn alone stops at once on SIGTERM: it closes the listener, sends every
WebSocket 1012, waits for the open responses (an SSE stream may never end)
and then dies by the signal it caught. With ``EdgeSettings.drain_timeout_s``
set (``icefloe serve --drain-timeout``, 25 s by default there), the app's
lifespan puts :class:`SigtermDrain` in front of uvicorn's SIGTERM handler:

1. ``/readyz`` answers ``503`` (``draining``) at once, new runs are refused
   (``503 unavailable``, ``Retry-After: 1``), and with a backplane every
   streaming client is handed off at once (SSE/NDJSON: a reconnect hint and
   the end of the body; WebSocket: close 4001), as is each one that connects
   afterwards (:mod:`icefloe.transport.drain`). The listener stays open, so
   probes and a balancer still reach the process and read that it drains;
2. the runs this process produces go on, read from the backplane by the
   other gateways; the drain waits until none runs and every one is
   appended to the backplane, or until the drain timeout;
3. the clients still connected (without a backplane: the readers of those
   runs, which stayed to the end) are handed off, and get
   :data:`HANDOFF_S` to receive their last bytes;
4. uvicorn's own shutdown runs (listener closed, idle connections closed,
   the flow stopped: runs still going are cancelled, durable ones stay
   unfinished in the store for a restart to resume). The signal is not
   handed to uvicorn, so it does not raise it again: the process exits 0.

A second SIGTERM during the drain skips to step 4. SIGINT (Ctrl-C) stops
at once, as uvicorn does. Nothing is installed outside uvicorn's main
thread, nor under another server.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Final

import uvicorn

from icefloe.transport.edge import EdgeContext

__all__ = ["HANDOFF_S", "POLL_S", "SigtermDrain"]

log = logging.getLogger("icefloe.drain")

#: seconds between two looks at the runs still going (the drain's only clock)
POLL_S: Final = 0.1
#: seconds the handed-off clients get to receive their last bytes
HANDOFF_S: Final = 2.0


class SigtermDrain:
    """SIGTERM handling of one app under uvicorn (see the module docstring)."""

    def __init__(self, edge: EdgeContext, timeout_s: float) -> None:
        if not timeout_s >= 0:
            raise ValueError(f"timeout_s must be >= 0, got {timeout_s!r}")
        self._edge = edge
        self._timeout_s = timeout_s
        self._server: uvicorn.Server | None = None
        self._previous: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._requested = False

    def install(self) -> bool:
        """Take SIGTERM over from the uvicorn server running this loop; whether it did."""
        if threading.current_thread() is not threading.main_thread():
            return False
        current = signal.getsignal(signal.SIGTERM)
        server = getattr(current, "__self__", None)
        if not isinstance(server, uvicorn.Server):
            return False  # not served by uvicorn (or already taken): leave it be
        self._server = server
        self._previous = current
        self._loop = asyncio.get_running_loop()
        signal.signal(signal.SIGTERM, self._on_sigterm)
        return True

    def uninstall(self) -> None:
        """Give SIGTERM back to uvicorn (idempotent)."""
        if (
            self._previous is not None
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == self._on_sigterm
        ):
            signal.signal(signal.SIGTERM, self._previous)
        self._previous = None
        if self._task is not None:
            self._task.cancel()

    def _on_sigterm(self, sig: int, frame: FrameType | None) -> None:
        server = self._server
        if server is None or self._loop is None:
            return
        if self._requested:
            server.should_exit = True  # a second SIGTERM: stop now
            return
        self._requested = True
        # A signal handler runs between two bytecodes of the loop's thread:
        # hand the work to the loop.
        self._loop.call_soon_threadsafe(self._begin)

    def _begin(self) -> None:
        self._task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        edge = self._edge
        server = self._server
        assert server is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        edge.drain.begin()
        log.warning(
            "SIGTERM: draining (readiness off, clients handed off, up to %g s for runs)",
            self._timeout_s,
        )
        try:
            # Polled: the runs end in the flow and the engine, which signal nobody.
            await self._until(lambda: not self._busy(), deadline)
            if self._busy():
                log.warning("drain timeout: the runs still going stop with the server")
            edge.drain.hand_off_all()
            await self._until(lambda: not edge.drain.pending(), loop.time() + HANDOFF_S)
        finally:
            server.should_exit = True

    async def _until(self, done: Callable[[], bool], deadline: float) -> None:
        """Look every POLL_S until ``done()``, the deadline, or a forced stop."""
        loop = asyncio.get_running_loop()
        server = self._server
        while loop.time() < deadline and not (server is not None and server.should_exit):
            if done():
                return
            await asyncio.sleep(POLL_S)

    def _busy(self) -> bool:
        """Whether a run of this process still runs or is still being shared."""
        edge = self._edge
        if edge.flow.stats().streams.active:
            return True
        backplane = edge.backplane
        return backplane is not None and backplane.engine.producing() > 0
