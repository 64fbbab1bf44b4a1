"""The edge's relays: runs started with ``headers.topic`` published into the hub.

One :class:`StreamRelays` per app holds a task per relayed run (see
:mod:`icefloe.hub.relay` for what a relay publishes and skips). It also
answers whether a relay counts as a reader for the unread timeout: only
while some subscriber of the relay's tenant watches the topic.
:func:`relay_tenant` says which tenant that is (with auth off, the shared
tenant of every caller).
"""

from __future__ import annotations

import asyncio
import logging
from typing import NamedTuple

from icefloe.core.topics import Pattern, TopicError, validate_topic
from icefloe.core.wire_errors import ErrorCode
from icefloe.hub import Hub, RelayResult, relay_reader
from icefloe.hub.relay import Publisher
from icefloe.runtime.flow import Flow
from icefloe.transport.auth import Principal, Scope
from icefloe.transport.errors import HttpError

__all__ = ["StreamRelays", "check_relay_topic", "relay_tenant"]

log = logging.getLogger("icefloe.edge")

#: the tenant of every caller when auth is off (no authenticator issues it)
_AUTH_OFF_TENANT = Principal.unrestricted().tenant


def relay_tenant(principal: Principal, stream_tenant: str) -> str:
    """The hub tenant a run started by ``principal`` is relayed under.

    With auth on, the stream's tenant, whose subscribers may read the
    stream (an admin starting a run for another tenant relays it there).
    With auth off every caller publishes and subscribes as the one shared
    tenant ``"*"`` (the unrestricted principal's), so its relays do too:
    otherwise ``headers.tenant`` would put them where no subscriber is.
    """
    return _AUTH_OFF_TENANT if principal.tenant == _AUTH_OFF_TENANT else stream_tenant


def check_relay_topic(principal: Principal, topic: str) -> None:
    """Refuse a ``headers.topic`` before anything starts.

    :raises HttpError: ``bad_request`` for a bad name, ``forbidden`` without
        scope ``topics:publish``.
    """
    try:
        validate_topic(topic)
    except TopicError as exc:
        raise HttpError(ErrorCode.BAD_REQUEST, f"headers.topic: {exc}") from None
    if not principal.has(Scope.TOPICS_PUBLISH):
        raise HttpError(ErrorCode.FORBIDDEN, "headers.topic needs scope topics:publish")


class _Relay(NamedTuple):
    task: asyncio.Task[RelayResult]
    topic: str
    tenant: str


class StreamRelays:
    """The running relays of one app, by stream id."""

    def __init__(self, flow: Flow, hub: Hub) -> None:
        self._flow = flow
        self._hub = hub
        self._running: dict[str, _Relay] = {}
        self._closed = False
        #: publishes relayed events when a store or the backplane numbers
        #: topics (issues 11, 12; None: straight into the hub)
        self.publish: Publisher | None = None

    def start(self, stream_id: str, topic: str, tenant: str) -> None:
        """Relay the stream's chunks into ``topic`` until it ends (docs/hub.md)."""
        if self._closed:
            return  # shutting down: the hub is about to close
        # Attached now, not when the task first runs: no chunk can be trimmed first.
        reader = self._flow.subscribe(stream_id, 0)
        task = asyncio.ensure_future(
            relay_reader(reader, self._hub, stream_id, topic, tenant=tenant, publish=self.publish)
        )
        self._running[stream_id] = _Relay(task, topic, tenant)
        task.add_done_callback(lambda done: self._done(stream_id, done))

    def _done(self, stream_id: str, task: asyncio.Task[RelayResult]) -> None:
        self._running.pop(stream_id, None)
        if not task.cancelled() and task.exception() is not None:
            # The hub closed under it, or the stream vanished: nothing to retry.
            log.warning("stream relay ended early: %r", task.exception())

    def is_read(self, stream_id: str, subscribers: int) -> bool:
        """Whether a stream with ``subscribers`` readers counts as read.

        A relay is one of those readers, and counts only while some
        subscriber of the run's tenant watches its topic: an abandoned
        relayed run is cancelled like any other.
        """
        relay = self._running.get(stream_id)
        if relay is None or subscribers > 1:
            return subscribers > 0
        watchers = self._hub.subscriber_statistics(relay.tenant)
        return any(Pattern(w.pattern).matches(relay.topic) for w in watchers)

    async def aclose(self) -> None:
        """Cancel every relay and start no more."""
        self._closed = True
        tasks = [relay.task for relay in self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
