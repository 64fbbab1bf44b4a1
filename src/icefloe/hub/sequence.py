"""How a topic follows a numbering made elsewhere: a pure decision.

With a durable store (:mod:`icefloe.hub.journal`) or a backplane
(:mod:`icefloe.backplane.topics`), a topic's offsets and epoch come from a
log, not from the hub that delivers them: the hub is told "this is event
``offset`` of epoch ``epoch``" and must fit it to what it holds.
:func:`align` says how, from the topic's (epoch, next offset) and the
event's; :meth:`~icefloe.hub.topic.TopicState.follow` applies the answer.

==============================  ===========  ========================================
the event                       step         the topic then
==============================  ===========  ========================================
same epoch, offset == next      ``APPEND``   appends it (the usual case)
same epoch, offset > next       ``GAP``      forgets its history (events between
                                             were missed: nobody may resume into
                                             them) and numbers on from ``offset``
same epoch, offset < next       ``STALE``    skips it (already delivered)
another epoch                   ``RESET``    forgets its history, takes the new
                                             epoch and numbers on from ``offset``
==============================  ===========  ========================================

After ``GAP`` or ``RESET`` a resume from an offset before ``offset`` is
``history_gone``, never a silent jump over missing events.
"""

from __future__ import annotations

import enum

__all__ = ["Step", "align"]


class Step(enum.Enum):
    """What a topic does with an event numbered elsewhere (see the module table)."""

    APPEND = "append"
    GAP = "gap"
    STALE = "stale"
    RESET = "reset"


def align(epoch: str, next_offset: int, event_epoch: str, offset: int) -> Step:
    """How a topic at (``epoch``, ``next_offset``) takes event (``event_epoch``, ``offset``)."""
    if event_epoch != epoch:
        return Step.RESET
    if offset == next_offset:
        return Step.APPEND
    return Step.GAP if offset > next_offset else Step.STALE
