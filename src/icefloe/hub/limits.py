"""The hub's limits, grouped in one value object.

Every buffer the hub keeps is bounded; this is the whole list, with what
happens at each limit. Byte counts are those of
:func:`~icefloe.hub.event.event_size` (payload, not Python overhead); an
event held by several buffers counts once in each.

===============================  ==========  =====================================================
limit                            default     at the limit
===============================  ==========  =====================================================
``max_topics``                   10,000      a new topic first evicts idle topics (see below); if
                                             none is idle it is refused with
                                             ``StreamError("overloaded")``, but only for a tenant
                                             holding at least its fair share of topics
``max_topics_per_tenant``        1,000       a new topic of that tenant first evicts idle topics;
                                             if none of the tenant's is idle it is refused with
                                             ``StreamError("overloaded")`` (that tenant only)
``topic_idle_s``                 300 s       a topic without a publish for this long (and no
                                             publisher waiting) is evicted with its history
``history_per_topic``            256         the oldest retained event of the topic is forgotten;
                                             0 keeps no history (no resume)
``history_bytes_per_topic``      1 MiB       as above, in bytes
``max_subscribers``              10,000      ``subscribe`` refused with
                                             ``StreamError("overloaded")``
``max_subscribers_per_tenant``   1,000       ``subscribe`` refused with
                                             ``StreamError("limit_exceeded")``, naming the
                                             tenant's own limit; below ``max_subscribers``,
                                             so that one tenant cannot take every slot
``max_filter_cost_per_tenant``   40,000      ``subscribe`` with a filter that would take the
                                             summed cost of the tenant's distinct filters past
                                             it refused with ``StreamError("limit_exceeded")``;
                                             bounds the matching work of one publish (about
                                             2 ms, see :mod:`icefloe.core.subquota`)
``max_bytes_per_tenant``         32 MiB      a tenant's histories together hold at most this:
                                             past it, a publish forgets the oldest events of its
                                             own topic first; and while the tenant holds so much
                                             (histories and its subscribers' buffers) that not
                                             one more ``max_event_bytes`` fits, its new topics
                                             and subscribers are refused with
                                             ``StreamError("overloaded")`` once evicting idle
                                             topics does not free enough; other tenants are not
                                             affected
``max_bytes_total``              256 MiB     while the hub holds this many bytes, idle topics are
                                             evicted; if that is not enough, new topics and
                                             subscribers are refused, but only for a tenant
                                             holding at least its fair share of the bytes
``max_event_bytes``              256 KiB     ``publish`` refused with ``ValueError``
``max_buffer``                   65,536      the largest ``buffer=`` a subscriber may ask for
``max_subscriber_bytes``         16 MiB      the largest ``max_bytes=`` a subscriber may ask for
===============================  ==========  =====================================================

A subscriber's own buffer (``subscribe(buffer=..., max_bytes=...,
overflow=...)``) is bounded in items and bytes; what happens when it is full
is its overflow policy (see :mod:`icefloe.core.ring`).

**Tenant budgets.** A tenant's share is what it may hold whatever the
others do: ``max_bytes_per_tenant`` (1/8 of ``max_bytes_total``) and
``max_topics_per_tenant`` (1/10 of ``max_topics``). A share well below the
global total means no single tenant can reach a global limit: at least
eight tenants must each hold their whole share before the hub is full.
A tenant's histories are held to its byte budget on every publish that
grows them, in whatever order it made and filled its topics; its
subscribers' buffers are checked against it when a subscriber is admitted,
and are then bounded by their own ``max_bytes``.

**Fair share at a global limit.** Many tenants, each within its budget, can
still fill the hub together. Then the refusal falls on the tenants holding
the most: a tenant's *fair share* is the global limit divided by the
tenants holding topics or subscribers, and a tenant below its fair share is
admitted even past the global limit, while one at or above it is refused.
So a global limit is never a way for one tenant (or a few large ones) to
deny service to a small one. Past a global limit, admission can overshoot
it by at most the fair shares of the tenants below theirs, which together
are at most the limit itself: the hub holds at most twice ``max_topics``
topics and twice ``max_bytes_total`` bytes, plus, for what was admitted
just below a limit, its own limits.

**Idle topics.** A topic idle for ``topic_idle_s`` (no publish, no publisher
waiting) is evicted with its history, whether or not some pattern
subscriber would match it: a wildcard subscriber does not pin topics, and a
live one sees the next event of a re-created topic under a new ``epoch``
(see :class:`~icefloe.hub.event.HubEvent`). Eviction runs in least recently
published order and is bounded: at each admission (a new topic or
subscriber) and each :meth:`~icefloe.hub.Hub.statistics` call, at most
:data:`SWEEP_BATCH` idle topics are evicted, and as many as a budget needs
when one is reached. No publish scans the topics.

Refusal messages name only the caller's own budget (its tenant's limit or
fair share), never the hub's totals or another tenant's load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["KIB", "MIB", "SWEEP_BATCH", "HubLimits"]

KIB = 1024
MIB = 1024 * KIB
#: idle topics evicted at most by one routine sweep (admission, statistics)
SWEEP_BATCH = 64


@dataclass(frozen=True, slots=True)
class HubLimits:
    """Limits of one :class:`~icefloe.hub.Hub`. Counts are >= 1 unless noted."""

    #: topics (per tenant and name) held at once (None: no limit)
    max_topics: int | None = 10_000
    #: topics held at once by one tenant (None: no limit)
    max_topics_per_tenant: int | None = 1_000
    #: seconds without a publish after which a topic is evicted (>= 0)
    topic_idle_s: float = 300.0
    #: events each topic retains for resuming subscribers (>= 0; 0: none)
    history_per_topic: int = 256
    #: bytes each topic retains for resuming subscribers
    history_bytes_per_topic: int = MIB
    #: subscribers at once, all tenants (None: no limit)
    max_subscribers: int | None = 10_000
    #: subscribers at once per tenant (None: no limit); less than max_subscribers
    #: so that one tenant cannot take every slot
    max_subscribers_per_tenant: int | None = 1_000
    #: summed cost of a tenant's distinct filters (:attr:`Filter.cost` units,
    #: about 45 ns each; None: no limit): bounds the matching work of a publish
    max_filter_cost_per_tenant: int | None = 40_000
    #: bytes held in all buffers and histories past which admissions are refused (None: no limit)
    max_bytes_total: int | None = 256 * MIB
    #: bytes held for one tenant past which its admissions are refused (None: no limit)
    max_bytes_per_tenant: int | None = 32 * MIB
    #: the largest event accepted by ``publish``, in bytes
    max_event_bytes: int = 256 * KIB
    #: the largest per-subscriber ``buffer`` (items)
    max_buffer: int = 65_536
    #: the largest per-subscriber ``max_bytes``
    max_subscriber_bytes: int = 16 * MIB

    def __post_init__(self) -> None:
        for name in ("max_topics", "max_subscribers", "max_subscribers_per_tenant"):
            _check_int(name, getattr(self, name), 1, optional=True)
        _check_int("max_topics_per_tenant", self.max_topics_per_tenant, 1, optional=True)
        _check_int("max_filter_cost_per_tenant", self.max_filter_cost_per_tenant, 1, optional=True)
        per_tenant, total = self.max_subscribers_per_tenant, self.max_subscribers
        if per_tenant is not None and total is not None and per_tenant >= total:
            # One tenant alone must not be able to take every slot.
            raise ValueError(
                f"max_subscribers_per_tenant ({per_tenant}) must be below max_subscribers "
                f"({total}), or None for no per-tenant limit"
            )
        _check_int("max_bytes_total", self.max_bytes_total, 1, optional=True)
        _check_int("max_bytes_per_tenant", self.max_bytes_per_tenant, 1, optional=True)
        _check_int("history_per_topic", self.history_per_topic, 0)
        for name in ("history_bytes_per_topic", "max_event_bytes", "max_buffer"):
            _check_int(name, getattr(self, name), 1)
        _check_int("max_subscriber_bytes", self.max_subscriber_bytes, 1)
        idle = self.topic_idle_s
        if (
            not isinstance(idle, int | float)
            or isinstance(idle, bool)
            or not math.isfinite(idle)
            or idle < 0
        ):
            raise ValueError(f"topic_idle_s must be a finite number >= 0, got {idle!r}")
        # Any accepted event must fit an empty history and the largest subscriber buffer.
        if self.history_bytes_per_topic < self.max_event_bytes:
            raise ValueError(
                f"history_bytes_per_topic ({self.history_bytes_per_topic}) must be at least "
                f"max_event_bytes ({self.max_event_bytes})"
            )
        per_tenant = self.max_bytes_per_tenant
        if per_tenant is not None and per_tenant < self.history_bytes_per_topic:
            raise ValueError(
                f"max_bytes_per_tenant ({per_tenant}) must be at least "
                f"history_bytes_per_topic ({self.history_bytes_per_topic})"
            )
        if self.max_subscriber_bytes < self.max_event_bytes:
            raise ValueError(
                f"max_subscriber_bytes ({self.max_subscriber_bytes}) must be at least "
                f"max_event_bytes ({self.max_event_bytes})"
            )


def _check_int(name: str, value: object, minimum: int, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        extra = " or None" if optional else ""
        raise ValueError(f"{name} must be an int >= {minimum}{extra}, got {value!r}")
