"""Amazon Kinesis Data Streams: :class:`KinesisSink` and :class:`KinesisSource` over aiobotocore.

Installed by the ``kinesis`` extra (``pip install icefloe[kinesis]``). Both
take an ``endpoint_url`` (a local emulator, a VPC endpoint) and credentials,
or use botocore's usual chain when those are ``None``.

**Envelope.** Kinesis records have a partition key and a data blob, no
headers. The partition key is the record's ``key`` (a chunk's stream id:
UTF-8, 1 to 256 characters; a record without a key gets a random one) and the
blob is a msgpack array ``[1, headers, value, keyed]``: the envelope version,
the ``[name, value]`` header pairs (name a string, value binary, order and
repeats kept), the value (binary) and whether the key was the record's own.
A blob that is not such an envelope is read back as a record with that blob
as its value and no headers, so a consumer's decoding names it a poison
record instead of the source failing.

**Sink: order per key across partial failures.** ``put_records`` writes up
to 500 records / 5 MiB per call and may fail some of them
(``FailedRecordCount``; throttling or internal errors), and nothing orders a
retried record after records of the same key that succeeded in that call. So
a call carries at most ``records_per_key`` records per key (default 1): with
one, a key's next record is sent only after its previous one was written, and
retries keep each stream's order exactly. Many streams still share each call,
so throughput grows with the number of streams. A failed record stays at the
head of its key's queue and is retried with exponential backoff (``retries``
times, then reported by :meth:`KinesisSink.flush` as
:class:`~icefloe.connectors.protocol.DeliveryFailed`). ``records_per_key`` > 1
sends faster for few streams, at the price that a partial failure can put a
key's records out of order in the shard (the consumer's reorder buffer puts
them back within its limit). ``put_record`` with ``SequenceNumberForOrdering``
would also keep order, but one call per record is far slower than batching
across keys.

**Source: shards, lineage, checkpoints.** The source lists the stream's
shards (again every ``discover_interval_s``, and when a shard ends) and reads
each open shard with ``GetRecords``. A shard made by resharding is read only
once all its parents are finished, so a key that moved from a parent to a
child keeps its order. Each shard starts after its checkpoint
(``AFTER_SEQUENCE_NUMBER``) or, without one, at ``TRIM_HORIZON`` (or
``LATEST``). Acks commit per shard in sequence order: the end of a shard's
acked prefix is saved to :class:`Checkpoints` every ``commit_every`` acks and
on close, and a shard whose records are all acked after its end is saved as
:data:`SHARD_END`, which lets its children start after a restart too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import random
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Final, NamedTuple, Protocol, runtime_checkable

import msgspec
from aiobotocore.session import get_session  # type: ignore[import-untyped]

from icefloe.connectors.handout import Handout
from icefloe.connectors.protocol import ConnectorStatistics, Inbound
from icefloe.connectors.record import Record
from icefloe.connectors.undelivered import Undelivered
from icefloe.exceptions import InvalidState

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_RECORDS",
    "MAX_RECORD_BYTES",
    "SHARD_END",
    "Checkpoints",
    "KinesisSink",
    "KinesisSource",
    "MemoryCheckpoints",
    "ShardInfo",
    "ensure_stream",
    "pack",
    "readable_shards",
    "unpack",
]

#: the most records in one ``put_records`` call
MAX_BATCH_RECORDS: Final = 500
#: the most bytes (blobs and partition keys) in one ``put_records`` call
MAX_BATCH_BYTES: Final = 5 * 1024 * 1024
#: the most bytes of one record (blob and partition key)
MAX_RECORD_BYTES: Final = 1024 * 1024
#: the checkpoint of a shard that ended and whose records were all acked
SHARD_END: Final = "SHARD_END"

_ENVELOPE_VERSION: Final = 1
_encoder = msgspec.msgpack.Encoder()


class _Envelope(msgspec.Struct, array_like=True):
    version: int
    headers: list[tuple[str, bytes]]
    value: bytes
    keyed: bool


_decoder = msgspec.msgpack.Decoder(_Envelope)


def pack(record: Record) -> tuple[str, bytes]:
    """The partition key and data blob carrying ``record``.

    :raises ValueError: the key is not UTF-8 or not 1 to 256 characters.
    """
    if record.key is None:
        key = uuid.uuid4().hex
    else:
        try:
            key = record.key.decode()
        except UnicodeDecodeError:
            raise ValueError("record key must be UTF-8 (it is the Kinesis partition key)") from None
        if not 1 <= len(key) <= 256:
            raise ValueError(f"record key must be 1 to 256 characters, got {len(key)}")
    envelope = _Envelope(
        _ENVELOPE_VERSION, list(record.headers), record.value, record.key is not None
    )
    return key, _encoder.encode(envelope)


def unpack(partition_key: str, blob: bytes) -> Record:
    """The record a Kinesis record carries (a foreign blob comes back whole, without headers)."""
    try:
        envelope = _decoder.decode(blob)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Record(partition_key.encode(), blob)
    if envelope.version != _ENVELOPE_VERSION:
        return Record(partition_key.encode(), blob)
    key = partition_key.encode() if envelope.keyed else None
    return Record(key, envelope.value, tuple(envelope.headers))


class _Client(NamedTuple):
    region: str
    endpoint_url: str | None
    credentials: tuple[str, str] | None

    def create(self) -> Any:
        options: dict[str, Any] = {"region_name": self.region}
        if self.endpoint_url is not None:
            options["endpoint_url"] = self.endpoint_url
        if self.credentials is not None:
            options["aws_access_key_id"], options["aws_secret_access_key"] = self.credentials
        return get_session().create_client("kinesis", **options)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


async def ensure_stream(client: Any, stream: str, shards: int, timeout_s: float = 30.0) -> None:
    """Create ``stream`` with ``shards`` shards if it does not exist; wait until it is ACTIVE."""
    try:
        await client.describe_stream_summary(StreamName=stream)
    except Exception as exc:
        if _error_code(exc) != "ResourceNotFoundException":
            raise
        with contextlib.suppress(Exception):
            await client.create_stream(StreamName=stream, ShardCount=shards)
    async with asyncio.timeout(timeout_s):
        delay = 0.05
        while True:
            summary = await client.describe_stream_summary(StreamName=stream)
            if summary["StreamDescriptionSummary"]["StreamStatus"] in ("ACTIVE", "UPDATING"):
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


def _backoff(attempt: int, base_s: float, cap_s: float) -> float:
    # full jitter: spreads the retries of many sinks hitting one shard
    return random.uniform(0, min(cap_s, base_s * 2**attempt))


class _Pending(NamedTuple):
    record: Record
    key: str
    blob: bytes


class KinesisSink:
    """Writes records to one Kinesis stream (see the module docstring).

    :param stream: the stream's name.
    :param create_shards: create the stream with this many shards when it
        is missing (``None``: it must exist).
    :param max_in_flight: the most records sent and not yet written; ``send``
        waits at the limit.
    :param records_per_key: the most records of one key in one call (1: strict
        order per key across retries).
    :param retries: retries of a failed record before it is reported.
    :param client: an aiobotocore Kinesis client to use instead of making one
        (it is not closed by the sink).
    :raises ValueError: a limit is out of range.
    """

    def __init__(
        self,
        stream: str,
        *,
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        credentials: tuple[str, str] | None = None,
        create_shards: int | None = None,
        max_in_flight: int = 10_000,
        records_per_key: int = 1,
        retries: int = 8,
        backoff_s: float = 0.05,
        backoff_cap_s: float = 2.0,
        client: Any = None,
    ) -> None:
        if max_in_flight < 1 or records_per_key < 1 or retries < 0 or backoff_s < 0:
            raise ValueError(
                "max_in_flight and records_per_key must be >= 1, retries and backoff_s >= 0"
            )
        self._stream = stream
        self._options = _Client(region, endpoint_url, credentials)
        self._create_shards = create_shards
        self._max_in_flight = max_in_flight
        self._per_key = records_per_key
        self._retries = retries
        self._backoff = (backoff_s, backoff_cap_s)
        self._client: Any = client
        self._owned: contextlib.AsyncExitStack | None = None
        # key -> its records not written yet, oldest first; keys in arrival order
        self._queues: OrderedDict[str, deque[_Pending]] = OrderedDict()
        self._attempts: dict[int, int] = {}
        self._queued = 0
        self._changed = asyncio.Condition()
        self._pump: asyncio.Task[None] | None = None
        self._failures = Undelivered()
        self._sent = 0
        self._written = 0
        self._failed = 0
        self._retried = 0
        self._calls = 0
        self._closed = False

    @property
    def name(self) -> str:
        return f"kinesis:{self._stream}"

    @property
    def retried(self) -> int:
        """Records sent again after a partial failure or a failed call."""
        return self._retried

    @property
    def calls(self) -> int:
        """``put_records`` calls made."""
        return self._calls

    async def __aenter__(self) -> KinesisSink:
        if self._client is None:
            self._owned = contextlib.AsyncExitStack()
            self._client = await self._owned.enter_async_context(self._options.create())
        try:
            if self._create_shards is not None:
                await ensure_stream(self._client, self._stream, self._create_shards)
        except BaseException:
            await self.close()  # a failed open releases the client it made
            raise
        self._pump = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, record: Record) -> None:
        """Queue ``record``; waits while ``max_in_flight`` records are unwritten.

        :raises ValueError: the key is not a valid partition key or the record
            is over :data:`MAX_RECORD_BYTES`.
        :raises InvalidState: the sink is not open.
        """
        if self._pump is None or self._closed:
            raise InvalidState(f"{self.name} is not open: use it in `async with`")
        key, blob = pack(record)
        if len(blob) + len(key.encode()) > MAX_RECORD_BYTES:
            raise ValueError(f"record is over the Kinesis limit of {MAX_RECORD_BYTES} bytes")
        async with self._changed:
            await self._changed.wait_for(lambda: self._queued < self._max_in_flight)
            self._queues.setdefault(key, deque()).append(_Pending(record, key, blob))
            self._queued += 1
            self._sent += 1
            self._changed.notify_all()

    def _next_batch(self) -> list[_Pending]:
        """The heads of the key queues, up to the call's record and byte limits."""
        batch: list[_Pending] = []
        size = 0
        for queue in self._queues.values():
            for pending in list(queue)[: self._per_key]:
                cost = len(pending.blob) + len(pending.key.encode())
                if len(batch) == MAX_BATCH_RECORDS or size + cost > MAX_BATCH_BYTES:
                    return batch
                batch.append(pending)
                size += cost
        return batch

    async def _run(self) -> None:
        attempt = 0  # consecutive calls with a failure, for the backoff
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: self._queued > 0)
                batch = self._next_batch()
            failed = await self._put(batch)
            async with self._changed:
                self._changed.notify_all()
            if failed:
                await asyncio.sleep(_backoff(attempt, *self._backoff))
                attempt += 1
            else:
                attempt = 0

    async def _put(self, batch: list[_Pending]) -> bool:
        """One ``put_records`` call; settles what it can; ``True`` if anything failed."""
        entries = [{"Data": p.blob, "PartitionKey": p.key} for p in batch]
        self._calls += 1
        try:
            response = await self._client.put_records(StreamName=self._stream, Records=entries)
            results: Sequence[dict[str, Any]] = response["Records"]
        except Exception as exc:
            reason = f"put_records failed: {_error_code(exc) or type(exc).__name__}"
            results = [{"ErrorCode": reason}] * len(batch)
        any_failed = False
        for pending, result in zip(batch, results, strict=True):
            if result.get("ErrorCode"):
                any_failed = True
                self._retry_or_drop(pending, str(result["ErrorCode"]))
            else:
                self._done(pending)
                self._written += 1
        return any_failed

    def _retry_or_drop(self, pending: _Pending, reason: str) -> None:
        attempts = self._attempts.get(id(pending), 0) + 1
        if attempts <= self._retries:
            self._attempts[id(pending)] = attempts
            self._retried += 1
            return  # stays at the head of its key's queue
        self._failed += 1
        self._failures.add(pending.record, f"{reason} (after {attempts} attempts)")
        self._done(pending)

    def _done(self, pending: _Pending) -> None:
        queue = self._queues[pending.key]
        if queue[0] is pending:
            queue.popleft()
        else:  # records_per_key > 1 and an earlier record of the key failed
            index = next(i for i, queued in enumerate(queue) if queued is pending)
            del queue[index]
        self._attempts.pop(id(pending), None)
        if not queue:
            del self._queues[pending.key]
        self._queued -= 1

    async def flush(self) -> None:
        """Wait until every record sent so far is written or given up.

        :raises DeliveryFailed: some records failed after ``retries`` retries.
        """
        async with self._changed:
            await self._changed.wait_for(lambda: self._queued == 0)
        self._failures.report()

    async def close(self) -> None:
        """Flush, then stop and release the client. Idempotent.

        :raises DeliveryFailed: as :meth:`flush`.
        """
        if self._closed:
            return
        try:
            if self._pump is not None:
                await self.flush()
        finally:
            self._closed = True
            if self._pump is not None:
                self._pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._pump
            if self._owned is not None:
                await self._owned.aclose()

    def statistics(self) -> ConnectorStatistics:
        return ConnectorStatistics(
            records=self._sent,
            confirmed=self._written,
            failed=self._failed,
            in_flight=self._queued,
            reconnects=0,
        )


