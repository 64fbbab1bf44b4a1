"""Amazon Kinesis: :class:`KinesisSource`, shard by shard, resharding-aware, checkpointed.

The source lists the stream's shards (again every ``discover_interval_s``,
and when a shard ends) and reads each open shard with ``GetRecords``. A
shard made by resharding is read only once all its parents are finished, so
a key that moved from a parent to a child keeps its order. Each shard starts
after its checkpoint (``AFTER_SEQUENCE_NUMBER``) or, without one, at
``TRIM_HORIZON`` (or ``LATEST``). Acks commit per shard in sequence order:
the end of a shard's acked prefix is saved to :class:`Checkpoints` every
``commit_every`` acks and on close, and a shard whose records are all acked
after its end is saved as :data:`SHARD_END`, which lets its children start
after a restart too.

Checkpoints live where ``checkpoints=`` says, or in an icefloe store with
``store=`` (:class:`~icefloe.connectors.kinesis_shards.StoreCheckpoints`): a
source started again in a new process over the same store and consumer name
resumes each shard ``AFTER_SEQUENCE_NUMBER`` of its checkpoint; the records
acked after the last save come again (at least once), and a consumer drops
them by their chunk's (stream id, seq).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from icefloe.connectors.handout import Handout
from icefloe.connectors.kinesis_client import ClientOptions, StreamClient, backoff, unpack
from icefloe.connectors.kinesis_shards import (
    SHARD_END,
    Checkpoints,
    MemoryCheckpoints,
    ShardInfo,
    StoreCheckpoints,
    readable_shards,
)
from icefloe.connectors.protocol import ConnectorStatistics, Inbound

if TYPE_CHECKING:
    from icefloe.store.protocol import Store

__all__ = ["KinesisSource"]


class KinesisSource:
    """Reads one Kinesis stream shard by shard, resharding-aware (see the module docstring).

    :param stream: the stream's name.
    :param consumer_name: names this consumer's checkpoints (scope
        ``"<stream>/<consumer_name>"``); required, non-empty.
    :param checkpoints: where checkpoints live (default: in memory, lost with
        the process).
    :param store: keep checkpoints in this icefloe store instead
        (:class:`~icefloe.connectors.kinesis_shards.StoreCheckpoints`): a
        restarted source resumes after each shard's last checkpoint. Open it
        before the source opens; give ``checkpoints`` or ``store``, not both.
    :param latest: start a shard without a checkpoint at ``LATEST`` instead of
        ``TRIM_HORIZON``.
    :param max_in_flight: the most records delivered and not acked; shard
        readers stop calling ``GetRecords`` at the limit.
    :param commit_every: save a shard's checkpoint after this many more of its
        records were acked in order (and always on close).
    :param batch_limit: ``Limit`` of one ``GetRecords`` call (1 to 10000).
    :param poll_interval_s: how long a shard reader waits after an empty read.
    :param discover_interval_s: how often the shard list is read again.
    :raises ValueError: ``consumer_name`` is empty, a limit is out of range, or
        both ``checkpoints`` and ``store`` are given.
    """

    def __init__(
        self,
        stream: str,
        *,
        consumer_name: str,
        checkpoints: Checkpoints | None = None,
        store: Store | None = None,
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
        if checkpoints is not None and store is not None:
            raise ValueError("give checkpoints or store, not both")
        if store is not None:
            checkpoints = StoreCheckpoints(store)
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
        self._kinesis = StreamClient(
            stream,
            ClientOptions(region, endpoint_url, credentials),
            create_shards=create_shards,
            client=client,
        )
        self._commit_every = commit_every
        self._batch_limit = batch_limit
        self._poll_s = poll_interval_s
        self._discover_s = discover_interval_s
        self._client: Any = None
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
        try:
            self._client = await self._kinesis.open()
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
                await asyncio.sleep(backoff(failures, self._poll_s, 5.0))
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
            await self._kinesis.close()

    def statistics(self) -> ConnectorStatistics:
        return self._handout.statistics(self._reconnects)
