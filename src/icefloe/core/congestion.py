"""Congestion detection with hysteresis, and the load-shedding decision.

:class:`CongestionMonitor` turns periodic samples of three pressure signals
into one of three states:

* ``queue_fill``: how full the fullest (or the aggregate) queue is, 0..1;
* ``credit_starved``: the fraction of streams (or of time) a producer spent
  waiting for consumer credit, 0..1;
* ``loop_lag_s``: how late the event loop ran a timer, in seconds.

Each signal is smoothed by an exponentially weighted moving average. A level
(``congested``, ``overloaded``) is *entered* when any smoothed signal reaches
that level's enter threshold, and *held* while any smoothed signal stays at or
above its exit threshold, which is lower: values between the two (the
hysteresis band) never change the state. The monitor steps down only after
the level has not been held for ``dwell_s`` seconds, so it cannot flap faster
than once per dwell. Stepping up is immediate.

:func:`shed` is the matching admission decision. The monitor reads no clock:
the caller passes ``now`` with every sample.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Final, NamedTuple

from icefloe.core.checks import check_fraction
from icefloe.core.reliability import Reliability

__all__ = [
    "CongestionMonitor",
    "CongestionPolicy",
    "CongestionState",
    "CongestionStatistics",
    "Thresholds",
    "shed",
    "shed_order",
]


class CongestionState(enum.StrEnum):
    """How pressed the server is; the strings appear in stats and ``/metrics``."""

    #: nothing is throttled or shed
    NORMAL = "normal"
    #: new low-priority ``at_most_once`` work is throttled
    CONGESTED = "congested"
    #: new work is refused; accepted low-priority ``at_most_once`` work may be shed
    OVERLOADED = "overloaded"

    @property
    def level(self) -> int:
        """0, 1, 2 for normal, congested, overloaded: compare states with this."""
        return _LEVEL[self]


_LEVEL: Final = {
    CongestionState.NORMAL: 0,
    CongestionState.CONGESTED: 1,
    CongestionState.OVERLOADED: 2,
}
_BY_LEVEL: Final = (CongestionState.NORMAL, CongestionState.CONGESTED, CongestionState.OVERLOADED)


class Thresholds(NamedTuple):
    """One signal's hysteresis band for one level: enter at ``>= enter``, hold while ``>= exit``."""

    enter: float
    exit: float


_QUEUE_CONGESTED: Final = Thresholds(0.75, 0.50)
_QUEUE_OVERLOADED: Final = Thresholds(0.95, 0.80)
_CREDIT_CONGESTED: Final = Thresholds(0.50, 0.25)
_LAG_CONGESTED: Final = Thresholds(0.050, 0.020)
# Half a second late: a loop that busy cannot serve anyone in time. Lower
# values shed on a shared CI machine's ordinary hiccups.
_LAG_OVERLOADED: Final = Thresholds(0.500, 0.250)


def _check_thresholds(name: str, value: object, *, fraction: bool) -> Thresholds | None:
    if value is None:
        return None
    if not isinstance(value, tuple) or len(value) != 2:
        raise ValueError(f"{name} must be an (enter, exit) pair or None, got {value!r}")
    enter, exit_ = value
    for number in (enter, exit_):
        if (
            not isinstance(number, int | float)
            or isinstance(number, bool)
            or not math.isfinite(number)
        ):
            raise ValueError(f"{name} thresholds must be finite numbers, got {value!r}")
    if not enter > exit_ >= 0:
        raise ValueError(f"{name} must have enter > exit >= 0, got {value!r}")
    if fraction and enter > 1:
        raise ValueError(f"{name} thresholds are fractions: enter must be <= 1, got {value!r}")
    return Thresholds(float(enter), float(exit_))


