"""Who receives an event: the publisher's ``to=`` target, then each subscriber's filter.

It exists apart from the subscriber's buffer (:mod:`icefloe.hub.subscriber`)
because selecting targets reads only what a subscriber is (its id, its
:class:`SubscriberInfo`, its filter), never its buffer; it runs both when
an event is published and when history is replayed to a resuming
subscriber (:func:`wants`), and the two must agree.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from icefloe.hub.event import HubEvent

if TYPE_CHECKING:
    from icefloe.hub.subscriber import SubscriberState

__all__ = [
    "NormalTarget",
    "SubscriberInfo",
    "Target",
    "check_target",
    "select_targets",
    "wants",
]


class SubscriberInfo(NamedTuple):
    """What a publisher's ``to=`` predicate may look at."""

    #: the subscriber's id (given to ``subscribe`` or generated)
    subscriber_id: str
    #: the subscriber's tenant
    tenant: str
    #: the pattern it subscribed with
    pattern: str
    #: its filter's source, if any
    filter: str | None
    #: the ``meta`` mapping given to ``subscribe`` (empty if none)
    meta: Mapping[str, Any]


#: ``to=`` of a publish: a collection of subscriber ids, or a predicate over subscribers
Target: TypeAlias = Collection[str] | Callable[[SubscriberInfo], bool]
#: a checked target: a frozenset of ids, or a predicate
NormalTarget: TypeAlias = frozenset[str] | Callable[[SubscriberInfo], bool]


def check_target(to: Target | None) -> NormalTarget | None:
    """``to`` as a frozenset of ids or a predicate.

    :raises ValueError: if it is neither a collection of str nor a callable
        (a str alone is refused: it would read as a set of characters).
    """
    if to is None or callable(to):
        return to
    if isinstance(to, str | bytes) or not isinstance(to, Collection):
        raise ValueError(f"to= must be a collection of subscriber ids or a predicate, got {to!r}")
    ids = frozenset(to)
    for sid in ids:
        if not isinstance(sid, str):
            raise ValueError(f"to= must hold subscriber ids (str), got {sid!r}")
    return ids


def wants(s: SubscriberState, event: HubEvent, target: NormalTarget | None) -> bool:
    """Whether ``s`` receives ``event`` published with ``target``: the target, then the filter."""
    if target is not None:
        if isinstance(target, frozenset):
            if s.subscriber_id not in target:
                return False
        elif not target(s.info):
            return False
    flt = s.filter
    return flt is None or flt(event)


def select_targets(
    subscribers: Collection[SubscriberState], event: HubEvent, target: NormalTarget | None
) -> list[SubscriberState]:
    """Those of ``subscribers`` that ``target`` and their filters select for ``event``.

    Each distinct filter is evaluated once: subscribers of a tenant with
    identical filters share one predicate (see :mod:`icefloe.core.subquota`),
    so the matching work is bounded by the cost of the tenant's distinct
    filters, plus one dict lookup per subscriber.
    """
    selected: list[SubscriberState] = []
    verdicts: dict[Callable[[Any], bool], bool] = {}
    for s in subscribers:
        if target is not None:
            if isinstance(target, frozenset):
                if s.subscriber_id not in target:
                    continue
            elif not target(s.info):
                continue
        flt = s.filter
        if flt is not None:
            verdict = verdicts.get(flt)
            if verdict is None:
                verdict = verdicts[flt] = flt(event)
            if not verdict:
                continue
        selected.append(s)
    return selected
