"""A circuit breaker: stop calling a dependency that keeps failing, probe it later.

Sans-I/O, clock injected: the caller asks :meth:`CircuitBreaker.allow`
before a call and reports its outcome with :meth:`~CircuitBreaker.record_success`,
:meth:`~CircuitBreaker.record_failure` or, when the call ended with no verdict
(it was cancelled), :meth:`~CircuitBreaker.release`. The breaker never waits
and never reads the time itself.

=========  =====================================  ================================
state      allow()                                leaves it when
=========  =====================================  ================================
CLOSED     always                                 ``failure_threshold`` failures in
                                                  a row: OPEN
OPEN       never (fail fast; ``retry_after()``    ``reset_after_s`` passed: HALF_OPEN
           says for how long)
HALF_OPEN  up to ``probes`` calls at once         ``probes`` successes: CLOSED;
                                                  one failure: OPEN again
=========  =====================================  ================================

A success in CLOSED resets the failure count. Outcomes reported while OPEN
(calls allowed before it opened, finishing late) change nothing: the breaker
waits for its own probes.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["BreakerPolicy", "BreakerState", "BreakerStatistics", "CircuitBreaker"]


class BreakerState(enum.IntEnum):
    """Where a :class:`CircuitBreaker` is."""

    #: calls go through; failures are counted
    CLOSED = 0
    #: calls fail fast until ``reset_after_s`` passed
    OPEN = 1
    #: a few probe calls go through; their outcome closes or reopens it
    HALF_OPEN = 2


class BreakerPolicy(NamedTuple):
    """How quickly a :class:`CircuitBreaker` opens and how it recovers."""

    #: consecutive failures that open the breaker
    failure_threshold: int = 5
    #: seconds it stays open before it lets probes through
    reset_after_s: float = 5.0
    #: probe calls allowed at once while half-open; this many successes close it
    probes: int = 1

    def check(self) -> BreakerPolicy:
        """This policy, validated.

        :raises ValueError: naming the field out of range.
        """
        if self.failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {self.failure_threshold}")
        if not (math.isfinite(self.reset_after_s) and self.reset_after_s > 0):
            raise ValueError(f"reset_after_s must be a finite number > 0, got {self.reset_after_s}")
        if self.probes < 1:
            raise ValueError(f"probes must be >= 1, got {self.probes}")
        return self


class BreakerStatistics(NamedTuple):
    """A snapshot of a :class:`CircuitBreaker`."""

    #: the state at the time of the snapshot
    state: BreakerState
    #: failures in a row (while closed), or since it opened
    consecutive_failures: int
    #: how many times it opened
    opened: int
    #: calls refused by :meth:`CircuitBreaker.allow`
    rejected: int
    #: the last failure's description (empty when none)
    last_failure: str


class CircuitBreaker:
    """Closed, open, half-open, driven by reported outcomes and an injected clock.

    :param clock: monotonic seconds (e.g. ``time.monotonic``).
    :raises ValueError: if the policy is out of range.
    """

    __slots__ = (
        "_clock",
        "_failures",
        "_in_flight",
        "_last_failure",
        "_opened",
        "_opened_at",
        "_policy",
        "_rejected",
        "_state",
        "_successes",
    )

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float]) -> None:
        self._policy = policy.check()
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened = 0
        self._opened_at = 0.0
        self._rejected = 0
        self._in_flight = 0  # probes granted while half-open, not yet reported
        self._successes = 0  # probe successes while half-open
        self._last_failure = ""

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state.name}, failures={self._failures})"

    @property
    def policy(self) -> BreakerPolicy:
        """The policy it was made with."""
        return self._policy

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker past ``reset_after_s`` reads HALF_OPEN)."""
        self._tick()
        return self._state

    def allow(self) -> bool:
        """May a call go ahead now? A True while half-open reserves a probe:
        report its outcome (or :meth:`release` it)."""
        self._tick()
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.HALF_OPEN and self._in_flight < self._policy.probes:
            self._in_flight += 1
            return True
        self._rejected += 1
        return False

    def retry_after(self) -> float:
        """Seconds until :meth:`allow` may say yes again (0.0 when it may now)."""
        self._tick()
        if self._state is BreakerState.OPEN:
            left = self._opened_at + self._policy.reset_after_s - self._clock()
            return min(self._policy.reset_after_s, max(0.0, left))  # float rounding
        return 0.0

    def record_success(self) -> None:
        """A call allowed by :meth:`allow` succeeded."""
        self._tick()
        if self._state is BreakerState.CLOSED:
            self._failures = 0
        elif self._state is BreakerState.HALF_OPEN:
            self._in_flight = max(0, self._in_flight - 1)
            self._successes += 1
            if self._successes >= self._policy.probes:
                self._state = BreakerState.CLOSED
                self._failures = 0

    def record_failure(self, reason: str = "") -> None:
        """A call allowed by :meth:`allow` failed (``reason`` is kept for messages)."""
        self._tick()
        self._last_failure = reason
        if self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self._policy.failure_threshold:
                self._open()
        elif self._state is BreakerState.HALF_OPEN:
            self._failures += 1
            self._open()

    def release(self) -> None:
        """A call allowed by :meth:`allow` ended with no verdict (cancelled)."""
        self._tick()
        if self._state is BreakerState.HALF_OPEN:
            self._in_flight = max(0, self._in_flight - 1)

    def statistics(self) -> BreakerStatistics:
        """A snapshot of its state and counters."""
        return BreakerStatistics(
            self.state, self._failures, self._opened, self._rejected, self._last_failure
        )

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened += 1
        self._opened_at = self._clock()
        self._in_flight = 0
        self._successes = 0

    def _tick(self) -> None:
        if (
            self._state is BreakerState.OPEN
            and self._clock() >= self._opened_at + self._policy.reset_after_s
        ):
            self._state = BreakerState.HALF_OPEN
            self._in_flight = 0
            self._successes = 0
