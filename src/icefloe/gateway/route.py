"""One running route: Source -> (translate) -> Sink, restarted with backoff after a failure.

A route moves its records in batches (:mod:`icefloe.gateway.intake`): it
takes up to ``batch`` records that its source has ready, translates each
view (when configured), makes each chunk and sends it to the sink end,
flushes the sink once (it returns when the sink confirmed every chunk), and
only then acks the batch's records, in order: a crash or a failure in between
redelivers them (at least once; a chunk's (stream_id, seq) lets the
consumer drop the repeat).

A route is ``starting`` until its source, sink and dead-letter sink are
open (after every restart too), then ``running``; ``stopped`` and ``failed``
say why in ``reason``. Its ``lag`` is what it has not moved yet, as its
source counts it: records not acked (waiting at the broker, read ahead, or
taken by the route and not yet confirmed by the sink).

A poison record (it does not decode, the translate step refuses it, or its
chunk cannot be encoded) goes to the route's dead-letter sink with the
reason, then is acked; without a dead-letter sink it is acked and counted in
``dead_letters`` as dropped. Anything else that fails (a broker down, the
sink refusing) fails the route: it closes both ends, reports ``failed`` with
the error, waits ``restart_backoff_s`` (doubling up to the cap while it
keeps failing without moving a record), and starts again.
"""

from __future__ import annotations

import asyncio
import enum
import random
from contextlib import AsyncExitStack
from typing import Any, NamedTuple

from icefloe.connectors.deadletter import DeadLetters
from icefloe.exceptions import EncodeError, InvalidState
from icefloe.gateway.cancelling import cancel_and_wait
from icefloe.gateway.config import RouteConfig
from icefloe.gateway.intake import Intake
from icefloe.gateway.kinds import Served, SinkEnd, SourceEnd, Taken, endpoint_options
from icefloe.gateway.translate import (
    TranslateError,
    Translator,
    field_mapping,
    import_translator,
    to_chunk,
)

__all__ = ["Route", "RouteState", "RouteStatus"]

#: longest error text kept for the status (a broker's message can be long)
MAX_ERROR_CHARS = 500


class RouteState(enum.StrEnum):
    #: opening its source and sink (at a start, and after each failure)
    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


class RouteStatus(NamedTuple):
    """A snapshot of one route, as ``GET /v1/routes`` shows it."""

    name: str
    state: RouteState
    #: why it is stopped or failed ("" while starting or running)
    reason: str
    source: str
    sink: str
    #: records taken from the source
    records_in: int
    #: chunks the sink confirmed
    records_out: int
    #: poison records dead-lettered (or dropped without a dead-letter sink)
    dead_letters: int
    #: records the translate step dropped (it returned None)
    filtered: int
    #: times the route failed
    failures: int
    #: records not moved yet: not acked at the source (None: it does not know)
    lag: int | None
    #: the last failure ("" if none)
    last_error: str


def _translator(route: RouteConfig) -> Translator | None:
    if isinstance(route.translate, str):
        return import_translator(route.translate)
    if route.translate is not None:
        return field_mapping(route.translate)
    return None


