"""Amazon Kinesis: :class:`KinesisSink`, ``put_records`` batching with partial-failure retry.

**Order per key across partial failures.** ``put_records`` writes up
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
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any, NamedTuple

from icefloe.connectors.kinesis_client import (
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    MAX_RECORD_BYTES,
    ClientOptions,
    StreamClient,
    backoff,
    error_code,
    pack,
)
from icefloe.connectors.protocol import ConnectorStatistics
from icefloe.connectors.record import Record
from icefloe.connectors.undelivered import Undelivered
from icefloe.exceptions import InvalidState

__all__ = ["KinesisSink"]


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
        self._kinesis = StreamClient(
            stream,
            ClientOptions(region, endpoint_url, credentials),
            create_shards=create_shards,
            client=client,
        )
        self._max_in_flight = max_in_flight
        self._per_key = records_per_key
        self._retries = retries
        self._backoff = (backoff_s, backoff_cap_s)
        self._client: Any = None
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
        try:
            self._client = await self._kinesis.open()
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
                await asyncio.sleep(backoff(attempt, *self._backoff))
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
            reason = f"put_records failed: {error_code(exc) or type(exc).__name__}"
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
            await self._kinesis.close()

    def statistics(self) -> ConnectorStatistics:
        return ConnectorStatistics(
            records=self._sent,
            confirmed=self._written,
            failed=self._failed,
            in_flight=self._queued,
            reconnects=0,
        )
