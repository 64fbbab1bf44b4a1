"""Hub topics across gateways on NATS: one core subject per hub (``P.h``).

Every process publishes the events published on it (:meth:`NatsHubLink.forward`:
non-blocking, into a bounded outbox that one task publishes in order) and
subscribes to the subject (fan-in: every tenant and topic on one subject),
handing each event another process published to ``deliver``. A publish thus
reaches every subscriber of every gateway once: locally at once, elsewhere
through the server, each publisher's events in order.

What differs from the Redis engine: core NATS keeps no log of events, so a
gateway that is disconnected when an event is published never gets it,
and one that falls :data:`PENDING` events behind loses the excess (nats-py
drops them and reports a slow consumer, counted in ``dropped``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from icefloe.backplane.protocol import Deliver
from icefloe.backplane.topics import OUTBOX

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

__all__ = ["PENDING", "NatsHubLink"]

log = logging.getLogger("icefloe.backplane")

#: events from other processes waiting to be delivered here (and their bytes)
PENDING: Final = 10_000
PENDING_BYTES: Final = 64 * 1024 * 1024


class NatsHubLink:
    """The hub events of one process, shared with the others on one subject."""

    def __init__(self, nc: Client, subject: str, process_id: str, deliver: Deliver) -> None:
        self._nc = nc
        self._subject = subject
        #: fixed-length origin at the start of each payload
        self._origin = process_id.encode()
        self._deliver = deliver
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue(OUTBOX)
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        #: events that reached only this gateway (outbox full or publish failed)
        self.dropped = 0
        #: events delivered from other processes
        self.received = 0

    async def open(self) -> None:
        self._sub = await self._nc.subscribe(
            self._subject,
            cb=self._on_event,
            pending_msgs_limit=PENDING,
            pending_bytes_limit=PENDING_BYTES,
        )
        self._task = asyncio.ensure_future(self._write_loop())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=2.0)
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # the connection is already closed
                pass

    def forward(self, event: bytes) -> None:
        """Share an event published here (never waits)."""
        try:
            self._outbox.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _write_loop(self) -> None:
        outbox = self._outbox
        while True:
            event = await outbox.get()
            try:
                await self._nc.publish(self._subject, self._origin + event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # disconnected past the reconnect buffer
                self.dropped += 1
                log.warning("backplane hub publish failed: %r", exc)

    async def _on_event(self, msg: Msg) -> None:
        data = msg.data
        if data.startswith(self._origin):
            return  # delivered here when it was published
        self.received += 1
        try:
            await self._deliver(data[len(self._origin) :])
        except Exception as exc:  # one bad event must not stop the others
            log.warning("backplane hub event not delivered: %r", exc)
