"""What the edge asks of a backplane engine, whichever server it runs on.

:class:`~icefloe.transport.backplane_edge.EdgeBackplane` talks to an
:class:`Engine` only; :func:`~icefloe.backplane.engines.engine_for` picks
the engine by the ``--backplane`` URL's scheme (``redis://`` for
:class:`~icefloe.backplane.engine.RedisBackplane`, ``nats://`` for
:class:`~icefloe.backplane.nats.engine.NatsBackplane`). Every engine shares
the reading side (:class:`~icefloe.backplane.follower.Follower`,
:class:`~icefloe.backplane.reader.RemoteReader`) and the chunk encoding
(msgpack, encoded once by the producer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from icefloe.backplane.follower import Follower
    from icefloe.backplane.meta import StreamMeta
    from icefloe.backplane.publisher import ChunkSource
    from icefloe.backplane.reader import RemoteReader

__all__ = ["Deliver", "Engine", "NumberedDeliver", "NumberedTopicLink", "TopicLink"]

#: hands one hub event published on another process to the local hub
Deliver = Callable[[bytes], Awaitable[None]]
#: hands one hub event the engine numbered to the local hub (every process's,
#: this one's too): ``(tenant, topic, epoch, offset, event)``
NumberedDeliver = Callable[[str, str, str, int, bytes], Awaitable[None]]


class TopicLink(Protocol):
    """Hub events shared with the other processes (opaque bytes here)."""

    async def open(self) -> None: ...
    async def aclose(self) -> None: ...

    def forward(self, event: bytes) -> None:
        """Share an event published on this process (never waits)."""
        ...


@runtime_checkable
class NumberedTopicLink(Protocol):
    """Hub events numbered by the engine: one offset sequence and epoch per
    topic across all processes (Redis: :mod:`icefloe.backplane.topics`)."""

    async def open(self) -> None: ...
    async def aclose(self) -> None: ...

    async def publish(self, tenant: str, topic: str, event: bytes) -> tuple[str, int]:
        """Number and share an event; its (epoch, offset) once the engine holds it."""
        ...

    def submit(self, tenant: str, topic: str, event: bytes) -> asyncio.Future[tuple[str, int]]:
        """As :meth:`publish`, queued now (``WouldBlock`` if the outbox is full)."""
        ...

    def publish_nowait(self, tenant: str, topic: str, event: bytes) -> None:
        """As :meth:`publish`, without waiting (failures are logged)."""
        ...


class Engine(Protocol):
    """One process's backplane on one engine server."""

    #: chunks the engine keeps per stream (and a follower holds at most)
    history: int
    #: this process, in position reports and meta
    process_id: str
    #: whether the engine answered the last health check (``/readyz``)
    healthy: bool

    async def open(self) -> None: ...
    async def aclose(self) -> None: ...

    def publish(self, stream_id: str, tenant: str, source: ChunkSource) -> None:
        """Append ``source`` (a stream this process produces) to the engine."""
        ...

    async def meta(self, stream_id: str) -> StreamMeta | None:
        """The stream's meta, or None if no live process shares it."""
        ...

    async def list_streams(self) -> list[StreamMeta]:
        """The shared streams, newest first (bounded by the engine)."""
        ...

    async def cancel(self, stream_id: str) -> None:
        """Ask the producing process to cancel ``stream_id``."""
        ...

    async def follow(self, meta: StreamMeta, from_seq: int) -> RemoteReader:
        """A blocking reader of the remote stream ``meta`` from ``from_seq``."""
        ...

    def followed(self) -> dict[str, Follower]:
        """The streams this process follows now."""
        ...

    def publishing(self, stream_id: str) -> bool:
        """Whether this process produces ``stream_id``."""
        ...

    def producing(self) -> int:
        """How many streams this process is appending to the engine now."""
        ...

    def read_elsewhere(self, stream_id: str) -> bool:
        """Whether another process reported reading ``stream_id`` lately."""
        ...

    def topic_link(
        self, numbered: NumberedDeliver, forwarded: Deliver
    ) -> NumberedTopicLink | TopicLink:
        """The hub link of this process (opened by the caller): a
        :class:`NumberedTopicLink` delivering to ``numbered`` if the engine can
        number topics, else a :class:`TopicLink` delivering to ``forwarded``
        the events other processes published (numbered by each hub)."""
        ...
