"""The hub's limits, grouped in one value object.

Every buffer the hub keeps is bounded; this is the whole list, with what
happens at each limit. Byte counts are those of
:func:`~icefloe.hub.event.event_size` (payload, not Python overhead); an
event held by several buffers counts once in each.

===============================  ==========  =====================================================
limit                            default     at the limit
===============================  ==========  =====================================================
``max_topics``                   10,000      a publish to a new topic evicts the least recently
                                             used topic idle for ``topic_idle_s`` (its history
                                             goes); if none is, it is refused with
                                             ``StreamError("overloaded")``
``topic_idle_s``                 300 s       (how long without a publish makes a topic evictable)
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
``max_bytes_total``              256 MiB     while the hub holds this many bytes (buffers and
                                             histories), new subscribers and new topics are refused
                                             with ``StreamError("overloaded")``; what is admitted
                                             stays within its own limits
``max_event_bytes``              256 KiB     ``publish`` refused with ``ValueError``
``max_buffer``                   65,536      the largest ``buffer=`` a subscriber may ask for
``max_subscriber_bytes``         16 MiB      the largest ``max_bytes=`` a subscriber may ask for
===============================  ==========  =====================================================

A subscriber's own buffer (``subscribe(buffer=..., max_bytes=...,
overflow=...)``) is bounded in items and bytes; what happens when it is full
is its overflow policy (see :mod:`icefloe.core.ring`).

Worst case, the hub holds at most ``max_bytes_total`` plus, for the topics
and subscribers admitted just below it, their own limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["KIB", "MIB", "HubLimits"]

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class HubLimits:
    """Limits of one :class:`~icefloe.hub.Hub`. Counts are >= 1 unless noted."""

    #: topics (per tenant and name) held at once (None: no limit)
    max_topics: int | None = 10_000
    #: seconds without a publish after which a topic may be evicted (>= 0)
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
    #: the largest event accepted by ``publish``, in bytes
    max_event_bytes: int = 256 * KIB
    #: the largest per-subscriber ``buffer`` (items)
    max_buffer: int = 65_536
    #: the largest per-subscriber ``max_bytes``
    max_subscriber_bytes: int = 16 * MIB

    def __post_init__(self) -> None:
        for name in ("max_topics", "max_subscribers", "max_subscribers_per_tenant"):
            _check_int(name, getattr(self, name), 1, optional=True)
        _check_int("max_filter_cost_per_tenant", self.max_filter_cost_per_tenant, 1, optional=True)
        per_tenant, total = self.max_subscribers_per_tenant, self.max_subscribers
        if per_tenant is not None and total is not None and per_tenant >= total:
            # One tenant alone must not be able to take every slot.
            raise ValueError(
                f"max_subscribers_per_tenant ({per_tenant}) must be below max_subscribers "
                f"({total}), or None for no per-tenant limit"
            )
        _check_int("max_bytes_total", self.max_bytes_total, 1, optional=True)
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
