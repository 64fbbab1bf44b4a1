"""Bandwidth budgets of a flow: bytes per second per stream and per tenant.

``Limits.stream_bytes_per_s`` and ``Limits.tenant_bytes_per_s`` are token
buckets of bytes (:class:`~icefloe.core.token_bucket.TokenBucket`, the one
rate limiter), one per stream and one per tenant (``Headers.tenant``), each
with a burst of ``rate * Limits.bytes_burst_s`` bytes (at least 1). A
producer releasing a chunk pays its size into both. Nothing is dropped: the
wait is backpressure, and it reaches back through a pipeline's inboxes.

A chunk is paid in one of two ways, both the bucket's own:

* waiting (:meth:`StreamRate.pay`, ``emit``): charged ahead through
  :func:`~icefloe.runtime.throttle.pace`, so a tenant's producers are served
  in the order they paid, and a chunk above the burst waits for its excess;
* not waiting (:meth:`StreamRate.ready`, then :meth:`StreamRate.charge`,
  ``emit_nowait``): only when both buckets hold the chunk now, a chunk above
  a burst needing a full bucket. Its excess is debt: the bucket refuses
  everything until its refill has paid the whole size, so a non-waiting
  caller is charged in full, ahead.

A bucket in debt, or one a waiting producer has charged ahead, refuses a
non-waiting caller: nobody jumps the queue.
"""

from __future__ import annotations

from collections.abc import Callable

from icefloe.core.token_bucket import TokenBucket
from icefloe.runtime.limits import Limits
from icefloe.runtime.throttle import pace

__all__ = ["Bandwidth", "StreamRate"]


class StreamRate:
    """The bytes/s buckets one stream's producers pay: its own and its tenant's.

    Either may be ``None`` (that limit is not set), not both.
    """

    __slots__ = ("own", "shared")

    def __init__(self, own: TokenBucket | None, shared: TokenBucket | None) -> None:
        #: the stream's bucket (``stream_bytes_per_s``)
        self.own = own
        #: its tenant's bucket, shared by the tenant's streams (``tenant_bytes_per_s``)
        self.shared = shared

    def ready(self, size: int) -> bool:
        """Whether both buckets would grant ``size`` bytes now (nothing is taken)."""
        own, shared = self.own, self.shared
        return (own is None or own.time_until(size) == 0.0) and (
            shared is None or shared.time_until(size) == 0.0
        )

    def charge(self, size: int) -> None:
        """Take ``size`` bytes from both buckets (after :meth:`ready` said yes)."""
        if self.own is not None:
            self.own.charge(size)
        if self.shared is not None:
            self.shared.charge(size)

    async def pay(self, size: int) -> float:
        """Take ``size`` bytes from both buckets, waiting for each in turn;
        the seconds waited."""
        waited = 0.0
        if self.own is not None:
            waited += await pace(self.own, size)
        if self.shared is not None:
            waited += await pace(self.shared, size)
        return waited


class Bandwidth:
    """Makes the bytes/s buckets of one flow from its :class:`Limits`.

    :param clock: monotonic seconds for the buckets (a fake one in tests).
    """

    __slots__ = ("_burst_s", "_clock", "_stream_rate", "_tenant_rate")

    def __init__(self, limits: Limits, clock: Callable[[], float]) -> None:
        self._stream_rate = limits.stream_bytes_per_s
        self._tenant_rate = limits.tenant_bytes_per_s
        self._burst_s = limits.bytes_burst_s
        self._clock = clock

    @property
    def limited(self) -> bool:
        """Whether a bytes/s limit is set at all."""
        return self._stream_rate is not None or self._tenant_rate is not None

    def _bucket(self, rate: float | None) -> TokenBucket | None:
        if rate is None:
            return None
        return TokenBucket(rate, max(1.0, rate * self._burst_s), self._clock)

    def tenant_bucket(self) -> TokenBucket | None:
        """A new tenant's bucket (``None``: no ``tenant_bytes_per_s``)."""
        return self._bucket(self._tenant_rate)

    def stream_rate(self, tenant_bucket: TokenBucket | None) -> StreamRate | None:
        """What a new stream of the tenant owning ``tenant_bucket`` pays
        (``None``: no bytes/s limit)."""
        if not self.limited:
            return None
        return StreamRate(self._bucket(self._stream_rate), tenant_bucket)

    @staticmethod
    def idle(bucket: TokenBucket | None) -> bool:
        """Whether forgetting ``bucket`` loses nothing: a fresh one is identical
        (it is full: no debt, and nobody charged ahead)."""
        return bucket is None or bucket.tokens >= bucket.burst
