"""The broadcast hub: topics, pattern subscriptions, filters, bounded buffers, replay.

See :mod:`icefloe.hub.hub` for the concepts and ``docs/hub.md`` for the
guide. Everything here runs on asyncio; the pure parts (topic patterns,
the filter language, the bounded ring) live in :mod:`icefloe.core`.
"""

from __future__ import annotations

from icefloe.core.filters import Filter, FilterError, compile_filter
from icefloe.core.ring import Overflow
from icefloe.core.topics import Pattern, TopicError
from icefloe.hub.event import HubEvent
from icefloe.hub.hub import Hub, HubStatistics, TenantUsage
from icefloe.hub.limits import HubLimits
from icefloe.hub.relay import RelayResult, relay_reader, relay_stream
from icefloe.hub.subscriber import SubscriptionStatistics
from icefloe.hub.subscription import HubSubscription
from icefloe.hub.targets import SubscriberInfo, Target

__all__ = [
    "Filter",
    "FilterError",
    "Hub",
    "HubEvent",
    "HubLimits",
    "HubStatistics",
    "HubSubscription",
    "Overflow",
    "Pattern",
    "RelayResult",
    "SubscriberInfo",
    "SubscriptionStatistics",
    "Target",
    "TenantUsage",
    "TopicError",
    "compile_filter",
    "relay_reader",
    "relay_stream",
]
