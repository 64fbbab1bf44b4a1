"""Where the edge's hub publishes go when topics are numbered by a log.

Without ``--store`` (or with ``memory://``) and without ``--backplane``,
``POST /v1/topics/…`` and the WebSocket ``publish`` op publish into the
hub, which numbers each topic itself. With a durable store
(:class:`~icefloe.transport.topic_journal.TopicJournal`) or a backplane
(:class:`~icefloe.transport.backplane_edge.EdgeBackplane`), they go to a
:class:`TopicLog` instead: it gives each event its offset and epoch,
makes it durable (or shared), and only then publishes it into the hub
with :meth:`~icefloe.hub.Hub.publish_at`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["TopicLog"]


class TopicLog(Protocol):
    """Numbers, keeps and delivers hub events published at the edge."""

    async def publish(
        self, topic: str, data: Any, *, tenant: str, headers: Mapping[str, Any] | None = None
    ) -> tuple[str, int]:
        """Publish; returns the event's (epoch, offset) once the log holds it.

        :raises TopicError, ValueError, EncodeError, StreamError,
            ClosedResourceError: as ``Hub.publish``; ``StoreUnavailable``
            (``unavailable``): the log could not keep it.
        """
        ...

    def submit(
        self, topic: str, data: Any, *, tenant: str, headers: Mapping[str, Any] | None = None
    ) -> asyncio.Future[tuple[str, int]]:
        """Check and queue a publish now; the future is its (epoch, offset) once
        the log holds it (``POST /v1/topics``: the wait is not charged as the
        tenant's loop time).

        :raises WouldBlock: the log's outbox is full. Other errors as :meth:`publish`.
        """
        ...

    def publish_nowait(
        self, topic: str, data: Any, *, tenant: str, headers: Mapping[str, Any] | None = None
    ) -> None:
        """Publish without waiting (the WebSocket op, which has no reply).

        :raises WouldBlock: the log's outbox is full. Other errors as :meth:`publish`.
        """
        ...