class Route:
    """One configured route; :meth:`start` and :meth:`stop` are idempotent."""

    def __init__(
        self, name: str, config: RouteConfig, *, backoff_s: float = 0.5, backoff_cap_s: float = 30.0
    ) -> None:
        self.name = name
        self.config = config
        where = f"route {name!r}"
        self._source = endpoint_options(config.source, "source", f"{where}: source")
        self._sink = endpoint_options(config.sink, "sink", f"{where}: sink")
        self._dead = (
            None
            if config.dead_letter is None
            else endpoint_options(config.dead_letter, "dead_letter", f"{where}: dead_letter")
        )
        self._translate = _translator(config)
        self._backoff = (backoff_s, backoff_cap_s)
        self._task: asyncio.Task[None] | None = None
        self._state = RouteState.STOPPED
        self._reason = "not started"
        self._source_end: SourceEnd | None = None
        self._stopping = False
        self._lag: int | None = None
        self._in = self._out = self._dead_count = self._filtered = self._failures = 0
        self._last_error = ""

    @property
    def state(self) -> RouteState:
        return self._state

    def start(self, served: Served) -> None:
        """Run the route (in the current loop) unless it runs."""
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self._state, self._reason = RouteState.STARTING, ""
        self._task = asyncio.get_running_loop().create_task(
            self._run(served), name=f"icefloe-route:{self.name}"
        )

    async def stop(self, reason: str = "stopped by request") -> None:
        """Stop the route and close its ends; records in flight are redelivered later."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True  # the task checks it too (see cancel_and_wait)
            await cancel_and_wait(task)
        self._state, self._reason = RouteState.STOPPED, reason
        self._source_end = None

    async def refresh_lag(self, timeout_s: float = 1.0) -> int | None:
        """Ask the source for its lag (kept for :meth:`status` and ``/metrics``)."""
        end = self._source_end
        if end is None:
            return self._lag
        try:
            async with asyncio.timeout(timeout_s):
                self._lag = await end.lag()
        except Exception:  # a lag query is a hint: never fail the caller
            pass
        return self._lag

    def status(self) -> RouteStatus:
        return RouteStatus(
            self.name,
            self._state,
            self._reason,
            str(self.config.source.get("kind")),
            str(self.config.sink.get("kind")),
            self._in,
            self._out,
            self._dead_count,
            self._filtered,
            self._failures,
            self._lag,
            self._last_error,
        )

    async def _run(self, served: Served) -> None:
        attempt = 0
        while True:
            moved = self._in
            try:
                await self._pump(served)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping:
                    raise asyncio.CancelledError from exc
                self._failures += 1
                error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
                self._state, self._reason, self._last_error = RouteState.FAILED, error, error
            else:
                self._state, self._reason = RouteState.STOPPED, "the source ended"
                return
            finally:
                self._source_end = None
            attempt = 0 if self._in > moved else attempt + 1
            base, cap = self._backoff
            # jitter spreads the restarts of many routes on one broker
            await asyncio.sleep(min(cap, base * 2**attempt) * random.uniform(0.5, 1.0))
            self._state, self._reason = RouteState.STARTING, ""

    async def _pump(self, served: Served) -> None:
        async with AsyncExitStack() as stack:
            kind, opts = self._source
            assert kind.source is not None  # checked by endpoint_options
            source = await stack.enter_async_context(kind.source(opts, served))
            kind, opts = self._sink
            assert kind.sink is not None
            sink = await stack.enter_async_context(kind.sink(opts, served))
            dead: DeadLetters | None = None
            if self._dead is not None:
                kind, opts = self._dead
                assert kind.raw_sink is not None
                dead = DeadLetters(await stack.enter_async_context(kind.raw_sink(opts)))
            intake = await stack.enter_async_context(Intake(source, self.config.batch))
            self._source_end = source
            self._state, self._reason = RouteState.RUNNING, ""
            while batch := await intake.batch():
                if self._stopping:
                    raise asyncio.CancelledError  # see stop()
                self._in += len(batch)
                await self._move(batch, source, sink, dead)

    async def _move(
        self, batch: list[Taken], source: SourceEnd, sink: SinkEnd, dead: DeadLetters | None
    ) -> None:
        """Send the batch's chunks, flush the sink once, then ack every record in order."""
        sent = 0
        for taken in batch:
            if taken.poison:
                await self._poison(taken, taken.poison, source, dead)
                continue
            try:
                view: dict[str, Any] | None = taken.view
                if self._translate is not None:
                    view = await self._translate(taken.view)
                if view is None:
                    self._filtered += 1
                    continue
                await sink.send(to_chunk(view))
            except (TranslateError, EncodeError) as exc:
                await self._poison(taken, str(exc), source, dead)
                continue
            sent += 1
        await sink.flush()
        self._out += sent
        for taken in batch:
            await source.ack(taken)

    async def _poison(
        self, taken: Taken, reason: str, source: SourceEnd, dead: DeadLetters | None
    ) -> None:
        """Dead-letter ``taken`` (confirmed); the batch acks it with the others."""
        if dead is not None:
            await dead.send(taken.inbound, reason, source=source.name)
        self._dead_count += 1


def require_served(served: Served | None) -> Served:
    """``served``, or the error of a route started before its gateway runs."""
    if served is None:
        raise InvalidState("the gateway is not running: routes start inside Gateway.running()")
    return served
