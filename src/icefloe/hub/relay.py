"""Relay a flow's stream into a hub topic, so any number of clients can watch it.

A stream already fans out to its own readers (``flow.subscribe``); relaying it
into the hub adds what topics have: patterns (``streams.*``), filters, a
buffer and an overflow policy per watcher, and replay by offset. The relay is
one reader of the stream (it holds the producer back like any reader, so no
chunk is skipped) and one publisher of the topic: every chunk becomes one
event, in seq order, whose data is the chunk (``{"stream_id", "seq", "text",
"done", "meta", "data", "ts"}`` on the wire). A stream that ends abnormally
ends its relay with one last event ``{"stream_id", "error": {"code",
"message"}}``.

An event the hub refuses is skipped, and the relay goes on: one over
``HubLimits.max_event_bytes`` (``ValueError``), one whose data the wire
formats cannot carry (``EncodeError``), or one refused while the hub is over
a limit (``StreamError("overloaded")``); the count is in the return value.
A relay logs its first skip, and at its end the count if there were more:
two lines at most, not one per chunk (a run of thousands of chunks into a
hub over its budget would otherwise flood the log). The level is INFO when
every skip was a hub refusal (an expected event under load) and WARNING when
one was the flow's own output that can never be published (too big, or not
encodable: a bug to fix). A closed hub or an invalid topic ends the relay
with the exception.

What a slow watcher does to the relay is the watcher's overflow policy
(docs/hub.md): with the default ``at_most_once`` events, ``drop_oldest`` and
``drop_newest`` watchers lose events and never hold the relay, a ``block``
watcher holds it (and so the stream's producer) until it has room.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from icefloe.core.reliability import Reliability
from icefloe.core.topics import TopicError
from icefloe.exceptions import ClosedResourceError, IcefloeError, StreamError

if TYPE_CHECKING:
    from icefloe.hub.hub import Hub
    from icefloe.runtime.flow import Flow
    from icefloe.runtime.subscription import Subscription

__all__ = ["Publisher", "RelayResult", "relay_reader", "relay_stream"]

log = logging.getLogger("icefloe.hub")


class RelayResult(NamedTuple):
    """What a relay did by the time its stream ended."""

    #: chunks published to the topic
    relayed: int
    #: chunks the hub refused (too big, or the hub over a global limit)
    skipped: int


async def relay_stream(
    flow: Flow,
    hub: Hub,
    stream_id: str,
    topic: str,
    *,
    tenant: str,
    reliability: Reliability | str = Reliability.AT_MOST_ONCE,
    from_seq: int = 0,
) -> RelayResult:
    """Publish every chunk of ``stream_id`` from ``from_seq`` to ``topic``.

    Returns when the stream has ended.

    :raises KeyError: no such stream is registered.
    :raises StreamError: ``history_gone`` if ``from_seq`` is no longer held.
    :raises TopicError: ``topic`` is not a valid topic name.
    """
    reader = flow.subscribe(stream_id, from_seq)
    return await relay_reader(reader, hub, stream_id, topic, tenant=tenant, reliability=reliability)


async def relay_reader(
    reader: Subscription,
    hub: Hub,
    stream_id: str,
    topic: str,
    *,
    tenant: str,
    reliability: Reliability | str = Reliability.AT_MOST_ONCE,
    publish: Publisher | None = None,
) -> RelayResult:
    """:func:`relay_stream` from a reader already attached (closed at the end).

    Attach the reader where the run starts, so that no chunk can be trimmed
    before the relay's task first runs. ``publish``: what publishes each
    event instead of ``hub.publish`` (a durable store's or the backplane's
    log, which numbers the topic; it publishes ``at_most_once``).
    """
    relayed = skipped = 0
    skips = _Skips(topic)
    try:
        while True:
            try:
                chunk = await anext(reader)
            except StopAsyncIteration:
                break
            except StreamError as exc:
                error = {"code": exc.code.value, "message": exc.message}
                data = {"stream_id": stream_id, "error": error}
                await _publish(hub, topic, data, tenant, reliability, skips, publish)
                break
            if await _publish(hub, topic, chunk, tenant, reliability, skips, publish):
                relayed += 1
            else:
                skipped += 1
    finally:
        reader.close()
        skips.close()
    return RelayResult(relayed, skipped)


class _Skips:
    """The events one relay skipped: the first logged at once, the count at the end."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.count = 0
        self.last = ""
        self.level = logging.INFO

    def skipped(self, reason: str, *, bug: bool) -> None:
        self.count += 1
        self.last = reason
        if bug:  # the flow's own output can never be published: worth a warning
            self.level = logging.WARNING
        if self.count == 1:
            log.log(self.level, "relay to %r: event skipped: %s", self.topic, reason)

    def close(self) -> None:
        if self.count > 1:
            log.log(
                self.level,
                "relay to %r: %d events skipped (last: %s)",
                self.topic,
                self.count,
                self.last,
            )


async def _publish(
    hub: Hub,
    topic: str,
    data: object,
    tenant: str,
    reliability: Reliability | str,
    skips: _Skips,
    publish: Publisher | None = None,
) -> bool:
    """Publish one event; False (counted in ``skips``) if the hub refused this one event."""
    try:
        if publish is not None:
            await publish(topic, data, tenant=tenant)
        else:
            await hub.publish(topic, data, tenant=tenant, reliability=reliability)
    except StreamError as exc:  # the hub over a limit: expected under load
        skips.skipped(exc.message, bug=False)
        return False
    except TopicError:
        raise  # a bad topic is the caller's error: every event would fail
    except ValueError as exc:  # too big, or EncodeError: this event only
        skips.skipped(str(exc), bug=True)
        return False
    except ClosedResourceError:
        raise  # the hub is closing: so is the relay
    except IcefloeError as exc:  # the log (store, backplane) did not keep this one
        skips.skipped(str(exc), bug=False)
        return False
    return True


class Publisher(Protocol):
    """Publishes one event of a relay (``TopicLog.publish``)."""

    async def __call__(self, topic: str, data: Any, *, tenant: str) -> object: ...
