"""A flow's admission: whether a new run may start, and when it enters the flow.

A :class:`~icefloe.runtime.flow.Flow` keeps one :class:`Admission`. It asks,
in order, load shedding (refused, or a start delay while ``congested``), the
byte budgets, then the registry's stream caps (which the registry checks as
it admits). A run admitted with a delay, or whose entry inbox is full, is
*deferred*: its message enters the flow later, from a loop timer, and never
queues behind a full inbox (docs/qos.md, "Start-up bursts"). Deferred runs
are bounded: the throttle refuses a start that would wait past
``SheddingPolicy.max_delay_s``, and a deferred run whose inbox stays full
that long fails ``overloaded``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from icefloe.core.messages import Headers, Message
from icefloe.exceptions import ErrorCode, StreamError, WouldBlock
from icefloe.runtime.channel import Channel

if TYPE_CHECKING:
    from icefloe.runtime.budgets import Budgets
    from icefloe.runtime.registry import StreamRegistry
    from icefloe.runtime.shedding import LoadShedder
    from icefloe.runtime.stream import StreamState

__all__ = ["DEFERRED_RETRY_S", "Admission"]

#: seconds between tries of a throttled start that found the ingress full
DEFERRED_RETRY_S = 0.01

#: the inboxes a run's message enters
Targets = tuple[Channel[Message], ...]


class Admission:
    """Admits a flow's new runs and starts the deferred ones."""

    def __init__(
        self,
        registry: StreamRegistry,
        budgets: Budgets | None,
        shedder: LoadShedder | None,
        max_delay_s: float,
    ) -> None:
        self._registry = registry
        self._budgets = budgets
        self._shedder = shedder
        #: the longest a deferred run waits for room in its inbox, past its delay
        self._max_delay_s = max_delay_s
        # Throttled runs waiting to enter the flow, by stream id (bounded:
        # the throttle refuses a start that would wait past max_delay_s).
        self._deferred: dict[str, asyncio.TimerHandle] = {}

    @property
    def deferred(self) -> int:
        """Runs admitted and waiting to enter the flow."""
        return len(self._deferred)

    def admit(
        self,
        message: Message,
        reliability: str,
        *,
        history: int | None = None,
        window: int | None = None,
    ) -> tuple[StreamState, float]:
        """Admit the stream of ``message``; returns it and how many seconds its run
        must wait before entering the flow (0.0: at once; more: throttled).

        :raises StreamError: ``overloaded`` or ``limit_exceeded``.
        """
        sid, headers = message.trace_id, message.headers
        delay = 0.0
        shedder = self._shedder
        if shedder is not None:
            wait = shedder.start_delay(headers, reliability, asyncio.get_running_loop().time())
            if wait is None:
                self._registry.refused += 1
                raise StreamError(ErrorCode.OVERLOADED, "the flow is congested; retry later", sid)
            delay = wait
        try:
            self.check_budgets(sid, headers)
            state = self._registry.admit(
                sid, sid, headers, history=history, window=window, reliability=reliability
            )
        except BaseException:
            if shedder is not None:
                shedder.refund()  # a refused run must not hold a throttle slot
            raise
        if shedder is not None:
            shedder.track(state, reliability)
        if message.deadline_s is not None:
            self._registry.set_deadline(state, message.deadline_s)
        return state, delay

    def admit_writer(self, sid: str, headers: Headers, history: int | None) -> StreamState:
        """Admit a stream produced from outside any node (``flow.open_stream``).

        :raises StreamError: ``overloaded`` if a limit refuses the stream.
        """
        self.check_budgets(sid, headers)
        state = self._registry.admit(sid, sid, headers, history=history)
        if self._shedder is not None:
            self._shedder.track(state, "at_most_once")
        return state

    def check_budgets(self, sid: str, headers: Headers) -> None:
        """:raises StreamError: a byte budget refuses a new stream of ``headers.tenant``."""
        if self._budgets is not None:
            refused = self._budgets.refusal(headers.tenant)
            if refused is not None:
                self._registry.refused += 1
                raise StreamError(refused[0], refused[1], sid)

    def enter(self, state: StreamState, targets: Targets, message: Message, delay: float) -> None:
        """Send an admitted run's message into the flow, now or deferred.

        :raises StreamError: ``overloaded``: an inbox filled meanwhile (the run is cancelled).
        """
        # A full ingress inbox is a burst until the load watch says otherwise
        # (then admission refuses): the run starts when there is room, or
        # fails within max_delay_s (docs/qos.md, "Start-up bursts").
        if delay or any(len(inbox) >= inbox.capacity for inbox in targets):
            self.defer(state, targets, message, delay)
            return
        try:
            # Admission never queues: a full ingress inbox is overload, now.
            for inbox in targets:
                inbox.send_nowait(message)
        except WouldBlock:
            state.cancel(ErrorCode.CANCELLED, "the run could not start")
            self._registry.refused += 1
            if self._shedder is not None:
                self._shedder.refund()
            raise StreamError(
                ErrorCode.OVERLOADED, "the flow's ingress queue is full", state.stream_id
            ) from None
        except BaseException:
            state.cancel(ErrorCode.CANCELLED, "the run could not start")
            raise

    def defer(self, state: StreamState, targets: Targets, message: Message, delay: float) -> None:
        """Send a throttled run's message into the flow in ``delay`` seconds."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + delay + self._max_delay_s
        self._deferred[state.stream_id] = loop.call_later(
            delay, self._release, state, targets, message, give_up
        )

    def _release(
        self, state: StreamState, targets: Targets, message: Message, give_up: float
    ) -> None:
        sid = state.stream_id
        del self._deferred[sid]
        if state.phase:
            return  # cancelled, timed out or shed while it waited
        if any(len(inbox) >= inbox.capacity for inbox in targets):
            # Never queue behind a full inbox: try again shortly, up to a bound.
            loop = asyncio.get_running_loop()
            if loop.time() >= give_up:
                state.fail(ErrorCode.OVERLOADED, "the flow's ingress queue stayed full")
                return
            self._deferred[sid] = loop.call_later(
                DEFERRED_RETRY_S, self._release, state, targets, message, give_up
            )
            return
        for inbox in targets:
            inbox.send_nowait(message)

    def close(self) -> None:
        """Drop the deferred runs (the flow stops; their streams are cancelled with it)."""
        for handle in self._deferred.values():
            handle.cancel()
        self._deferred.clear()
