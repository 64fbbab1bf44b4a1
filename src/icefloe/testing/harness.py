"""The in-memory harness: run a flow in the test's own loop, start runs, and
check what each run streams, with no server and no socket.

::

    async with icefloe.testing.open(flow) as t:
        run = await t.start("hi")
        assert await run.text() == "you said: hi "
        run.assert_in_order()
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from icefloe.core.messages import Headers, Message, StreamChunk
from icefloe.exceptions import StreamError
from icefloe.runtime.flow import Flow
from icefloe.runtime.node import Node
from icefloe.runtime.subscription import Subscription
from icefloe.testing.asgi_app import lifespan
from icefloe.testing.clock import FakeClock, current_clock
from icefloe.testing.order import assert_in_order
from icefloe.testing.ws import WebSocketSession, websocket_connect

if TYPE_CHECKING:
    import httpx

    from icefloe.transport.edge import EdgeSettings

__all__ = ["DEFAULT_TIMEOUT_S", "DONE", "Harness", "Run", "open"]

#: how long the harness waits for a run by default (loop seconds: virtual on a FakeClock)
DEFAULT_TIMEOUT_S = 5.0
#: loop seconds a closing run waits for its reader to see the cancel
CLOSE_GRACE_S = 1.0
#: ``Run.terminal`` of a run that ended with its done chunk
DONE = "done"


class Run:
    """One run started by :meth:`Harness.start`: its chunks, collected as they
    arrive by a reader the harness keeps attached, and its end.

    The reader is an ordinary subscriber (``flow.subscribe``), so the run sees
    the same backpressure and ordering as any in-process reader. It keeps
    every chunk it received, without a limit: a test's runs are short, and a
    test of a stream of millions of chunks should read ``flow.subscribe``
    itself.
    """

    def __init__(self, flow: Flow, reader: Subscription, timeout_s: float) -> None:
        self._flow = flow
        self.stream_id = reader.stream_id
        self._timeout = timeout_s
        self._chunks: list[StreamChunk] = []
        self._terminal: str | None = None
        self._error: StreamError | None = None
        self._progress = asyncio.Event()  # replaced after each wake-up
        self._ended = asyncio.Event()
        self._task = asyncio.ensure_future(self._collect(reader))

    def __repr__(self) -> str:
        state = self._terminal or "running"
        return f"<Run {self.stream_id!r} {state}, {len(self._chunks)} chunks>"

    async def _collect(self, reader: Subscription) -> None:
        try:
            async with reader:
                async for chunk in reader:
                    self._chunks.append(chunk)
                    self._wake()
            self._terminal = DONE
        except StreamError as exc:
            self._error = exc
            self._terminal = exc.code
        finally:
            self._ended.set()
            self._wake()

    def _wake(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    # -- what it received --------------------------------------------------------

    @property
    def received(self) -> tuple[StreamChunk, ...]:
        """The chunks received so far (the run may still be going)."""
        return tuple(self._chunks)

    @property
    def terminal(self) -> str | None:
        """None while the run goes on; ``"done"``, or the :class:`ErrorCode`
        it ended with (``"cancelled"``, ``"failed"``, ...), once it ended."""
        return self._terminal

    @property
    def error(self) -> StreamError | None:
        """The :class:`StreamError` the run ended with, if it failed."""
        return self._error

    async def wait(self) -> str:
        """Wait for the run to end; returns :attr:`terminal`.

        :raises AssertionError: it did not end within the harness's
            ``timeout_s`` (loop seconds), naming what it received.
        """
        limit = self._timeout
        try:
            async with asyncio.timeout(limit):
                await self._ended.wait()
        except TimeoutError:
            raise AssertionError(f"{self!r} did not end within {limit} s{self._tail()}") from None
        assert self._terminal is not None
        return self._terminal

    async def wait_for(self, count: int) -> tuple[StreamChunk, ...]:
        """Wait until ``count`` chunks have arrived; returns them (the first ``count``).

        :raises AssertionError: they did not arrive within the harness's
            ``timeout_s``, or the run ended with fewer.
        """
        limit = self._timeout
        try:
            async with asyncio.timeout(limit):
                while len(self._chunks) < count and not self._ended.is_set():
                    await self._progress.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self!r}: {count} chunks did not arrive within {limit} s{self._tail()}"
            ) from None
        if len(self._chunks) < count:
            raise AssertionError(f"{self!r} ended before sending {count} chunks{self._tail()}")
        return tuple(self._chunks[:count])

    async def chunks(self) -> tuple[StreamChunk, ...]:
        """Wait for the run to end; returns every chunk it streamed, in order."""
        await self.wait()
        return tuple(self._chunks)

    async def text(self) -> str:
        """Wait for the run to end; returns its chunks' text joined.

        :raises AssertionError: it ended without its done chunk (``cancelled``,
            ``failed``, ...), naming the code and message.
        """
        terminal = await self.wait()
        if terminal != DONE:
            raise AssertionError(f"{self!r} ended with {self._error}{self._tail()}")
        return "".join(c.text for c in self._chunks)

    def assert_in_order(self) -> None:
        """Check the chunks received so far: seq 0, 1, 2... with no gap or
        duplicate, nothing after done, and done last if the run ended well.

        :raises AssertionError: naming the first chunk that breaks a rule.
        """
        assert_in_order(self._chunks, complete=self._terminal == DONE)

    def _tail(self) -> str:
        if not self._chunks:
            return "; it received no chunk"
        last = self._chunks[-1]
        return f"; it received {len(self._chunks)} chunks, the last seq {last.seq} {last.text!r}"

    # -- acting on it ----------------------------------------------------------

    def send_input(self, data: Any) -> None:
        """Queue ``data`` for the node producing this run (``ctx.inputs``).

        :raises StreamClosedError: the run has ended.
        :raises WouldBlock: ``Limits.stream_inputs`` inputs are still unread.
        """
        self._flow.send_input(self.stream_id, data)

    def cancel(self) -> bool:
        """Cancel the run (``flow.cancel``); it ends with ``cancelled``.
        Returns whether anything was still running."""
        return self._flow.cancel(self.stream_id)

    async def close(self) -> None:
        """Cancel the run if it goes on, and detach the harness's reader."""
        if not self._ended.is_set():
            self._flow.cancel(self.stream_id)
            # The reader sees the cancel on its next turn: let it record the end.
            await asyncio.wait({self._task}, timeout=CLOSE_GRACE_S)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class Harness:
    """What ``async with icefloe.testing.open(flow) as t`` gives: the running
    flow, :meth:`start` for runs, and :meth:`client` for the HTTP edge."""

    def __init__(self, flow: Flow, timeout_s: float) -> None:
        self.flow = flow
        #: the bound of every wait of the harness, in loop seconds
        self.timeout_s = timeout_s
        self._runs: list[Run] = []

    @property
    def runs(self) -> tuple[Run, ...]:
        """Every run started, in order."""
        return tuple(self._runs)

    @property
    def clock(self) -> FakeClock | None:
        """The fake clock of the loop the test runs in (None: real time)."""
        return current_clock()

    async def start(
        self,
        payload: Any = None,
        *,
        headers: Headers | None = None,
        deadline_s: float | None = None,
        to: Node | Sequence[Node] | None = None,
    ) -> Run:
        """Start a run of ``payload`` (tenant ``"test"`` unless ``headers`` say
        otherwise) and begin collecting its chunks.

        :raises StreamError: the flow refused it (``overloaded``, ``limit_exceeded``).
        """
        message = Message(
            payload=payload, headers=headers or Headers(tenant="test"), deadline_s=deadline_s
        )
        return await self.start_message(message, to=to)

    async def start_message(
        self, message: Message, *, to: Node | Sequence[Node] | None = None
    ) -> Run:
        """Like :meth:`start`, for a :class:`Message` built by the test."""
        sid = await self.flow.start(message, to=to)
        # Attached before the node runs (it has not had a turn of the loop yet),
        # so the reader sees the stream from seq 0.
        run = Run(self.flow, self.flow.subscribe(sid, 0), self.timeout_s)
        self._runs.append(run)
        return run

    def client(
        self, settings: EdgeSettings | None = None
    ) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
        """An ``httpx.AsyncClient`` on this flow's HTTP edge, in memory
        (:func:`icefloe.testing.asgi.client`); needs the ``server`` extra."""
        from icefloe.testing.asgi import client
        from icefloe.transport.app import create_app

        return client(create_app(self.flow, settings))

    @contextlib.asynccontextmanager
    async def websocket(
        self,
        *,
        subprotocols: Sequence[str] = ("icefloe.v1.json",),
        headers: Sequence[tuple[str, str]] = (),
        settings: EdgeSettings | None = None,
    ) -> AsyncIterator[WebSocketSession]:
        """An in-memory WebSocket session on this flow's ``/v1/ws``
        (:func:`icefloe.testing.ws.websocket_connect`), the edge's lifespan
        run around it; needs the ``server`` extra."""
        from icefloe.transport.app import create_app

        app = create_app(self.flow, settings)
        async with (
            lifespan(app),
            websocket_connect(app, "/v1/ws", subprotocols=subprotocols, headers=headers) as ws,
        ):
            yield ws

    async def aclose(self) -> None:
        """Cancel the runs still going and detach their readers."""
        for run in self._runs:
            await run.close()


@contextlib.asynccontextmanager
async def open(flow: Flow, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> AsyncIterator[Harness]:
    """Run ``flow`` for a test: ``async with icefloe.testing.open(flow) as t``.

    A flow that is not running yet is run here and stopped on leaving; one
    already running is left running. On leaving, runs still going are
    cancelled. ``timeout_s`` bounds every wait of the harness (loop seconds:
    virtual ones on a :class:`FakeClock`); wrap a wait in ``asyncio.timeout``
    for a tighter bound.

    :raises ValueError: ``timeout_s`` is not a positive finite number.
    :raises InvalidState: the flow was stopped (flows are single-use).
    """
    if not isinstance(timeout_s, int | float) or not math.isfinite(timeout_s) or timeout_s <= 0:
        raise ValueError(f"timeout_s must be finite seconds > 0, got {timeout_s!r}")
    owned = not flow.running
    if owned:
        flow.run()
    harness = Harness(flow, timeout_s)
    try:
        yield harness
    finally:
        await harness.aclose()
        if owned:
            await flow.stop()
