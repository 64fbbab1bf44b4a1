"""What a flow does under load: refuse, throttle, shed (the table of docs/qos.md).

:class:`LoadShedder` applies :func:`~icefloe.core.congestion.shed` to a flow,
driven by its :class:`~icefloe.runtime.loadwatch.LoadWatch`:

* ``overloaded``: new streams are refused (``overloaded``), and on every probe
  at which the overload is still *held* (a smoothed signal at or above its
  overloaded exit threshold) up to ``shed_per_probe`` accepted low-priority
  ``at_most_once`` runs are ended with ``overloaded``, victims first by
  :func:`~icefloe.core.congestion.shed_order` and then youngest first. Once
  the pressure falls, shedding stops at once, even while the monitor's dwell
  keeps the state ``overloaded``. ``at_least_once`` and ``exactly_once``
  streams are never candidates, and nothing is shed unless some stream that
  may not be shed is running: shedding exists to protect it.
* ``congested``: new low-priority ``at_most_once`` runs are admitted at once
  but *start* later, spaced by an :class:`~icefloe.runtime.throttle.AdmissionThrottle`
  whose rate shrinks on every congested probe and grows back after.

Both are *fair between tenants* (:class:`~icefloe.core.fairshare.TenantShares`):
the congestion state is the flow's, but the refusal falls on the tenants
causing the load. While ``congested`` or ``overloaded``, a new stream of a
tenant *below* its fair share of the running streams (an equal split among
the tenants running something, itself included) is admitted at once, with
no throttle slot; only tenants at or over their share are throttled
(``congested``) or refused (``overloaded``). A burst of pipelined starts
from tenant A therefore throttles and then refuses A, while a quiet tenant B
still starts; with one tenant, it is A's share that is full, as before.
Shedding picks its victims among the tenants over their share first.

Everything runs in the watch's probe (a loop timer) or at admission: no task.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from icefloe.core.congestion import (
    CongestionPolicy,
    CongestionState,
    CongestionStatistics,
    shed,
    shed_order,
)
from icefloe.core.messages import Headers
from icefloe.exceptions import ErrorCode
from icefloe.runtime.loadwatch import LoadWatch
from icefloe.runtime.throttle import AdmissionThrottle, SheddingPolicy, ThrottleStatistics

if TYPE_CHECKING:
    from icefloe.runtime.registry import StreamRegistry
    from icefloe.runtime.stream import StreamState

__all__ = ["LoadShedder", "ShedStatistics"]


class ShedStatistics(NamedTuple):
    """What load shedding did (``flow.stats().shedding``)."""

    #: the congestion state now
    state: CongestionState
    #: new streams refused because the flow was overloaded (or a throttled start
    #: would have waited longer than ``max_delay_s``)
    refused: int
    #: accepted low-priority ``at_most_once`` streams ended with ``overloaded``
    shed_accepted: int
    #: accepted streams that could be shed now
    candidates: int
    #: the congested-admission throttle
    throttle: ThrottleStatistics
    #: new streams admitted under load because their tenant was below its fair share
    fair_admitted: int = 0


class LoadShedder:
    """The flow's admission and shedding decisions under load."""

    def __init__(
        self,
        watch: LoadWatch,
        registry: StreamRegistry,
        policy: SheddingPolicy,
        stop_run: Callable[[str], object],
    ) -> None:
        self.watch = watch
        self.policy = policy
        self.throttle = AdmissionThrottle(policy)
        self._registry = registry
        self._stop_run = stop_run
        # Sheddable accepted streams: id -> (victim order key, state). Pruned
        # on every probe, so it holds at most the running streams plus what
        # ended within one probe interval.
        self._candidates: dict[str, tuple[tuple[int, int, int], StreamState]] = {}
        self.refused = 0
        self.shed_accepted = 0
        self.fair_admitted = 0
        # The delay of the slot the last start_delay reserved (None: none), so
        # a start refused after it can give the slot back (refund).
        self._reserved: float | None = None
        watch.add_probe_listener(self._on_probe)

    # -- admission ---------------------------------------------------------------

    def refusal(self, headers: Headers, reliability: str) -> str | None:
        """Why a new stream is refused under the current load (None: admitted).

        Only ``overloaded`` refuses, and only while a stream runs: with none,
        the pressure is not the flow's and refusing work would not relieve it.
        Even then, a tenant below its fair share is admitted: the refusal
        falls on the tenants holding more than theirs.
        """
        state = self.watch.state
        # shed() refuses every new stream when overloaded, whatever its class.
        if state is not CongestionState.OVERLOADED or not self._registry.active:
            return None
        if not self._registry.shares.over_share(headers.tenant):
            self.fair_admitted += 1
            return None
        self.refused += 1
        return f"the flow is {state.value}; retry later"

    def start_delay(self, headers: Headers, reliability: str, now: float) -> float | None:
        """Seconds before a run admitted now may start (0.0: at once), or None:
        refused, because the throttled start would wait longer than ``max_delay_s``."""
        self._reserved = None
        state = self.watch.state
        if state is not CongestionState.CONGESTED or not shed(
            state, priority=headers.priority, reliability=reliability
        ):
            return 0.0
        if not self._registry.shares.over_share(headers.tenant):
            # A tenant below its fair share is not the cause: it neither waits
            # nor takes a slot that would push the busy tenant's runs back.
            self.fair_admitted += 1
            return 0.0
        delay = self.throttle.reserve(now)
        if delay is None:
            self.refused += 1
        else:
            self._reserved = delay
        return delay

    def refund(self) -> None:
        """The run of the last :meth:`start_delay` was refused after all (a limit,
        a budget): give its throttle slot back so later runs are not pushed back."""
        if self._reserved is not None:
            self.throttle.refund(self._reserved)
            self._reserved = None

    def track(self, state: StreamState, reliability: str) -> None:
        """Remember an admitted stream if it may be shed when overloaded."""
        priority = state.headers.priority
        if shed(
            CongestionState.OVERLOADED, priority=priority, reliability=reliability, accepted=True
        ):
            rank, prio = shed_order(priority=priority, reliability=reliability)
            # Youngest first among equals: it has had the least work put in.
            self._candidates[state.stream_id] = ((rank, prio, -state.created_ns), state)

    # -- probes ------------------------------------------------------------------

    def _on_probe(self, state: CongestionState) -> None:
        self.throttle.on_probe(state.level >= CongestionState.CONGESTED.level)
        candidates = self._candidates
        for sid in [sid for sid, (_, s) in candidates.items() if s.phase]:
            del candidates[sid]
        # Shedding protects the streams that may not be shed: with only
        # sheddable work running (one fast pipeline filling its inboxes, say)
        # there is nobody to protect, and refusing new work is enough.
        protected = self._registry.active - len(candidates)
        if (
            state is CongestionState.OVERLOADED
            and self.policy.shed_per_probe
            and candidates
            and protected > 0
            and _overload_held(self.watch.statistics().congestion, self.watch.policy)
        ):
            self._shed(self.policy.shed_per_probe)

    def _shed(self, count: int) -> None:
        shares = self._registry.shares
        # Tenants over their fair share lose runs first, then the usual order.
        victims = heapq.nsmallest(
            count,
            self._candidates.values(),
            key=lambda item: (not shares.over_share(item[1].headers.tenant), item[0]),
        )
        for _, victim in victims:
            del self._candidates[victim.stream_id]
            trace = victim.trace_id
            # The whole run goes: its streams end, its invocations stop.
            self._registry.cancel_trace(
                trace, ErrorCode.OVERLOADED, "shed: the flow is overloaded; retry later"
            )
            self._stop_run(trace)
            self.shed_accepted += 1

    def statistics(self) -> ShedStatistics:
        return ShedStatistics(
            self.watch.state,
            self.refused,
            self.shed_accepted,
            sum(1 for _, s in self._candidates.values() if not s.phase),
            self.throttle.statistics(),
            self.fair_admitted,
        )


def _overload_held(stats: CongestionStatistics, policy: CongestionPolicy) -> bool:
    """Whether some smoothed signal is still at or above its overloaded exit threshold."""
    for value, pair in (
        (stats.queue_fill, policy.queue_overloaded),
        (stats.credit_starved, policy.credit_overloaded),
        (stats.loop_lag_s, policy.lag_overloaded_s),
    ):
        if pair is not None and value >= pair.exit:
            return True
    return False