@runtime_checkable
class Checkpoints(Protocol):
    """Where a :class:`KinesisSource` keeps each shard's checkpoint.

    ``scope`` names the stream and the consumer (``"orders/billing"``), so
    several consumers of a stream keep their own positions; the value is a
    sequence number, or :data:`SHARD_END`.
    """

    async def load(self, scope: str) -> dict[str, str]:
        """Every shard's checkpoint in ``scope``: shard id -> sequence number."""
        ...

    async def save(self, scope: str, shard_id: str, checkpoint: str) -> None:
        """Replace ``shard_id``'s checkpoint in ``scope``."""
        ...


class MemoryCheckpoints:
    """:class:`Checkpoints` in a dict: for tests and single-process use."""

    def __init__(self) -> None:
        self._scopes: dict[str, dict[str, str]] = {}

    async def load(self, scope: str) -> dict[str, str]:
        return dict(self._scopes.get(scope, {}))

    async def save(self, scope: str, shard_id: str, checkpoint: str) -> None:
        self._scopes.setdefault(scope, {})[shard_id] = checkpoint


class ShardInfo(NamedTuple):
    """What the source needs of a ``ListShards`` entry."""

    shard_id: str
    parents: tuple[str, ...] = ()

    @classmethod
    def from_listing(cls, shard: dict[str, Any]) -> ShardInfo:
        parents = tuple(
            str(shard[name])
            for name in ("ParentShardId", "AdjacentParentShardId")
            if shard.get(name)
        )
        return cls(str(shard["ShardId"]), parents)


