"""Watch the event loop and the flow's queues; feed a :class:`CongestionMonitor`.

:class:`LoadWatch` is the thin asyncio shell around the pure
:class:`~icefloe.core.congestion.CongestionMonitor`. Every ``interval_s`` a
timer fires; how late it fires is the event-loop lag (a loop busy with CPU
work or a blocking call runs timers late). The same probe asks the owner's
``sample`` callable for ``(queue_fill, credit_starved)``, feeds all three to
the monitor, and calls the listeners when the state changes.

It runs no task: one timer handle at a time, cancelled by :meth:`LoadWatch.aclose`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from collections.abc import Callable
from types import TracebackType
from typing import NamedTuple

from icefloe.core.congestion import (
    CongestionMonitor,
    CongestionPolicy,
    CongestionState,
    CongestionStatistics,
)
from icefloe.exceptions import InvalidState

__all__ = ["LoadWatch", "LoadWatchStatistics", "ProbeListener", "Sampler", "TransitionListener"]

log = logging.getLogger("icefloe.runtime")

#: returns ``(queue_fill, credit_starved)``, each 0..1 (values outside are clamped)
Sampler = Callable[[], tuple[float, float]]
#: called as ``listener(old_state, new_state)`` on every state change
TransitionListener = Callable[[CongestionState, CongestionState], None]
#: called as ``listener(state)`` after every probe, changed or not
ProbeListener = Callable[[CongestionState], None]


class _Phase(enum.IntEnum):
    NEW = 0
    RUNNING = 1
    CLOSED = 2


class LoadWatchStatistics(NamedTuple):
    """A snapshot of a :class:`LoadWatch`."""

    #: the congestion state now
    state: CongestionState
    #: whether the probe timer is running
    running: bool
    #: seconds between probes
    interval_s: float
    #: probes run since start
    probes: int
    #: the lag measured by the last probe, in seconds
    last_lag_s: float
    #: the largest lag measured, in seconds
    max_lag_s: float
    #: probes whose ``sample`` call raised or returned a non-number (the
    #: previous values were used)
    sample_errors: int
    #: listener calls that raised (logged and otherwise ignored)
    listener_errors: int
    #: the monitor's own snapshot (smoothed signals, transitions, ...)
    congestion: CongestionStatistics


def _fraction(value: float) -> float:
    value = float(value)
    if math.isnan(value):
        raise ValueError("sample returned NaN")
    return min(1.0, max(0.0, value))


class LoadWatch:
    """Samples event-loop lag and queue pressure; tracks the congestion state.

    :param sample: returns ``(queue_fill, credit_starved)`` when called
        (both 0..1; values outside are clamped); ``None`` samples loop lag
        only. It runs inside the probe, on the loop, so it must be quick and
        must not block. If it raises, the previous values are used and the
        error counted (and logged once per run of failures).
    :param policy: the monitor's thresholds; default ``CongestionPolicy()``.
    :param interval_s: seconds between probes; finite and > 0; default 0.1.
        The lag resolution is the loop's timer resolution (about 1 ms).
    :raises ValueError: if ``interval_s`` is out of range.

    Use ``async with LoadWatch(...) as watch:``, or :meth:`start` and
    :meth:`aclose`. A watch runs once: it cannot be restarted after closing.
    """

    __slots__ = (
        "_due",
        "_failing",
        "_handle",
        "_interval",
        "_last_lag",
        "_last_sample",
        "_listener_errors",
        "_listeners",
        "_loop",
        "_max_lag",
        "_monitor",
        "_phase",
        "_probe_listeners",
        "_probes",
        "_sample",
        "_sample_errors",
    )

    def __init__(
        self,
        sample: Sampler | None = None,
        *,
        policy: CongestionPolicy | None = None,
        interval_s: float = 0.1,
    ) -> None:
        if (
            not isinstance(interval_s, int | float)
            or isinstance(interval_s, bool)
            or not math.isfinite(interval_s)
            or interval_s <= 0
        ):
            raise ValueError(f"interval_s must be a finite number > 0, got {interval_s!r}")
        self._sample = sample
        self._monitor = CongestionMonitor(policy)
        self._interval = float(interval_s)
        self._listeners: list[TransitionListener] = []
        self._probe_listeners: list[ProbeListener] = []
        self._phase = _Phase.NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._probes = 0
        self._last_lag = 0.0
        self._max_lag = 0.0
        self._last_sample = (0.0, 0.0)
        self._sample_errors = 0
        self._listener_errors = 0
        self._failing = False

    def __repr__(self) -> str:
        return f"LoadWatch(state={self.state.value!r}, phase={self._phase.name.lower()})"

    @property
    def state(self) -> CongestionState:
        """The congestion state after the last probe (``normal`` before the first)."""
        return self._monitor.state

    def add_listener(self, listener: TransitionListener) -> None:
        """Call ``listener(old, new)`` on every state change, on the loop, in the probe.

        A listener that raises is logged and counted; the others still run.
        """
        self._listeners.append(listener)

    @property
    def policy(self) -> CongestionPolicy:
        """The monitor's thresholds."""
        return self._monitor.policy

    def add_probe_listener(self, listener: ProbeListener) -> None:
        """Call ``listener(state)`` after every probe, on the loop (after the
        transition listeners): for responses that act while a state lasts,
        such as shedding under overload. Errors are counted as for listeners.
        """
        self._probe_listeners.append(listener)

    def remove_listener(self, listener: TransitionListener) -> None:
        """Stop calling ``listener``; no error if it was not added."""
        try:
            self._listeners.remove(listener)
        except ValueError:
            pass

    def start(self) -> None:
        """Start probing on the running event loop.

        :raises InvalidState: if there is no running loop, or the watch is
            already running or closed.
        """
        if self._phase is not _Phase.NEW:
            raise InvalidState(f"cannot start a LoadWatch that is {self._phase.name.lower()}")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise InvalidState("LoadWatch.start() needs a running event loop") from None
        self._loop = loop
        self._phase = _Phase.RUNNING
        self._schedule(loop)

    def close(self) -> None:
        """Stop probing; idempotent. The state and statistics stay readable."""
        self._phase = _Phase.CLOSED
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()

    async def aclose(self) -> None:
        """Stop probing; idempotent (the async form of :meth:`close`)."""
        self.close()

    async def __aenter__(self) -> LoadWatch:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due = loop.time() + self._interval
        self._handle = loop.call_at(self._due, self._probe)

    def _probe(self) -> None:
        loop = self._loop
        if self._phase is not _Phase.RUNNING or loop is None:  # pragma: no cover - cancelled
            return
        now = loop.time()
        lag = now - self._due
        if lag < 0.0:  # timers may fire up to one clock resolution early
            lag = 0.0
        self._probes += 1
        self._last_lag = lag
        if lag > self._max_lag:
            self._max_lag = lag
        queue_fill, credit_starved = self._read_sample()
        # Schedule the next probe first: a listener may close the watch.
        self._schedule(loop)
        self.observe(now, queue_fill=queue_fill, credit_starved=credit_starved, loop_lag_s=lag)

    def observe(
        self,
        now: float,
        *,
        queue_fill: float = 0.0,
        credit_starved: float = 0.0,
        loop_lag_s: float = 0.0,
    ) -> CongestionState:
        """Take one sample as a probe does and tell the listeners; the new state.

        The probe calls it with what it measured; call it yourself to feed a
        load signal measured elsewhere (or a test's). ``now`` is monotonic
        seconds; see :meth:`CongestionMonitor.observe` for the checks.
        """
        old = self._monitor.state
        new = self._monitor.observe(
            now, queue_fill=queue_fill, credit_starved=credit_starved, loop_lag_s=loop_lag_s
        )
        if new is not old:
            for listener in tuple(self._listeners):
                try:
                    listener(old, new)
                except Exception:
                    self._listener_errors += 1
                    log.exception("LoadWatch listener %r failed", listener)
        for on_probe in tuple(self._probe_listeners):
            try:
                on_probe(new)
            except Exception:
                self._listener_errors += 1
                log.exception("LoadWatch probe listener %r failed", on_probe)
        return new

    def _read_sample(self) -> tuple[float, float]:
        if self._sample is None:
            return self._last_sample
        try:
            queue_fill, credit_starved = self._sample()
            values = (_fraction(queue_fill), _fraction(credit_starved))
        except Exception:
            self._sample_errors += 1
            if not self._failing:
                self._failing = True
                log.warning("LoadWatch sample failed; using the previous values", exc_info=True)
            return self._last_sample
        self._failing = False
        self._last_sample = values
        return values

    def statistics(self) -> LoadWatchStatistics:
        """A snapshot of the probe's counters and the monitor's state."""
        return LoadWatchStatistics(
            state=self._monitor.state,
            running=self._phase is _Phase.RUNNING,
            interval_s=self._interval,
            probes=self._probes,
            last_lag_s=self._last_lag,
            max_lag_s=self._max_lag,
            sample_errors=self._sample_errors,
            listener_errors=self._listener_errors,
            congestion=self._monitor.statistics(),
        )
