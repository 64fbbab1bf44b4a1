"""Hub topics across gateways: one Redis Stream per hub (``P hub``).

Every process appends the events published on it (:meth:`HubLink.forward`:
non-blocking, into a bounded outbox that one task writes in pipelined
``XADD … MAXLEN ~`` batches, in publish order) and follows the stream with
one blocking ``XREAD`` (fan-in: every tenant and topic in one stream), handing
each event another process published to ``deliver``, which publishes it into
the local hub. A publish thus reaches every subscriber of every gateway once:
locally at once, elsewhere through the engine.

Events are opaque bytes here (the edge encodes them); this layer knows no
hub. Limits: :data:`OUTBOX` events waiting to be written (past it an event
reaches only this gateway's subscribers and is counted in ``dropped``),
:data:`MAXLEN` events kept in the engine, :data:`READ_COUNT` per read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["MAXLEN", "OUTBOX", "READ_COUNT", "HubLink"]

log = logging.getLogger("icefloe.backplane")

#: events waiting to be written to the engine, per process
OUTBOX: Final = 10_000
#: events the engine keeps in ``P hub`` (approximately)
MAXLEN: Final = 10_000
#: events one XREAD returns at most
READ_COUNT: Final = 512
#: events one pipelined write carries at most
WRITE_BATCH: Final = 512


class HubLink:
    """The hub events of one process, shared with the others on the engine."""

    def __init__(
        self,
        client: Redis,
        key: str,
        process_id: str,
        deliver: Callable[[bytes], Awaitable[None]],
    ) -> None:
        self._client = client
        self._key = key
        self._origin = process_id.encode()
        self._deliver = deliver
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue(OUTBOX)
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        #: events that reached only this gateway (outbox full)
        self.dropped = 0
        #: events delivered from other processes
        self.received = 0

    async def open(self) -> None:
        """Start following from now, and writing."""
        info: Any = await self._client.xinfo_stream(self._key) if await self._exists() else None
        last = info["last-generated-id"].decode() if info else "0-0"
        self._tasks = [
            asyncio.ensure_future(self._write_loop()),
            asyncio.ensure_future(self._read_loop(last)),
        ]

    async def _exists(self) -> bool:
        return bool(await self._client.exists(self._key))

    async def aclose(self) -> None:
        # The loops also stop on the flag (see RedisBackplane.aclose).
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)

    def forward(self, event: bytes) -> None:
        """Share an event published here (never waits)."""
        try:
            self._outbox.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _write_loop(self) -> None:
        outbox = self._outbox
        while not self._closing:
            batch = [await outbox.get()]
            while len(batch) < WRITE_BATCH and not outbox.empty():
                batch.append(outbox.get_nowait())
            pipe = self._client.pipeline(transaction=False)
            for event in batch:
                pipe.xadd(
                    self._key, {"o": self._origin, "e": event}, maxlen=MAXLEN, approximate=True
                )
            try:
                await pipe.execute()
            except Exception as exc:  # the engine is away: these reach this gateway only
                self.dropped += len(batch)
                log.warning("backplane hub write failed: %r", exc)
                await asyncio.sleep(0.5)

    async def _read_loop(self, last: str) -> None:
        while not self._closing:
            try:
                answer: Any = await self._client.xread(
                    {self._key: last}, count=READ_COUNT, block=2000
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("backplane hub read failed: %r", exc)
                await asyncio.sleep(0.5)
                continue
            for entry, fields in answer[0][1] if answer else ():
                last = entry.decode()
                if fields.get(b"o") == self._origin:
                    continue  # delivered here when it was published
                self.received += 1
                try:
                    await self._deliver(fields[b"e"])
                except Exception as exc:  # one bad event must not stop the others
                    log.warning("backplane hub event not delivered: %r", exc)
