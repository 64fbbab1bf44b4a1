"""Redis Streams: :class:`RedisStreamsSink` (XADD) and :class:`RedisStreamsSource` (a group).

Needs the ``redis`` extra (redis-py's asyncio client). Both take a connected
``redis.asyncio.Redis`` (``decode_responses=False``) and never close it.

**Layout.** One record is one stream entry with one field, ``r``: the
msgpack array ``[key, [[name, value], ...], value]`` (key ``nil`` when
``None``). One field rather than one per header and part: redis-py parses
every field of every entry it reads in Python, and that parsing is most of
a round trip's cost (seven fields per entry ran at half the throughput of
one). The sink
writes every record to one Redis stream ``key``: one log, so the order of
each icefloe stream is the order of its sends.

**Sink.** :meth:`RedisStreamsSink.send` buffers; every ``batch`` records (and
:meth:`~RedisStreamsSink.flush`) the batch goes out as one pipeline of
``XADD key MAXLEN ~ maxlen * ...``. ``maxlen`` trims old entries (``~``:
approximately, cheap; ``exact_maxlen=True`` for ``=``; ``None`` keeps all).
A batch that fails on the connection (or meets a restarted server still
loading its data) is retried ``retries`` times with the source's backoff:
the default 8 spans about 7 s, a broker restart with room to spare (3 retries
spanned 0.35 s, shorter than a restart). A retry may write some entries
twice, which the consumer's dedup drops.

**Source.** Consumer ``consumer`` of group ``group`` (``XGROUP CREATE ...
MKSTREAM``, from ``start_id``: ``"0"`` the whole stream, ``"$"`` only new
entries). On start it first re-reads its own pending entries (id ``0``:
delivered before a crash, never acked), then reads new ones with
``XREADGROUP COUNT count BLOCK block_ms``. Every ``claim_interval_s`` it
``XAUTOCLAIM``s entries left pending longer than ``claim_min_idle_ms`` by any
consumer (a dead one, or a nacked entry of its own). ``Inbound.position`` is
the entry id (``bytes``), ``deliveries`` Redis's delivery count. ``ack`` is
``XACK`` (batched with the next read, or every ``count`` acks, and sent at
close, tried twice: unsent, their entries come back by ``XAUTOCLAIM``); ``nack``
leaves the entry pending, so it comes back by ``XAUTOCLAIM``. An entry that
is not an icefloe record (no ``r`` field, or one that does not decode)
goes to ``dead_letters`` (its fields as headers) and is acked; without a
dead-letter sink it is delivered that way, for the consumer's decode to
reject. A lost connection (after redis-py's own
retries) is retried with backoff (50 ms doubling to 2 s, counted in
``reconnects``), then the consumer re-reads its own pending entries, so an
entry whose reply was lost on the way is not skipped. A server that comes
back without the group (restarted with no persistence: ``NOGROUP``) gets it
created again from ``0`` (counted in ``reconnects``); what the server lost
is lost, and shows as gaps in the streams.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from icefloe.connectors.buffered_sink import BufferedSink
from icefloe.connectors.deadletter import DeadLetters
from icefloe.connectors.protocol import ConnectorStatistics, Inbound
from icefloe.connectors.record import Record

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisStreamsSink", "RedisStreamsSource", "entry_fields", "entry_record"]

#: reconnection backoff after a lost connection: first wait, doubling up to the cap
_FIRST_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 2.0

_RECORD = b"r"
_encode_record = msgspec.msgpack.Encoder().encode
_decode_record = msgspec.msgpack.Decoder(
    tuple[bytes | None, tuple[tuple[str, bytes], ...], bytes]
).decode


def entry_fields(record: Record) -> list[bytes]:
    """The flat ``field value`` list of the stream entry carrying ``record``."""
    return [_RECORD, _encode_record((record.key, record.headers, record.value))]


def entry_record(fields: dict[bytes, bytes]) -> Record | None:
    """The record a stream entry carries; ``None`` if it is not one (no ``r`` that decodes)."""
    packed = fields.get(_RECORD)
    if packed is None:
        return None
    try:
        key, headers, value = _decode_record(packed)
    except msgspec.DecodeError:
        return None
    return Record(key, value, headers)


def _fixed(key: str) -> Callable[[Record], str]:
    return lambda _record: key


def _raw_fields(fields: dict[bytes, bytes]) -> tuple[tuple[str, bytes], ...]:
    return tuple((name.decode("latin-1"), v) for name, v in fields.items() if name != _RECORD)


class RedisStreamsSink(BufferedSink):
    """Writes records to the Redis stream ``key`` (see the module docstring).

    ``key`` may also be a function of the record (e.g. one Redis stream per
    icefloe stream: ``lambda r: f"chunks:{r.key.decode()}"``); each Redis
    stream is then read by its own source.
    """

    def __init__(
        self,
        client: Redis,
        key: str | Callable[[Record], str],
        *,
        maxlen: int | None = 1_000_000,
        exact_maxlen: bool = False,
        batch: int = 500,
        retries: int = 8,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if maxlen is not None and maxlen < 1:
            raise ValueError(f"maxlen must be >= 1 or None, got {maxlen}")
        super().__init__()
        self._client = client
        self._key = key if callable(key) else _fixed(key)
        self._key_name = key if isinstance(key, str) else "per-record"
        self._trim: list[Any] = (
            [] if maxlen is None else [b"MAXLEN", b"=" if exact_maxlen else b"~", maxlen]
        )
        self._batch_size = batch
        self._retries = retries
        self._pending: list[Record] = []
        self._lock = asyncio.Lock()
        self._sent = self._confirmed = self._failed = self._reconnects = 0

    @property
    def name(self) -> str:
        return f"redis:{self._key_name}"

    async def send(self, record: Record) -> None:
        """Buffer ``record``; a full batch is written (and waited for) now."""
        self._refuse_if_closed(record)
        self._pending.append(record)
        self._sent += 1
        if len(self._pending) >= self._batch_size:
            await self._settle()

    async def _settle(self) -> None:
        """Write what is buffered (``retries`` times over a lost connection)."""
        from redis.exceptions import ConnectionError, TimeoutError

        async with self._lock:
            batch, self._pending = self._pending, []
            if not batch:
                return
            for attempt in range(self._retries + 1):
                try:
                    await self._xadd(batch)
                except (ConnectionError, TimeoutError, OSError) as exc:
                    if attempt == self._retries:
                        self._failed += len(batch)
                        self._failures.add_all(batch, f"redis: {exc}")
                        return
                    self._reconnects += 1
                    await asyncio.sleep(min(_FIRST_BACKOFF_S * 2**attempt, _MAX_BACKOFF_S))
                else:
                    self._confirmed += len(batch)
                    return

    async def _xadd(self, batch: list[Record]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for record in batch:
            key = self._key(record)
            pipe.execute_command(b"XADD", key, *self._trim, b"*", *entry_fields(record))
        await pipe.execute()

    def statistics(self) -> ConnectorStatistics:
        in_flight = self._sent - self._confirmed - self._failed
        return ConnectorStatistics(
            self._sent, self._confirmed, self._failed, in_flight, self._reconnects
        )


class RedisStreamsSource:
    """Reads the Redis stream ``key`` as consumer ``consumer`` of ``group``."""

    def __init__(
        self,
        client: Redis,
        key: str,
        *,
        group: str,
        consumer: str,
        start_id: str = "0",
        count: int = 500,
        block_ms: int = 1000,
        claim_min_idle_ms: int = 60_000,
        claim_interval_s: float = 5.0,
        max_in_flight: int = 10_000,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        if count < 1 or max_in_flight < 1:
            raise ValueError("count and max_in_flight must be >= 1")
        self._client = client
        self._key = key
        self._group = group
        self._consumer = consumer
        self._start_id = start_id
        self._count = count
        self._block_ms = block_ms
        self._min_idle = claim_min_idle_ms
        self._claim_interval = claim_interval_s
        self._max_in_flight = max_in_flight
        self._dead = dead_letters
        self._acks: list[bytes] = []
        self._unacked: set[bytes] = set()
        self._room = asyncio.Event()
        self._room.set()
        self._received = self._acked = self._nacked = self._reconnects = 0

    @property
    def name(self) -> str:
        return f"redis:{self._key}"

    async def __aenter__(self) -> RedisStreamsSource:
        await self._create_group(self._start_id)
        return self

    async def _create_group(self, start_id: str) -> None:
        from redis.exceptions import ResponseError

        try:
            await self._client.xgroup_create(self._key, self._group, start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def __aexit__(self, *exc: object) -> None:
        # A connection lost just now costs one more try (redis-py reconnects on
        # the next command); still unsent, the acks' entries stay pending and
        # come back by XAUTOCLAIM, as after a crash.
        if not await self._try_flush_acks():
            await self._try_flush_acks()

    def __aiter__(self) -> AsyncIterator[Inbound]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Inbound]:
        from redis.exceptions import ConnectionError, ResponseError, TimeoutError

        # first what this consumer had before a restart (or before a lost
        # connection swallowed a reply), then new entries
        recover = True
        delay = _FIRST_BACKOFF_S
        next_claim = time.monotonic() + self._claim_interval
        while True:
            await self._room.wait()
            try:
                if recover:
                    batch = await self._own_pending()
                    recover = False
                elif time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + self._claim_interval
                    batch = await self.claim()
                else:
                    batch = await self._read(b">")
            except (ConnectionError, TimeoutError, OSError):
                self._reconnects += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)
                recover = True
                continue
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # the server came back without the group (a restart with no
                # persistence): what it lost is lost, everything it has now
                # is newer than what was read, so the group starts at "0"
                self._reconnects += 1
                self._acks.clear()
                self._unacked.clear()
                self._room.set()
                await self._create_group("0")
                recover = True
                continue
            delay = _FIRST_BACKOFF_S
            for inbound in batch:
                yield inbound

    async def _own_pending(self) -> list[Inbound]:
        out: list[Inbound] = []
        start = b"0"
        while True:
            entries = await self._xreadgroup(start, block=False, count=self._count)
            if not entries:
                return out
            start = entries[-1][0]
            # after a reconnect, entries still in flight here are not news
            entries = [(i, f) for i, f in entries if i not in self._unacked]
            if entries:
                counts = await self._delivery_counts(entries[0][0], entries[-1][0])
                out += await self._inbounds(entries, counts)

    async def claim(self) -> list[Inbound]:
        """``XAUTOCLAIM`` entries idle longer than ``claim_min_idle_ms``; return them."""
        out: list[Inbound] = []
        cursor = b"0-0"
        while True:
            reply: Any = await self._client.xautoclaim(
                self._key, self._group, self._consumer, self._min_idle, cursor, count=self._count
            )
            cursor, entries = reply[0], reply[1]
            entries = [(i, f) for i, f in entries if f is not None]
            if entries:
                counts = await self._delivery_counts(entries[0][0], entries[-1][0])
                out += await self._inbounds(entries, counts)
            if cursor in (b"0-0", "0-0"):
                return out

    async def _read(self, start: bytes) -> list[Inbound]:
        entries = await self._xreadgroup(start, block=True)
        return await self._inbounds(entries, {})

    async def _xreadgroup(
        self, start: bytes, *, block: bool, count: int | None = None
    ) -> list[tuple[bytes, Any]]:
        await self._flush_acks()
        room = count or self._max_in_flight - len(self._unacked)
        # redis-py's reply types are a union of RESP2 and RESP3 shapes; RESP2 here
        reply: Any = await self._client.xreadgroup(
            self._group,
            self._consumer,
            {self._key: start},
            count=max(1, min(self._count, room)),
            block=self._block_ms if block else None,
        )
        if not reply:
            return []
        entries = reply[0][1]
        # a pending entry MAXLEN trimmed away has no fields: nothing to deliver
        self._acks += [i for i, f in entries if f is None]
        return [(i, f) for i, f in entries if f is not None]

    async def _delivery_counts(self, first: bytes, last: bytes) -> dict[bytes, int]:
        rows: Any = await self._client.xpending_range(
            self._key, self._group, first, last, self._count * 2, consumername=self._consumer
        )
        return {row["message_id"]: int(row["times_delivered"]) for row in rows}

    async def _inbounds(
        self, entries: list[tuple[bytes, Any]], counts: dict[bytes, int]
    ) -> list[Inbound]:
        out: list[Inbound] = []
        for entry_id, fields in entries:
            record = entry_record(fields)
            deliveries = counts.get(entry_id, 1)
            if record is None:
                # the raw fields, for whoever reads the dead letters
                raw = Record(None, fields.get(_RECORD, b""), _raw_fields(fields))
                inbound = Inbound(raw, self._key, entry_id, deliveries)
                if self._dead is not None:
                    reason = "stream entry is no record (no r field, or it does not decode)"
                    await self._dead.send(inbound, reason, source=self.name)
                    self._acks.append(entry_id)
                    continue
                record = inbound.record
            self._unacked.add(entry_id)
            self._received += 1
            out.append(Inbound(record, self._key, entry_id, deliveries))
        if len(self._unacked) >= self._max_in_flight:
            self._room.clear()
        return out

    async def ack(self, inbound: Inbound) -> None:
        """The entry is processed: ``XACK`` it (batched, see the module docstring)."""
        if inbound.position in self._unacked:
            self._unacked.discard(inbound.position)
            self._acked += 1
            self._acks.append(inbound.position)
            self._room.set()
        if len(self._acks) >= self._count:
            await self._try_flush_acks()

    async def nack(self, inbound: Inbound, reason: str) -> None:
        """Leave the entry pending: ``XAUTOCLAIM`` delivers it again after ``claim_min_idle_ms``."""
        if inbound.position in self._unacked:
            self._unacked.discard(inbound.position)
            self._nacked += 1
            self._room.set()

    async def _try_flush_acks(self) -> bool:
        """Send the acks; ``False`` if the connection was lost (they are kept,
        and sent with the next read or flush once it is back)."""
        from redis.exceptions import ConnectionError, ResponseError, TimeoutError

        try:
            await self._flush_acks()
        except (ConnectionError, TimeoutError, OSError):
            self._reconnects += 1
            return False
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # the group is gone with the server's data; the next read recreates it
            self._acks.clear()
        return True

    async def _flush_acks(self) -> None:
        if self._acks:
            acks, self._acks = self._acks, []
            try:
                await self._client.xack(self._key, self._group, *acks)
            except BaseException:
                self._acks = acks + self._acks  # sent again with the next flush
                raise

    def statistics(self) -> ConnectorStatistics:
        return ConnectorStatistics(
            self._received, self._acked, self._nacked, len(self._unacked), self._reconnects
        )