@dataclass(frozen=True, slots=True)
class CongestionPolicy:
    """Every threshold of a :class:`CongestionMonitor`, validated at construction.

    Each ``*_congested`` / ``*_overloaded`` field is a :class:`Thresholds`
    ``(enter, exit)`` pair, or ``None`` to ignore that signal for that level.
    Fractions are in 0..1, lags in seconds. For each signal the overloaded
    pair must not be below the congested pair (both enter and exit).

    * ``queue_*``: smoothed queue fill. Defaults: congested (0.75, 0.50),
      overloaded (0.95, 0.80).
    * ``credit_*``: smoothed credit starvation. Defaults: congested (0.50, 0.25),
      overloaded ``None``: consumers that grant no credit slow their own
      streams, they do not load the server, so starvation alone never refuses
      new work.
    * ``lag_*_s``: smoothed event-loop lag. Defaults: congested (0.050, 0.020),
      overloaded (0.500, 0.250).
    * ``alpha``: EWMA weight of the newest sample, in (0, 1]; default 0.5.
      1 disables smoothing. With samples every ``interval``, a signal's
      memory is about ``interval / alpha``.
    * ``dwell_s``: seconds a level must go unheld before the monitor steps
      down from it; >= 0; default 2.0. It is also the least time spent in a
      state entered by stepping up.

    :raises ValueError: if a pair has ``enter <= exit``, a negative or
        non-finite value, a fraction above 1, if the pairs of one signal are
        out of order, or if ``alpha`` or ``dwell_s`` is out of range.
    """

    queue_congested: Thresholds | None = _QUEUE_CONGESTED
    queue_overloaded: Thresholds | None = _QUEUE_OVERLOADED
    credit_congested: Thresholds | None = _CREDIT_CONGESTED
    credit_overloaded: Thresholds | None = None
    lag_congested_s: Thresholds | None = _LAG_CONGESTED
    lag_overloaded_s: Thresholds | None = _LAG_OVERLOADED
    alpha: float = 0.5
    dwell_s: float = 2.0

    def __post_init__(self) -> None:
        for congested, overloaded, fraction in (
            ("queue_congested", "queue_overloaded", True),
            ("credit_congested", "credit_overloaded", True),
            ("lag_congested_s", "lag_overloaded_s", False),
        ):
            low = _check_thresholds(congested, getattr(self, congested), fraction=fraction)
            high = _check_thresholds(overloaded, getattr(self, overloaded), fraction=fraction)
            object.__setattr__(self, congested, low)
            object.__setattr__(self, overloaded, high)
            if (
                low is not None
                and high is not None
                and (high.enter < low.enter or high.exit < low.exit)
            ):
                raise ValueError(
                    f"{overloaded} {tuple(high)} must not be below {congested} {tuple(low)}"
                )
        alpha = self.alpha
        if not (isinstance(alpha, int | float) and not isinstance(alpha, bool) and 0 < alpha <= 1):
            raise ValueError(f"alpha must be a number in (0, 1], got {alpha!r}")
        dwell = self.dwell_s
        if not (
            isinstance(dwell, int | float)
            and not isinstance(dwell, bool)
            and math.isfinite(dwell)
            and dwell >= 0
        ):
            raise ValueError(f"dwell_s must be a finite number >= 0, got {dwell!r}")


class CongestionStatistics(NamedTuple):
    """A snapshot of a :class:`CongestionMonitor`."""

    #: the current state
    state: CongestionState
    #: state changes since construction
    transitions: int
    #: the ``now`` of the last state change (``None``: never changed)
    last_transition_at: float | None
    #: samples observed since construction
    samples: int
    #: smoothed queue fill, 0..1
    queue_fill: float
    #: smoothed credit starvation, 0..1
    credit_starved: float
    #: smoothed event-loop lag, in seconds
    loop_lag_s: float
    #: seconds spent congested, between samples
    seconds_congested: float
    #: seconds spent overloaded, between samples
    seconds_overloaded: float


def _reached(value: float, pair: Thresholds | None, *, enter: bool) -> bool:
    if pair is None:
        return False
    return value >= (pair.enter if enter else pair.exit)


