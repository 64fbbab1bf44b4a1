"""One tenant's routing state, and one topic's offsets, history and route cache.

Internal to the hub. A topic's history is a :class:`~icefloe.core.ring.Ring`
with policy ``drop_oldest``, bounded by ``history_per_topic`` events and
``history_bytes_per_topic`` bytes: the oldest retained event is forgotten
first. Each entry keeps the publish's ``to=`` target, so a replay reaches
only the subscribers the live event did.

The subscribers a topic reaches are cached on the topic and recomputed from
the tenant's :class:`~icefloe.core.topics.TopicIndex` only after a
subscribe or unsubscribe of that tenant (a generation count), so a publish
costs no pattern matching at all in the steady state.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TypeAlias

from icefloe.core.ring import ByteLedger, Ring
from icefloe.core.topics import TopicIndex
from icefloe.exceptions import ErrorCode, StreamError
from icefloe.hub.event import HubEvent
from icefloe.hub.limits import HubLimits
from icefloe.hub.subscription import NormalTarget, SubscriberState, wants

__all__ = ["Entry", "TenantState", "TopicState"]

#: what a topic's history holds: the event and who it was for
Entry: TypeAlias = tuple[HubEvent, NormalTarget | None]


class TenantState:
    """One tenant's subscribers and the index that routes its topics to them."""

    __slots__ = ("generation", "ids", "index", "topics")

    def __init__(self) -> None:
        self.index: TopicIndex[SubscriberState] = TopicIndex()
        self.ids: dict[str, SubscriberState] = {}
        # Bumped on every subscribe and unsubscribe: topic caches compare it.
        self.generation = 0
        #: topics of this tenant held by the hub
        self.topics = 0

    def empty(self) -> bool:
        return not self.ids and not self.topics


class TopicState:
    """One topic of one tenant: offsets, history and the subscribers it reaches."""

    __slots__ = (
        "blocking",
        "filtered",
        "generation",
        "history",
        "last_used",
        "name",
        "next_offset",
        "owner",
        "queue",
        "subscribers",
        "tenant",
    )

    def __init__(
        self,
        owner: TenantState,
        tenant: str,
        name: str,
        first_offset: int,
        limits: HubLimits,
        now: float,
        ledger: ByteLedger,
    ) -> None:
        self.owner = owner
        self.tenant = tenant
        self.name = name
        self.next_offset = first_offset
        self.history: Ring[Entry] | None = (
            Ring(limits.history_per_topic, limits.history_bytes_per_topic, ledger=ledger)
            if limits.history_per_topic
            else None
        )
        # The subscribers this topic reaches, valid while generation matches.
        self.subscribers: tuple[SubscriberState, ...] = ()
        self.generation = -1
        #: whether one of them has overflow=block (publish must check room)
        self.blocking = False
        #: whether one of them has a filter (publish must evaluate it)
        self.filtered = False
        # Publishers waiting their turn; the head is the one waiting for room.
        self.queue: deque[asyncio.Future[None]] = deque()
        self.last_used = now

    def route(self) -> None:
        """Refresh the cached subscribers if the tenant's subscriptions changed."""
        owner = self.owner
        if self.generation == owner.generation:
            return
        subscribers = tuple(owner.index.match(self.name))
        self.subscribers = subscribers
        self.blocking = any(s.blocking for s in subscribers)
        self.filtered = any(s.filter is not None for s in subscribers)
        self.generation = owner.generation

    def first_retained(self) -> int:
        """The oldest offset a subscriber can resume from."""
        return self.next_offset - (len(self.history) if self.history is not None else 0)

    def retained(self, s: SubscriberState, offset: int) -> list[HubEvent]:
        """The retained events from ``offset`` on that ``s`` would have received.

        :raises StreamError: ``history_gone``, if ``offset`` is older than the
            oldest retained event or ahead of the topic.
        """
        first = self.first_retained()
        if offset < first:
            raise StreamError(
                ErrorCode.HISTORY_GONE,
                f"offset {offset} of topic {self.name!r} is no longer retained; "
                f"the oldest retained is {first}",
                self.name,
            )
        if offset > self.next_offset:
            raise StreamError(
                ErrorCode.HISTORY_GONE,
                f"offset {offset} is ahead of topic {self.name!r} (next offset "
                f"{self.next_offset}); it may come from an earlier hub",
                self.name,
            )
        if self.history is None:
            return []
        return [
            event
            for event, target in self.history.snapshot(offset - first)
            if wants(s, event, target)
        ]
