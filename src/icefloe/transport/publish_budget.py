"""Each tenant's share of the event loop spent on its hub publishes.

A publish costs the loop the matching of its topic's subscribers against
their filters. The hub bounds the work of *one* publish (a tenant's
filter-cost budget, docs/hub.md) and the request rate bounds publishes per
second, but their product can still be most of a core: 1,000 publishes a
second at 2 ms each is two cores' worth. While one tenant's publishes held
the loop, every other tenant's requests (and ``/healthz``) waited.

:class:`PublishBudget` charges each tenant the measured loop time of its
publishes to a token bucket of seconds that refills at ``share`` seconds per
second (the fraction of one core a tenant's publishes may take) with a burst
of ``burst_s``. A publish is admitted while the tenant's bucket is not in
debt; its measured time is then charged, so one publish may overdraw the
bucket and the next waits until the debt is repaid. Refused publishes answer
``rate_limited`` (HTTP 429 with ``Retry-After``; a WebSocket ``error`` op)
and cost nothing. Publishes that reach no costly subscriber take microseconds
and never come near the budget.

Memory is bounded: at most ``max_tenants`` buckets are kept; past that the
one unused for longest is forgotten (it starts again with a full burst, which
is a bounded gift). The clock is injected; one event loop, no locks.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

from icefloe.core.checks import check_int, check_number
from icefloe.core.token_bucket import TokenBucket
from icefloe.core.wire_errors import ErrorCode
from icefloe.transport.errors import HttpError

__all__ = ["DEFAULT_BURST_S", "DEFAULT_SHARE", "PublishBudget", "PublishBudgetStatistics"]

#: the fraction of one core a tenant's publishes may take, on average
DEFAULT_SHARE = 0.25
#: the loop time a tenant's publishes may take at once after being idle
DEFAULT_BURST_S = 0.05


class PublishBudgetStatistics(NamedTuple):
    """A snapshot of a :class:`PublishBudget`."""

    #: tenants with a bucket now
    tenants: int
    #: publishes refused because their tenant owed loop time
    refused: int
    #: loop seconds charged in all
    charged_s: float


class PublishBudget:
    """Per-tenant loop time for hub publishes (see the module docstring).

    ``share=None`` turns it off: :meth:`check` always admits.
    """

    def __init__(
        self,
        share: float | None = DEFAULT_SHARE,
        burst_s: float = DEFAULT_BURST_S,
        *,
        max_tenants: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        if share is not None:
            check_number("share", share, 0, strict=True)
        check_number("burst_s", burst_s, 0, strict=True)
        check_int("max_tenants", max_tenants, 1)
        self.share = share
        self.burst_s = burst_s
        self._max = max_tenants
        self._clock = clock
        self._timer = timer
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._refused = 0
        self._charged = 0.0

    def check(self, tenant: str) -> float | None:
        """``None`` when ``tenant`` may publish now, else whole seconds to wait."""
        if self.share is None:
            return None
        bucket = self._buckets.get(tenant)
        if bucket is None or bucket.tokens >= 0:
            return None
        self._refused += 1
        return float(max(1, math.ceil(-bucket.tokens / self.share)))

    def charge(self, tenant: str, seconds: float) -> None:
        """Charge ``tenant`` the loop time one of its publishes took."""
        if self.share is None or seconds <= 0:
            return
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = TokenBucket(self.share, self.burst_s, self._clock)
            self._buckets[tenant] = bucket
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(tenant)
        bucket.charge(seconds)
        self._charged += seconds

    @contextmanager
    def metered(self, tenant: str | None) -> Iterator[None]:
        """Admit one publish of ``tenant`` and charge the time its body takes.

        One publish is charged at most ``burst_s`` (an HTTP publish may wait
        for a ``block`` subscriber's room: waiting is not loop time). ``None``
        (no tenants: authentication off) is neither checked nor charged.

        :raises HttpError: ``rate_limited``, with ``Retry-After``, while the
            tenant owes loop time.
        """
        if tenant is None or self.share is None:
            yield
            return
        retry = self.check(tenant)
        if retry is not None:
            wait = int(retry)
            raise HttpError(
                ErrorCode.RATE_LIMITED,
                f"tenant {tenant!r} has used its share of publishing time; retry after {wait} s",
                {"Retry-After": str(wait)},
            )
        started = self._timer()
        try:
            yield
        finally:
            self.charge(tenant, min(self._timer() - started, self.burst_s))

    def statistics(self) -> PublishBudgetStatistics:
        """Counters since the budget was made."""
        return PublishBudgetStatistics(len(self._buckets), self._refused, self._charged)
