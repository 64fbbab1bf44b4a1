"""Hub topics kept in the durable store (``--store sqlite|redis|postgresql``).

:class:`TopicJournal` is the :class:`~icefloe.transport.topic_log.TopicLog`
of a gateway with a durable store and no backplane. A publish is
**persisted, then delivered**:

1. it is checked as ``Hub.publish`` checks it (the topic is created and
   admitted if new) and given the topic's next offset and its epoch; the
   journal remembers the offsets it gave to events still in flight;
2. one writer task takes every event waiting (up to :data:`WRITE_BATCH`)
   and appends them to the store in one write (one transaction on SQLite,
   one pipelined round trip on Redis), trimmed to the hub's history limits;
3. once that write is done, it publishes them into the hub in order
   (:meth:`~icefloe.hub.Hub.publish_at`); ``POST /v1/topics/…`` answers
   ``201`` then, so an acknowledged publish survives a ``kill -9``.

No subscriber ever sees an event the store does not hold, so after a
restart the numbering goes on from the last stored event under the same
epoch, and a client's (offset, epoch) still means the same events. At
start, :meth:`TopicJournal.open` loads the stored history into the hub
(corrupt records are skipped: a gap, so no resume crosses them).

Limits: :data:`OUTBOX` events waiting to be written (past it a publish is
refused with ``overloaded``: HTTP 503 + ``Retry-After``, a WebSocket
``error`` op; a relay waits for room);
an event waits at most :data:`DELIVER_TIMEOUT_S` for room in the hub
(``block`` subscribers), then it is kept but not delivered live.
If the store fails, the batch's publishers get ``unavailable`` and their
events are neither kept nor delivered.

One process numbers the topics of one store: two servers sharing a store
without a backplane would each number the same topics (each write of a
new epoch drops the other's); several gateways share topics through
``--backplane`` instead (docs/deploy.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any, Final

from icefloe.core.reliability import Reliability
from icefloe.exceptions import ClosedResourceError, StreamError, WouldBlock
from icefloe.hub import Hub, HubEvent
from icefloe.store.protocol import StoreUnavailable
from icefloe.store.topics import (
    Retention,
    TopicEvent,
    TopicRecord,
    TopicStore,
    encode_topic_event,
    topic_events,
)

__all__ = ["DELIVER_TIMEOUT_S", "OUTBOX", "WRITE_BATCH", "TopicJournal"]

log = logging.getLogger("icefloe.transport")

#: events waiting to be written at most
OUTBOX: Final = 10_000
#: events one store write carries at most
WRITE_BATCH: Final = 512
#: seconds a stored event may wait for room in the hub
DELIVER_TIMEOUT_S: Final = 1.0


class _Pending:
    __slots__ = ("done", "event", "record")

    def __init__(
        self,
        event: TopicEvent,
        record: TopicRecord,
        done: asyncio.Future[tuple[str, int]] | None,
    ) -> None:
        self.event = event
        self.record = record
        self.done = done


def _hub_event(e: TopicEvent) -> HubEvent:
    level = Reliability(e.reliability)
    return HubEvent(e.topic, e.offset, e.tenant, e.data, e.headers, e.ts, level, e.epoch)


class TopicJournal:
    """The hub's topics, persisted before delivery (see the module docstring)."""

    def __init__(self, hub: Hub, store: TopicStore) -> None:
        self._hub = hub
        self._store = store
        limits = hub.limits
        self.retention = Retention(
            limits.history_per_topic, limits.history_bytes_per_topic, limits.topic_idle_s
        )
        self._outbox: asyncio.Queue[_Pending] = asyncio.Queue(OUTBOX)
        # (tenant, topic) -> (epoch, next offset) given to events in flight, and their count.
        self._next: dict[tuple[str, str], tuple[str, int, int]] = {}
        self._task: asyncio.Task[None] | None = None
        #: events restored from the store at open
        self.restored = 0

    @property
    def store(self) -> TopicStore:
        return self._store

    async def open(self) -> None:
        """Open the store, load its topics into the hub, start writing."""
        await self._store.open()
        if self.retention.max_items:
            rows = await self._store.load(self.retention)
            self._restore(rows)
        self._task = asyncio.ensure_future(self._write_loop())

    def _restore(self, rows: list[TopicRecord]) -> None:
        last_at: dict[tuple[str, str], float] = {}
        for row in rows:
            last_at[(row.tenant, row.topic)] = row.at
        now = time.time()
        for group in topic_events(rows):
            first = group[0]
            events = [_hub_event(e) for e in group]
            age = max(0.0, now - last_at[(first.tenant, first.topic)])
            try:
                self._hub.restore(events, age_s=age)
            except StreamError as exc:  # past a hub budget: this topic starts afresh
                log.warning("topic %r not restored: %s", first.topic, exc.message)
                continue
            self.restored += len(events)

    async def aclose(self) -> None:
        """Write what is waiting, stop, close the store."""
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._outbox.join()
            task.cancel()
            await asyncio.wait([task])
        await self._store.close()

    async def publish(
        self, topic: str, data: Any, *, tenant: str, headers: Mapping[str, Any] | None = None
    ) -> tuple[str, int]:
        done: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        await self._outbox.put(self._reserve(topic, data, tenant, headers, done))
        return await done

    def submit(
        self, topic: str, data: Any, *, tenant: str, headers: Mapping[str, Any] | None = None
    ) -> asyncio.Future[tuple[str, int]]:
        if self._outbox.full():
            raise WouldBlock("the topic journal's outbox is full")
        done: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        self._outbox.put_nowait(self._reserve(topic, data, tenant, headers, done))
        return done

    def publish_nowait(
        self, topic: str, data: Any, *, tenant: str, headers: Mapping[str, Any] | None = None
    ) -> None:
        if self._outbox.full():
            raise WouldBlock("the topic journal's outbox is full")
        self._outbox.put_nowait(self._reserve(topic, data, tenant, headers, None))

    def _reserve(
        self,
        topic: str,
        data: Any,
        tenant: str,
        headers: Mapping[str, Any] | None,
        done: asyncio.Future[tuple[str, int]] | None,
    ) -> _Pending:
        if self._task is None:
            raise ClosedResourceError("the topic journal is closed")
        hub = self._hub
        key = (tenant, topic)
        epoch, offset = hub.position(topic, data, tenant=tenant, headers=headers)
        ahead = self._next.get(key)
        flying = 0 if ahead is None else ahead[2]
        if ahead is not None and ahead[0] == epoch:
            offset = ahead[1]
        event = TopicEvent(
            tenant, topic, epoch, offset, time.time_ns(), "at_most_once", data, dict(headers or {})
        )
        record = encode_topic_event(event)
        self._next[key] = (epoch, offset + 1, flying + 1)
        return _Pending(event, record, done)

    async def _write_loop(self) -> None:
        outbox = self._outbox
        while True:
            batch = [await outbox.get()]
            while len(batch) < WRITE_BATCH and not outbox.empty():
                batch.append(outbox.get_nowait())
            try:
                await self._store.append([p.record for p in batch], self.retention)
            except Exception as exc:  # the store failed: nobody sees these events
                log.warning("topic journal write failed: %r", exc)
                for p in batch:
                    self._landed(p)
                    if p.done is not None and not p.done.done():
                        p.done.set_exception(StoreUnavailable(f"topic event not stored: {exc}"))
                    outbox.task_done()
                continue
            for p in batch:
                await self._deliver(p)
                outbox.task_done()

    async def _deliver(self, p: _Pending) -> None:
        e = p.event
        try:
            async with asyncio.timeout(DELIVER_TIMEOUT_S):
                await self._hub.publish_at(
                    e.topic,
                    e.data,
                    tenant=e.tenant,
                    offset=e.offset,
                    epoch=e.epoch,
                    headers=e.headers or None,
                )
        except Exception as exc:  # kept, but not delivered live
            log.warning("stored topic event not delivered: %r", exc)
        finally:
            self._landed(p)
            if p.done is not None and not p.done.done():
                p.done.set_result((e.epoch, e.offset))

    def _landed(self, p: _Pending) -> None:
        key = (p.event.tenant, p.event.topic)
        ahead = self._next.get(key)
        if ahead is None:
            return
        if ahead[2] <= 1:
            del self._next[key]
        else:
            self._next[key] = (ahead[0], ahead[1], ahead[2] - 1)
