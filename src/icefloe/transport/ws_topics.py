"""The hub side of one ``/v1/ws`` connection: ``publish``, ``sub_topic``, ``unsub_topic``.

Each topic subscription has a pump task that sends its events as ``event``
ops, paced like stream chunks but without credit: the hub's per-subscriber
buffer and its ``drop_oldest`` policy bound a slow client. A subscription
opened with a ``sub_id`` can be ended alone by ``unsub_topic``; the others
last as long as the connection. A connection holds at most ``max_subs``
of them (``WsSettings.max_topic_subs``); the hub's own limits per tenant
apply beyond that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from icefloe.core.codec import Format
from icefloe.core.filters import FilterError
from icefloe.core.ops import Publish, SubTopic
from icefloe.core.topics import TopicError
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import ClosedResourceError, EncodeError, StreamError, WouldBlock
from icefloe.hub import Hub, HubSubscription
from icefloe.transport.auth import Principal
from icefloe.transport.errors import HttpError
from icefloe.transport.principals import ANY_TENANT
from icefloe.transport.publish_budget import PublishBudget
from icefloe.transport.topic_log import TopicLog
from icefloe.transport.ws_sender import WsSender

__all__ = ["WsTopics"]


class WsTopics:
    """The topic subscriptions of one connection, each with its pump task.

    :param hub: the hub of ``publish`` and ``sub_topic``.
    :param error: ``await error(code, message)`` sends an ``error`` op (the
        end of a subscription the hub ended abnormally).
    :param max_subs: topic subscriptions the connection may hold at once.
    :param log: numbers and keeps the events published here (a durable
        store or the backplane; None: the hub numbers them).
    """

    def __init__(
        self,
        hub: Hub,
        principal: Principal,
        fmt: Format,
        sender: WsSender,
        error: Callable[[ErrorCode, str], Awaitable[None]],
        *,
        max_subs: int,
        budget: PublishBudget,
        log: TopicLog | None = None,
    ) -> None:
        self._hub = hub
        #: numbers and keeps each event published here (issues 11, 12)
        self._log = log
        self._budget = budget
        self._max_subs = max_subs
        self._principal = principal
        self._fmt = fmt
        self._sender = sender
        self._error = error
        # Hub subscriptions by subscriber id, each with its pump task.
        self._subs: dict[str, tuple[HubSubscription, asyncio.Task[None]]] = {}
        # The client's sub_id -> the hub subscriber id.
        self._names: dict[str, str] = {}
        # Subscriber ids whose pump must stop at its next turn (unsub_topic).
        self._stopping: set[str] = set()

    def __len__(self) -> int:
        """Topic subscriptions open on the connection."""
        return len(self._subs)

    def publish(self, op: Publish) -> None:
        """Publish ``op.data`` on ``op.topic`` under the principal's tenant."""
        tenant = self._principal.tenant
        try:
            with self._budget.metered(None if tenant == ANY_TENANT else tenant):
                if self._log is not None:
                    self._log.publish_nowait(op.topic, op.data, tenant=tenant)
                else:
                    self._hub.publish_nowait(op.topic, op.data, tenant=tenant)
        except (TopicError, ValueError, EncodeError) as exc:
            raise HttpError(ErrorCode.BAD_REQUEST, str(exc)) from None
        except WouldBlock as exc:
            raise HttpError(ErrorCode.OVERLOADED, str(exc)) from None
        except StreamError as exc:
            raise HttpError(exc.code, exc.message) from None

    def subscribe(self, op: SubTopic) -> None:
        """Open a hub subscription and its pump; the caller checked scope and room."""
        if op.sub_id is not None and op.sub_id in self._names:
            raise HttpError(ErrorCode.CONFLICT, "this connection already uses that sub_id")
        if len(self._subs) >= self._max_subs:
            raise HttpError(
                ErrorCode.LIMIT_EXCEEDED,
                f"this connection holds its limit of {self._max_subs} topic subscriptions "
                "(max_topic_subs); unsub_topic one first",
            )
        try:
            sub = self._hub.subscribe(
                op.pattern,
                tenant=self._principal.tenant,
                filter=op.filter,
                from_offset=op.from_offset,
                epoch=op.epoch,
            )
        except FilterError as exc:
            raise HttpError(ErrorCode.BAD_REQUEST, f"bad filter: {exc}") from None
        except (TopicError, ValueError) as exc:
            raise HttpError(ErrorCode.BAD_REQUEST, str(exc)) from None
        except StreamError as exc:
            raise HttpError(exc.code, exc.message) from None
        task = asyncio.ensure_future(self._pump(sub, op.sub_id))
        self._subs[sub.subscriber_id] = (sub, task)
        if op.sub_id is not None:
            self._names[op.sub_id] = sub.subscriber_id

    async def unsubscribe(self, sub_id: str) -> None:
        """End the subscription named ``sub_id``: its pump finishes the run it
        is writing, if any, and sends no more events.

        :raises HttpError: ``not_found`` if no open subscription has that name.
        """
        key = self._names.pop(sub_id, None)
        entry = None if key is None else self._subs.get(key)
        if key is None or entry is None:
            raise HttpError(ErrorCode.NOT_FOUND, "no topic subscription with that sub_id")
        sub, task = entry
        # Not task.cancel(): a write cut short would desynchronise a zstd stream.
        self._stopping.add(key)
        sub.interrupt()
        await asyncio.wait([task])
        self._stopping.discard(key)

    async def _pump(self, sub: HubSubscription, sub_id: str | None) -> None:
        """Send the subscription's events as ``event`` ops until it ends or is stopped."""
        text = self._fmt is Format.JSON
        sender = self._sender
        key = sub.subscriber_id
        stopping = self._stopping
        try:
            while key not in stopping:
                # Runs as the writer's: a paced run never holds the write lock.
                frames: list[bytes | str] = []
                left = sender.run_bytes
                while left > 0 and sub.held():
                    data = sub.receive_nowait().encoded(self._fmt)
                    frames.append(data.decode() if text else data)
                    left -= len(data)
                if frames:
                    await sender.send_bulk(frames)
                    continue
                end = sub.end_reason()
                if end is not None:
                    if isinstance(end, StreamError):
                        await self._error(end.code, end.message)
                    return
                await sub.wait()
        except (TimeoutError, OSError, ClosedResourceError):
            pass
        finally:
            sub.close()
            self._subs.pop(key, None)
            if sub_id is not None and self._names.get(sub_id) == key:
                del self._names[sub_id]

    async def aclose(self) -> None:
        """Stop every pump and close every subscription (the connection is ending)."""
        tasks = [task for _, task in self._subs.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for sub, _ in list(self._subs.values()):
            sub.close()
        self._subs.clear()
        self._names.clear()
