"""One tenant's routing state and budget, and one topic's offsets, history and route cache.

Internal to the hub. A topic's history is a :class:`History`, bounded by
``history_per_topic`` events and ``history_bytes_per_topic`` bytes: the
oldest retained event is forgotten first. An entry published with ``to=``
keeps its target, so a replay reaches only the subscribers the live event
did.

A topic numbers its events from 0 and draws a random :attr:`TopicState.epoch`
when it is created: offsets say nothing about other topics, and a topic
evicted and created again is told apart from the old one by its epoch.
A tenant's :class:`TenantState` counts the bytes of its histories and of its
subscribers' buffers, for its budget (see :mod:`icefloe.hub.limits`).

The subscribers a topic reaches are cached on the topic and recomputed from
the tenant's :class:`~icefloe.core.topics.TopicIndex` only after a
subscribe or unsubscribe of that tenant (a generation count), so a publish
costs no pattern matching at all in the steady state.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import os
from collections import deque
from collections.abc import Iterator, Mapping
from typing import TypeAlias

from icefloe.core.ring import ByteLedger
from icefloe.core.topics import TopicIndex, validate_topic
from icefloe.exceptions import ErrorCode, StreamError
from icefloe.hub.checks import check_name, check_range
from icefloe.hub.event import HubEvent
from icefloe.hub.limits import HubLimits
from icefloe.hub.sequence import Step, align
from icefloe.hub.subscriber import SubscriberState
from icefloe.hub.targets import NormalTarget, wants

__all__ = ["Entry", "History", "TenantState", "TopicState", "new_epoch", "replay"]

#: what a topic's history holds: the event, or the event and who it was for
#: (a tuple only for a publish with ``to=``, so the common case allocates nothing)
Entry: TypeAlias = HubEvent | tuple[HubEvent, NormalTarget]


class History:
    """A topic's last events, at most ``max_items`` of them and ``max_bytes`` bytes.

    The publish path (:mod:`icefloe.hub.publish`) appends, inline since it
    runs on every publish: the entry to ``entries`` and its size to
    ``sizes`` (whose ``maxlen`` pushes the oldest out of both once
    ``max_items`` are held), then, if that changed the bytes held,
    :meth:`grow` counts them (in ``held``, the hub's ``ledger`` and the
    tenant's) and evicts down to ``max_bytes``, and further while the
    tenant's histories together hold more than ``tenant_max`` bytes: a
    tenant past its budget keeps its topics' histories within it by
    forgetting the oldest events of the topic it publishes to (possibly
    all of them), whatever order it created and filled its topics in.
    """

    __slots__ = (
        "entries",
        "held",
        "ledger",
        "max_bytes",
        "max_items",
        "sizes",
        "tenant_ledger",
        "tenant_max",
    )

    def __init__(
        self,
        max_items: int,
        max_bytes: int,
        ledger: ByteLedger,
        tenant_ledger: ByteLedger,
        tenant_max: int | None = None,
    ) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.entries: deque[Entry] = deque(maxlen=max_items)
        self.sizes: deque[int] = deque(maxlen=max_items)
        #: bytes retained
        self.held = 0
        self.ledger = ledger
        self.tenant_ledger = tenant_ledger
        #: bytes the tenant's histories may hold together (inf: no limit)
        self.tenant_max: float = math.inf if tenant_max is None else tenant_max

    def __len__(self) -> int:
        return len(self.entries)

    def grow(self, grown: int) -> None:
        """Count ``grown`` more bytes (fewer if negative), then evict down to
        ``max_bytes`` and to what the tenant's budget leaves this topic."""
        held = self.held + grown
        tenant = self.tenant_ledger
        # What the tenant's other histories leave this one, if less than its own limit.
        room = self.tenant_max - tenant.held + self.held
        if room > self.max_bytes:
            room = self.max_bytes
        entries, sizes = self.entries, self.sizes
        while held > room and entries:
            entries.popleft()
            held -= sizes.popleft()
        change = held - self.held
        self.ledger.held += change
        tenant.held += change
        self.held = held

    def append(self, entry: Entry, size: int) -> None:
        """Retain ``entry`` of ``size`` bytes (the publish path does this inline)."""
        sizes = self.sizes
        grown = size - sizes[0] if len(sizes) == self.max_items else size
        sizes.append(size)
        self.entries.append(entry)
        if grown:
            self.grow(grown)

    def snapshot(self, start: int) -> list[Entry]:
        """The entries from position ``start`` (0 = oldest) on."""
        return list(itertools.islice(self.entries, start, None))

    def clear(self) -> None:
        """Forget everything retained."""
        self.entries.clear()
        self.sizes.clear()
        self.ledger.held -= self.held
        self.tenant_ledger.held -= self.held
        self.held = 0


class TenantState:
    """One tenant's subscribers, the index that routes its topics to them, its
    topics and the bytes held for it.

    :param buffers: the ledger its subscribers' buffers keep (new if None).
    """

    __slots__ = ("buffers", "generation", "histories", "ids", "index", "topics")

    def __init__(self, buffers: ByteLedger | None = None) -> None:
        self.index: TopicIndex[SubscriberState] = TopicIndex()
        self.ids: dict[str, SubscriberState] = {}
        # Bumped on every subscribe and unsubscribe: topic caches compare it.
        self.generation = 0
        #: this tenant's topics held by the hub
        self.topics = 0
        #: bytes held in its subscribers' buffers (kept by their rings)
        self.buffers = buffers if buffers is not None else ByteLedger()
        #: bytes held in its topics' histories (kept by the histories)
        self.histories = ByteLedger()

    def held(self) -> int:
        """Bytes held for this tenant: its histories and its subscribers' buffers."""
        return self.buffers.held + self.histories.held

    def empty(self) -> bool:
        return not self.ids and not self.topics


def new_epoch() -> str:
    """A fresh topic epoch: 12 hex digits (48 random bits from ``os.urandom``).

    Enough that a client resuming a topic re-created since it last read
    cannot mistake the new numbering for the old one. Random rather than
    counted, so that it says nothing about how many topics the hub made.
    """
    epoch = next(_epoch_pool, None)
    if epoch is None:
        # One system call per 256 topics, not per topic (it was a quarter
        # of the cost of creating one).
        _refill_epoch_pool()
        epoch = next(_epoch_pool)
    return epoch


_EPOCH_BATCH = 256
_epoch_pool: Iterator[str] = iter(())


def _refill_epoch_pool() -> None:
    global _epoch_pool
    digits = os.urandom(6 * _EPOCH_BATCH).hex()
    _epoch_pool = iter([digits[i : i + 12] for i in range(0, len(digits), 12)])


def _empty_epoch_pool() -> None:
    global _epoch_pool
    _epoch_pool = iter(())


# A forked child draws its own epochs, not its parent's next ones.
os.register_at_fork(after_in_child=_empty_epoch_pool)


class TopicState:
    """One topic of one tenant: offsets, history and the subscribers it reaches."""

    __slots__ = (
        "blocking",
        "checked",
        "epoch",
        "filtered",
        "generation",
        "history",
        "last_used",
        "lead",
        "name",
        "next_offset",
        "owner",
        "queue",
        "rest",
        "subscribers",
        "tenant",
    )

    def __init__(
        self,
        owner: TenantState,
        tenant: str,
        name: str,
        limits: HubLimits,
        now: float,
        ledger: ByteLedger,
    ) -> None:
        self.owner = owner
        self.tenant = tenant
        self.name = name
        #: the offset of the topic's next event; the first is 0
        self.next_offset = 0
        #: tells this topic apart from an earlier one of the same name (see new_epoch)
        self.epoch = new_epoch()
        self.history: History | None = (
            History(
                limits.history_per_topic,
                limits.history_bytes_per_topic,
                ledger,
                owner.histories,
                limits.max_bytes_per_tenant,
            )
            if limits.history_per_topic
            else None
        )
        # The subscribers this topic reaches, valid while generation matches.
        self.subscribers: tuple[SubscriberState, ...] = ()
        self.generation = -1
        #: whether one of them has overflow=block (publish must check room)
        self.blocking = False
        # The same subscribers split for an unfiltered at-most-once publish:
        # the ``block`` ones whose room is checked first, one ``block`` one
        # (the lead) offered the event next, since its refusal changes nothing
        # and so needs no separate check, then the rest.
        self.checked: tuple[SubscriberState, ...] = ()
        self.lead: SubscriberState | None = None
        self.rest: tuple[SubscriberState, ...] = ()
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
        blockers = [s for s in subscribers if s.blocking]
        self.blocking = bool(blockers)
        lead = self.lead = blockers.pop() if blockers else None
        self.checked = tuple(blockers)
        self.rest = tuple(s for s in subscribers if s is not lead)
        self.filtered = any(s.filter is not None for s in subscribers)
        self.generation = owner.generation

    def follow(self, epoch: str, offset: int) -> bool:
        """Fit an event numbered elsewhere, (``epoch``, ``offset``), to this topic
        (see :mod:`icefloe.hub.sequence`); False: it was delivered already."""
        step = align(self.epoch, self.next_offset, epoch, offset)
        if step is Step.APPEND:
            return True
        if step is Step.STALE:
            return False
        # A gap or a new epoch: what is retained no longer leads up to offset.
        if self.history is not None:
            self.history.clear()
        self.epoch = epoch
        self.next_offset = offset
        return True

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
        events = []
        for entry in self.history.snapshot(offset - first):
            if isinstance(entry, tuple):
                event, target = entry
                if wants(s, event, target):
                    events.append(event)
            elif wants(s, entry, None):
                events.append(entry)
        return events


def replay(
    topics: Mapping[tuple[str, str], TopicState],
    s: SubscriberState,
    from_offset: int | Mapping[str, int],
    epoch: str | Mapping[str, str] | None = None,
) -> list[HubEvent]:
    """What ``s`` replays from ``from_offset`` (an offset, or ``{topic: offset}``).

    ``epoch`` is the epoch the offsets were read under (a str with an int
    offset, ``{topic: epoch}`` with a mapping, for some or all of its
    topics); a topic whose epoch differs was re-created since, and its
    offsets mean something else.

    :raises TopicError: a topic named is invalid.
    :raises ValueError: a bad offset or epoch, a topic the pattern does not
        match, or an int offset for a wildcard pattern.
    :raises StreamError: ``history_gone``: a resume point is not retained,
        or its topic's epoch has changed.
    """
    pattern = s.pattern
    if isinstance(from_offset, Mapping):
        starts = dict(from_offset)
        for name, offset in starts.items():
            validate_topic(name)
            if not pattern.matches(name):
                raise ValueError(
                    f"from_offset names topic {name!r}, which pattern "
                    f"{pattern.source!r} does not match"
                )
            check_range("from_offset", offset, 0, None)
        epochs = _epochs(epoch, starts)
    else:
        check_range("from_offset", from_offset, 0, None)
        if not pattern.is_exact:
            raise ValueError(
                f"an int from_offset needs an exact topic, not the pattern "
                f"{pattern.source!r}; pass {{topic: offset}} instead"
            )
        starts = {pattern.source: from_offset}
        if epoch is not None and not isinstance(epoch, str):
            raise ValueError(f"an int from_offset takes a str epoch, got {epoch!r}")
        epochs = _epochs(None if epoch is None else {pattern.source: epoch}, starts)
    runs = [_retained(topics, s, name, offset, epochs.get(name)) for name, offset in starts.items()]
    if len(runs) == 1:
        return runs[0]
    # Topics are interleaved in publish order, as a live subscriber saw them.
    return list(heapq.merge(*runs, key=lambda event: event.ts))


def _epochs(epoch: str | Mapping[str, str] | None, starts: Mapping[str, int]) -> dict[str, str]:
    if epoch is None:
        return {}
    if not isinstance(epoch, Mapping):
        raise ValueError(f"a {{topic: offset}} from_offset takes {{topic: epoch}}, got {epoch!r}")
    epochs = dict(epoch)
    for name, value in epochs.items():
        if name not in starts:
            raise ValueError(f"epoch names topic {name!r}, which from_offset does not")
        check_name("epoch", value)
    return epochs


def _retained(
    topics: Mapping[tuple[str, str], TopicState],
    s: SubscriberState,
    name: str,
    offset: int,
    epoch: str | None,
) -> list[HubEvent]:
    state = topics.get((s.tenant, name))
    if state is None:
        raise StreamError(
            ErrorCode.HISTORY_GONE,
            f"topic {name!r} holds no history to resume from offset {offset}",
            name,
        )
    if epoch is not None and epoch != state.epoch:
        raise StreamError(
            ErrorCode.HISTORY_GONE,
            f"topic {name!r} was reset: epoch {epoch!r} is gone, its offsets now count "
            f"from 0 in epoch {state.epoch!r}",
            name,
        )
    return state.retained(s, offset)
