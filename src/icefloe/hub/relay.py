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

What a slow watcher does to the relay is the watcher's overflow policy
(docs/hub.md): with the default ``at_most_once`` events, ``drop_oldest`` and
``drop_newest`` watchers lose events and never hold the relay, a ``block``
watcher holds it (and so the stream's producer) until it has room.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from icefloe.exceptions import StreamError
from icefloe.runtime.node import Reliability

if TYPE_CHECKING:
    from icefloe.hub.hub import Hub
    from icefloe.runtime.flow import Flow

__all__ = ["relay_stream"]


async def relay_stream(
    flow: Flow,
    hub: Hub,
    stream_id: str,
    topic: str,
    *,
    tenant: str,
    reliability: Reliability | str = Reliability.AT_MOST_ONCE,
    from_seq: int = 0,
) -> int:
    """Publish every chunk of ``stream_id`` from ``from_seq`` to ``topic``.

    Returns when the stream has ended, with the number of chunks relayed.

    :raises KeyError: no such stream is registered.
    :raises StreamError: ``history_gone`` if ``from_seq`` is no longer held.
    :raises TopicError: ``topic`` is not a valid topic name.
    """
    relayed = 0
    reader = flow.subscribe(stream_id, from_seq)
    try:
        async for chunk in reader:
            await hub.publish(topic, chunk, tenant=tenant, reliability=reliability)
            relayed += 1
    except StreamError as exc:
        error = {"code": exc.code.value, "message": exc.message}
        await hub.publish(
            topic, {"stream_id": stream_id, "error": error}, tenant=tenant, reliability=reliability
        )
    finally:
        reader.close()
    return relayed
