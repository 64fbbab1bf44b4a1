"""Where a Pub/Sub message is: :class:`PubSubPosition`, the ``Inbound.position`` of
both Pub/Sub sources (pull, :mod:`icefloe.connectors.pubsub`; push,
:mod:`icefloe.connectors.pubsub_push`). No client library is needed for it."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["PubSubPosition"]


class PubSubPosition(NamedTuple):
    """A message's id, and the ack id of this delivery of it.

    A redelivered message keeps its ``message_id`` and gets a new ``ack_id``
    (pull: Pub/Sub's; push: a local one, since a push is acked by the HTTP answer).
    """

    message_id: str
    ack_id: str
