"""Hub topics across gateways, numbered by the engine: one Redis Stream (``P hub``).

A publish on any gateway runs one Lua script on the engine
(:data:`_PUBLISH`) that gives the event its topic's next offset and the
topic's epoch, and appends it to ``P hub`` in the same step; so the
stream's order is every topic's offset order, and all gateways agree on
(offset, epoch) for every event. Keys (``P`` is the backplane prefix;
``<t>`` is ``len(tenant):tenant:topic``)::

    P hub              STREAM  every tenant's and topic's events, fields ``t``
                               (tenant), ``n`` (topic), ``p`` (epoch), ``f``
                               (offset), ``o`` (the publishing process), ``e``
                               (the event, opaque bytes)
    P hub:topic:<t>    HASH    ``epoch`` and ``next`` (the next offset); expires
                               :data:`TOPIC_TTL_S` after the topic's last publish

The epoch is drawn by the first publish to a topic (or the first after its
counter expired, or after the engine lost it): a new epoch is a new
numbering, and a client resuming under the old one gets ``history_gone``.

Every gateway, the publishing one included, delivers the events it reads
from ``P hub`` (one blocking ``XREAD``, fan-in), in stream order, to
``deliver(tenant, topic, epoch, offset, event)``: a publish reaches every
subscriber of every gateway once. At :meth:`HubLink.open` a gateway first
reads what ``P hub`` still holds, so its hub holds the same history as the
others (a client may resume on any gateway), then follows from there.

Events are opaque bytes here (the edge encodes them); this layer knows no
hub. Limits: :data:`OUTBOX` events waiting to be written (past it a
publish waits, or a ``publish_nowait`` is refused), :data:`MAXLEN` events
kept in ``P hub`` (approximately), :data:`READ_COUNT` per read.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from typing import TYPE_CHECKING, Any, Final

from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import ClosedResourceError, StreamError, WouldBlock

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from icefloe.backplane.protocol import NumberedDeliver

__all__ = ["MAXLEN", "OUTBOX", "READ_COUNT", "TOPIC_TTL_S", "HubLink"]

log = logging.getLogger("icefloe.backplane")

#: events waiting to be written to the engine, per process
OUTBOX: Final = 10_000
#: events the engine keeps in ``P hub`` (approximately)
MAXLEN: Final = 10_000
#: events one XREAD returns at most
READ_COUNT: Final = 512
#: events one pipelined write carries at most
WRITE_BATCH: Final = 512
#: seconds a topic's counter outlives its last publish on the engine
TOPIC_TTL_S: Final = 86_400


_PUBLISH = """
-- KEYS: topic hash, hub stream. ARGV: a new epoch (used if the topic has
-- none), ttl ms, maxlen, tenant, topic, origin, event.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'next', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'next', 1) - 1
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 't', ARGV[4], 'n', ARGV[5],
  'p', epoch, 'f', offset, 'o', ARGV[6], 'e', ARGV[7])