class CongestionMonitor:
    """Normal / congested / overloaded, from smoothed samples, with hysteresis and dwell.

    Feed it with :meth:`observe` at a steady cadence (the runtime's
    ``LoadWatch`` does every 100 ms). It starts ``normal`` with every
    smoothed signal at 0.

    Guarantees (tested as properties):

    * No flapping: while every smoothed signal stays inside the band of the
      current state (below the next level's enter, at or above the current
      level's exit), the state does not change; a state entered by stepping
      up lasts at least ``dwell_s``.
    * Monotone: fed samples that are each at least as high, at the same
      times, a monitor is never in a lower state than another.
    * Recovery: once inputs fall to zero the state is ``normal`` after the
      smoothed signals decay below their exit thresholds plus ``dwell_s``.

    :param policy: thresholds, smoothing and dwell; default ``CongestionPolicy()``.
    """

    __slots__ = (
        "_credit",
        "_held_at",
        "_lag",
        "_last_now",
        "_last_transition_at",
        "_policy",
        "_queue",
        "_samples",
        "_seconds",
        "_state",
        "_transitions",
    )

    def __init__(self, policy: CongestionPolicy | None = None) -> None:
        self._policy = CongestionPolicy() if policy is None else policy
        self._state = CongestionState.NORMAL
        self._queue = 0.0
        self._credit = 0.0
        self._lag = 0.0
        # The last ``now`` at which congested (index 1) and overloaded (2) were held.
        self._held_at: list[float | None] = [None, None, None]
        self._last_now: float | None = None
        self._last_transition_at: float | None = None
        self._transitions = 0
        self._samples = 0
        self._seconds = [0.0, 0.0, 0.0]

    def __repr__(self) -> str:
        return f"CongestionMonitor(state={self._state.value!r}, samples={self._samples})"

    @property
    def state(self) -> CongestionState:
        """The state after the last sample."""
        return self._state

    @property
    def policy(self) -> CongestionPolicy:
        """The thresholds in force."""
        return self._policy

    @property
    def last_transition_at(self) -> float | None:
        """The ``now`` of the last state change, or ``None`` if it never changed."""
        return self._last_transition_at

    def observe(
        self,
        now: float,
        *,
        queue_fill: float = 0.0,
        credit_starved: float = 0.0,
        loop_lag_s: float = 0.0,
    ) -> CongestionState:
        """Take one sample at time ``now`` (monotonic seconds); return the new state.

        A ``now`` earlier than the previous one counts as the previous one.

        :raises ValueError: if ``queue_fill`` or ``credit_starved`` is outside
            0..1, or ``loop_lag_s`` is negative or not finite (NaN included);
            nothing changes then.
        """
        check_fraction("queue_fill", queue_fill)
        check_fraction("credit_starved", credit_starved)
        if not 0.0 <= loop_lag_s < math.inf:
            raise ValueError(f"loop_lag_s must be a finite number >= 0, got {loop_lag_s!r}")
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, got {now!r}")
        policy = self._policy
        last = self._last_now
        if last is not None:
            if now < last:
                now = last
            self._seconds[_LEVEL[self._state]] += now - last
        self._last_now = now
        self._samples += 1

        alpha = policy.alpha
        self._queue += alpha * (queue_fill - self._queue)
        self._credit += alpha * (credit_starved - self._credit)
        self._lag += alpha * (loop_lag_s - self._lag)

        level = _LEVEL[self._state]
        held_overloaded = self._holds(
            policy.queue_overloaded, policy.credit_overloaded, policy.lag_overloaded_s, level >= 2
        )
        held_congested = held_overloaded or self._holds(
            policy.queue_congested, policy.credit_congested, policy.lag_congested_s, level >= 1
        )
        held_at = self._held_at
        if held_overloaded:
            held_at[2] = now
        if held_congested:
            held_at[1] = now

        dwell = policy.dwell_s
        new_level = 0
        for candidate in (2, 1):
            at = held_at[candidate]
            if at is not None and (at == now or now - at < dwell):
                new_level = candidate
                break
        if new_level != level:
            self._state = _BY_LEVEL[new_level]
            self._transitions += 1
            self._last_transition_at = now
        return self._state

    def _holds(
        self,
        queue: Thresholds | None,
        credit: Thresholds | None,
        lag: Thresholds | None,
        inside: bool,
    ) -> bool:
        # Entered by reaching an enter threshold; held, once inside the
        # level, by staying at or above an exit threshold.
        enter = not inside
        return (
            _reached(self._queue, queue, enter=enter)
            or _reached(self._credit, credit, enter=enter)
            or _reached(self._lag, lag, enter=enter)
        )

    def statistics(self) -> CongestionStatistics:
        """A snapshot of the state, the smoothed signals and the counters."""
        return CongestionStatistics(
            state=self._state,
            transitions=self._transitions,
            last_transition_at=self._last_transition_at,
            samples=self._samples,
            queue_fill=self._queue,
            credit_starved=self._credit,
            loop_lag_s=self._lag,
            seconds_congested=self._seconds[1],
            seconds_overloaded=self._seconds[2],
        )


# -- shedding ---------------------------------------------------------------------


def _rank(reliability: str) -> int:
    # Reliability.parse raises the ValueError that shed documents.
    return Reliability.parse(reliability).rank


def shed(
    state: CongestionState | str,
    *,
    priority: int,
    reliability: str,
    accepted: bool = False,
    low_priority_below: int = 1,
) -> bool:
    """Whether work should be held back in ``state``: refused, throttled or dropped.

    The order, from first to go to never:

    1. ``overloaded``, new work (``accepted=False``): refused, whatever its
       priority and reliability (HTTP 503 + ``Retry-After``, WS ``overloaded``).
    2. ``overloaded``, accepted ``at_most_once`` work of low priority: shed
       (its chunks may be dropped). Use :func:`shed_order` to pick victims
       lowest priority first.
    3. ``congested``, new ``at_most_once`` work of low priority: throttled
       (admitted more slowly); everything else in ``congested`` passes.
    4. Never: accepted ``at_least_once`` and ``exactly_once`` streams. They
       are not shed in any state; under pressure their producers block on
       backpressure instead, so an accepted ``exactly_once`` stream never
       loses a chunk. Nothing is held back in ``normal``.

    :param state: a :class:`CongestionState` or its string value.
    :param priority: ``Headers.priority``; higher is more important.
    :param reliability: a :class:`~icefloe.core.reliability.Reliability` or its
        string value (``"at_most_once"``, ``"at_least_once"``, ``"exactly_once"``).
    :param accepted: ``True`` for work of a stream already admitted,
        ``False`` for a new stream (or new work) asking to start.
    :param low_priority_below: priorities below this are low; default 1, so
        the default priority 0 and below are low.
    :raises ValueError: if ``state`` or ``reliability`` is not a known value.
    """
    state = CongestionState(state)
    rank = _rank(reliability)
    if state is CongestionState.NORMAL:
        return False
    low = priority < low_priority_below
    if state is CongestionState.CONGESTED:
        return not accepted and rank == 0 and low
    if not accepted:
        return True
    return rank == 0 and low


def shed_order(*, priority: int, reliability: str) -> tuple[int, int]:
    """A sort key putting the streams to shed first at the front.

    ``at_most_once`` before ``at_least_once`` before ``exactly_once``, and
    within each, lower priority first: ``sorted(streams, key=...)``.

    :raises ValueError: if ``reliability`` is not a known value.
    """
    return (_rank(reliability), priority)