def readable_shards(shards: Iterable[ShardInfo], finished: set[str]) -> list[str]:
    """The shards that may be read now: not finished, every listed parent finished.

    A parent no longer listed has aged out of the stream (retention), so it
    holds nothing left to read and does not hold its children back.
    """
    listed = {shard.shard_id for shard in shards}
    return [
        shard.shard_id
        for shard in shards
        if shard.shard_id not in finished
        and all(parent in finished or parent not in listed for parent in shard.parents)
    ]


class KinesisSource:
    """Reads one Kinesis stream shard by shard, resharding-aware (see the module docstring).

    :param stream: the stream's name.
    :param consumer_name: names this consumer's checkpoints (scope
        ``"<stream>/<consumer_name>"``); required, non-empty.
    :param checkpoints: where checkpoints live (default: in memory, lost with
        the process).
    :param latest: start a shard without a checkpoint at ``LATEST`` instead of
        ``TRIM_HORIZON``.
    :param max_in_flight: the most records delivered and not acked; shard
        readers stop calling ``GetRecords`` at the limit.
    :param commit_every: save a shard's checkpoint after this many more of its
        records were acked in order (and always on close).
    :param batch_limit: ``Limit`` of one ``GetRecords`` call (1 to 10000).
    :param poll_interval_s: how long a shard reader waits after an empty read.
    :param discover_interval_s: how often the shard list is read again.
    :raises ValueError: ``consumer_name`` is empty or a limit is out of range.
    """

    def __init__(
        self,
        stream: str,
        *,
        consumer_name: str,
        checkpoints: Checkpoints | None = None,
        latest: bool = False,
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        credentials: tuple[str, str] | None = None,
        create_shards: int | None = None,
        max_in_flight: int = 1000,
        commit_every: int = 100,
        batch_limit: int = 1000,
        poll_interval_s: float = 0.2,
        discover_interval_s: float = 5.0,
        client: Any = None,
    ) -> None:
        if not consumer_name:
            raise ValueError("consumer_name must be non-empty (checkpoints are kept under it)")
        if max_in_flight < 1 or commit_every < 1 or not 1 <= batch_limit <= 10_000:
            raise ValueError("max_in_flight and commit_every must be >= 1, batch_limit 1 to 10000")
        if not (poll_interval_s > 0 and discover_interval_s > 0):
            raise ValueError("poll_interval_s and discover_interval_s must be > 0")
        self._stream = stream
        self._scope = f"{stream}/{consumer_name}"
        self._checkpoints: Checkpoints = (
            checkpoints if checkpoints is not None else MemoryCheckpoints()
        )
        self._first = "LATEST" if latest else "TRIM_HORIZON"
        self._latest_since: dict[str, datetime.datetime] = {}
        self._options = _Client(region, endpoint_url, credentials)
        self._create_shards = create_shards
        self._commit_every = commit_every
        self._batch_limit = batch_limit
        self._poll_s = poll_interval_s
        self._discover_s = discover_interval_s
        self._client: Any = client
        self._owned: contextlib.AsyncExitStack | None = None
        self._saved: dict[str, str] = {}
        self._committed: dict[str, str] = {}
        self._since_save: dict[str, int] = {}
        self._finished: set[str] = set()
        self._ended: set[str] = set()
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._discoverer: asyncio.Task[None] | None = None
        self._rediscover = asyncio.Event()
        self._handout: Handout[str] = Handout(max_in_flight)
        self._reconnects = 0

    @property
    def name(self) -> str:
        return f"kinesis:{self._stream}"

    @property
    def shards_read(self) -> list[str]:
        """The shards this source has started reading, in the order it started them."""
        return list(self._readers)

    @property
    def finished_shards(self) -> set[str]:
        """Shards read to their end with every record acked (checkpoint :data:`SHARD_END`)."""
        return set(self._finished)

    async def __aenter__(self) -> KinesisSource:
        if self._client is None:
            self._owned = contextlib.AsyncExitStack()
            self._client = await self._owned.enter_async_context(self._options.create())
        try:
            if self._create_shards is not None:
                await ensure_stream(self._client, self._stream, self._create_shards)
            self._saved = await self._checkpoints.load(self._scope)
            self._finished = {shard for shard, mark in self._saved.items() if mark == SHARD_END}
            await self._discover()
        except BaseException:
            await self.close()  # a failed open (no such stream...) releases the client
            raise
        # shards found from now on are new (children of a reshard): read them whole
        self._first = "TRIM_HORIZON"
        self._discoverer = asyncio.create_task(self._discover_loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _list_shards(self) -> list[ShardInfo]:
        shards: list[ShardInfo] = []
        page = await self._client.list_shards(StreamName=self._stream)
        while True:
            shards.extend(ShardInfo.from_listing(shard) for shard in page["Shards"])
            token = page.get("NextToken")
            if not token:
                return shards
            page = await self._client.list_shards(NextToken=token)

    async def _discover(self) -> None:
        shards = await self._list_shards()
        for shard_id in readable_shards(shards, self._finished):
            if shard_id not in self._readers:
                # the first iterator is taken now, so LATEST means "after the
                # source opened", not "after its reader task first ran"
                since = datetime.datetime.now(datetime.UTC)
                first = await self._iterator(shard_id, self._saved.get(shard_id))
                if self._first == "LATEST" and shard_id not in self._saved:
                    self._latest_since[shard_id] = since
                self._readers[shard_id] = asyncio.create_task(self._read_shard(shard_id, first))

    async def _discover_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._discover_s):
                    await self._rediscover.wait()
            self._rediscover.clear()
            try:
                await self._discover()
            except Exception:
                self._reconnects += 1  # the next round tries again

    async def _iterator(self, shard_id: str, after: str | None) -> str:
        options: dict[str, Any] = {"StreamName": self._stream, "ShardId": shard_id}
        if after is None and shard_id in self._latest_since:
            # a LATEST shard read nothing yet: again from when the source opened
            options["ShardIteratorType"] = "AT_TIMESTAMP"
            options["Timestamp"] = self._latest_since[shard_id]
        elif after is None:
            options["ShardIteratorType"] = self._first
        else:
            options["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            options["StartingSequenceNumber"] = after
        response = await self._client.get_shard_iterator(**options)
        return str(response["ShardIterator"])

    async def _read_shard(self, shard_id: str, iterator: str | None) -> None:
        last = self._saved.get(shard_id)
        failures = 0
        while True:
            try:
                if iterator is None:
                    iterator = await self._iterator(shard_id, last)
                response = await self._client.get_records(
                    ShardIterator=iterator, Limit=self._batch_limit
                )
            except Exception:
                # expired iterator, throttling, lost connection: start again after `last`
                self._reconnects += 1
                iterator = None
                await asyncio.sleep(_backoff(failures, self._poll_s, 5.0))
                failures += 1
                continue
            failures = 0
            for entry in response["Records"]:
                if not await self._deliver(shard_id, entry):
                    return
                last = str(entry["SequenceNumber"])
            iterator = response.get("NextShardIterator")
            if iterator is None:
                await self._shard_ended(shard_id)
                return
            if not response["Records"]:
                await asyncio.sleep(self._poll_s)

    async def _deliver(self, shard_id: str, entry: dict[str, Any]) -> bool:
        sequence = str(entry["SequenceNumber"])
        record = unpack(str(entry["PartitionKey"]), bytes(entry["Data"]))
        # waiting in put stops this shard's GetRecords calls: backpressure
        return await self._handout.put(Inbound(record, shard_id, sequence))

    async def _shard_ended(self, shard_id: str) -> None:
        self._ended.add(shard_id)
        await self._maybe_finish(shard_id)

    async def _maybe_finish(self, shard_id: str) -> None:
        if shard_id in self._ended and self._handout.waiting(shard_id) == 0:
            self._ended.discard(shard_id)
            await self._checkpoints.save(self._scope, shard_id, SHARD_END)
            self._saved[shard_id] = SHARD_END
            self._finished.add(shard_id)
            self._rediscover.set()  # its children may be readable now

    def __aiter__(self) -> AsyncIterator[Inbound]:
        return self._handout.records()

    async def ack(self, inbound: Inbound) -> None:
        """Checkpoint ``inbound``'s shard up to it once every earlier record is acked.

        :raises ValueError: ``inbound`` was not delivered by this source or is acked already.
        """
        shard_id = inbound.partition
        committed = await self._handout.ack(inbound)
        if committed is not None:
            self._committed[shard_id] = committed
            count = self._since_save.get(shard_id, 0) + 1
            self._since_save[shard_id] = count
            if count >= self._commit_every:
                await self._save(shard_id)
        await self._maybe_finish(shard_id)

    async def nack(self, inbound: Inbound, reason: str) -> None:
        """Yield ``inbound`` again before newer records; its shard's checkpoint waits for it."""
        await self._handout.nack(inbound)

    async def _save(self, shard_id: str) -> None:
        committed = self._committed.get(shard_id)
        if committed is None or self._saved.get(shard_id) in (committed, SHARD_END):
            return
        await self._checkpoints.save(self._scope, shard_id, committed)
        self._saved[shard_id] = committed
        self._since_save[shard_id] = 0

    async def close(self) -> None:
        """Stop reading, save every shard's acked prefix, release the client. Idempotent."""
        if not await self._handout.close():
            return
        tasks = [*self._readers.values()]
        if self._discoverer is not None:
            tasks.append(self._discoverer)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            for shard_id in list(self._committed):
                await self._save(shard_id)
        finally:
            if self._owned is not None:
                await self._owned.aclose()

    def statistics(self) -> ConnectorStatistics:
        return self._handout.statistics(self._reconnects)