return {epoch, offset}
"""

# An event to write, and who waits for its (epoch, offset).
_Item = tuple[str, str, bytes, "asyncio.Future[tuple[str, int]] | None"]


class HubLink:
    """The hub events of one process, numbered and shared on the engine."""

    def __init__(self, client: Redis, key: str, process_id: str, deliver: NumberedDeliver) -> None:
        self._client = client
        self._key = key
        self._origin = process_id
        self._deliver = deliver
        self._sha = hashlib.sha1(_PUBLISH.encode()).hexdigest()
        self._outbox: asyncio.Queue[_Item] = asyncio.Queue(OUTBOX)
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        #: events not written (the engine failed)
        self.dropped = 0
        #: events delivered from the engine (this process's included)
        self.received = 0

    def topic_key(self, tenant: str, topic: str) -> str:
        return f"{self._key}:topic:{len(tenant)}:{tenant}:{topic}"

    async def open(self) -> None:
        """Deliver what the engine still holds, then follow it, and start writing."""
        await self._client.script_load(_PUBLISH)
        last = await self._catch_up()
        self._tasks = [
            asyncio.ensure_future(self._write_loop()),
            asyncio.ensure_future(self._read_loop(last)),
        ]

    async def _catch_up(self) -> str:
        # Everything P hub holds now, in order: the hub's histories match the other gateways'.
        last = "-"
        while True:
            entries: Any = await self._client.xrange(self._key, last, "+", count=READ_COUNT)
            if last != "-" and entries and entries[0][0].decode() == last:
                entries = entries[1:]
            if not entries:
                return "0-0" if last == "-" else last
            for entry, fields in entries:
                last = entry.decode()
                await self._hand_over(fields)

    async def aclose(self) -> None:
        # The loops also stop on the flag (see RedisBackplane.aclose).
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)

    async def publish(self, tenant: str, topic: str, event: bytes) -> tuple[str, int]:
        """Number and share an event; its (epoch, offset) once the engine holds it.

        :raises StreamError: ``unavailable``: the engine did not take it.
        """
        if self._closing:
            raise ClosedResourceError("the backplane is closed")
        done: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        await self._outbox.put((tenant, topic, event, done))
        return await done

    def submit(self, tenant: str, topic: str, event: bytes) -> asyncio.Future[tuple[str, int]]:
        """Queue an event now; the future is its (epoch, offset) once the engine holds it.

        :raises WouldBlock: :data:`OUTBOX` events are already waiting.
        """
        if self._closing:
            raise ClosedResourceError("the backplane is closed")
        done: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        try:
            self._outbox.put_nowait((tenant, topic, event, done))
        except asyncio.QueueFull:
            raise WouldBlock("the backplane's outbox is full") from None
        return done

    def publish_nowait(self, tenant: str, topic: str, event: bytes) -> None:
        """Number and share an event without waiting (failures are logged).

        :raises WouldBlock: :data:`OUTBOX` events are already waiting.
        """
        if self._closing:
            raise ClosedResourceError("the backplane is closed")
        try:
            self._outbox.put_nowait((tenant, topic, event, None))
        except asyncio.QueueFull:
            raise WouldBlock("the backplane's outbox is full") from None

    async def _write_loop(self) -> None:
        outbox = self._outbox
        ttl_ms = TOPIC_TTL_S * 1000
        while not self._closing:
            batch = [await outbox.get()]
            while len(batch) < WRITE_BATCH and not outbox.empty():
                batch.append(outbox.get_nowait())
            calls = [
                (
                    self.topic_key(tenant, topic),
                    [os.urandom(6).hex(), ttl_ms, MAXLEN, tenant, topic, self._origin, event],
                )
                for tenant, topic, event, _ in batch
            ]
            try:
                answers = await self._run(calls)
            except Exception as exc:  # the engine is away: nobody gets these
                self.dropped += len(batch)
                log.warning("backplane hub write failed: %r", exc)
                for *_, done in batch:
                    if done is not None and not done.done():
                        done.set_exception(
                            StreamError(ErrorCode.UNAVAILABLE, "the backplane is unreachable")
                        )
                await asyncio.sleep(0.5)
                continue
            for (*_, done), answer in zip(batch, answers, strict=True):
                if isinstance(answer, Exception):
                    self.dropped += 1
                    log.warning("backplane hub event not numbered: %r", answer)
                    if done is not None and not done.done():
                        done.set_exception(StreamError(ErrorCode.UNAVAILABLE, str(answer)))
                elif done is not None and not done.done():
                    epoch, offset = answer
                    done.set_result((epoch.decode(), int(offset)))

    async def _run(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """Run the publish script once per call, pipelined on one connection (so
        in this order), by its SHA: one round trip (a pipeline of registered
        scripts would first ask the server whether they exist)."""
        from redis.exceptions import NoScriptError

        for attempt in (0, 1):
            pipe = self._client.pipeline(transaction=False)
            for topic_key, args in calls:
                pipe.evalsha(self._sha, 2, topic_key, self._key, *args)
            # Each event's own answer or error: one failing script must not
            # fail the publishers of the others, which ran.
            answers: list[Any] = await pipe.execute(raise_on_error=False)
            if attempt or not any(isinstance(a, NoScriptError) for a in answers):
                return answers
            # The server restarted and forgot the script: none of the batch ran.
            await self._client.script_load(_PUBLISH)
        raise AssertionError("unreachable")

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
                await self._hand_over(fields)

    async def _hand_over(self, fields: dict[bytes, bytes]) -> None:
        self.received += 1
        try:
            await self._deliver(
                fields[b"t"].decode(),
                fields[b"n"].decode(),
                fields[b"p"].decode(),
                int(fields[b"f"]),
                fields[b"e"],
            )
        except Exception as exc:  # one bad event must not stop the others
            log.warning("backplane hub event not delivered: %r", exc)
