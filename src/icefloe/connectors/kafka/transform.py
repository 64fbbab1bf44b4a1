"""Consume-transform-produce in Kafka transactions: :func:`transform`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from confluent_kafka import KafkaException

from icefloe.connectors.kafka.sink import KafkaSink
from icefloe.connectors.kafka.source import KafkaSource
from icefloe.connectors.protocol import DeliveryFailed, Inbound
from icefloe.connectors.record import Record

__all__ = ["transform"]


async def transform(
    source: KafkaSource,
    sink: KafkaSink,
    fn: Callable[[Record], Awaitable[Sequence[Record]]],
    *,
    batch_size: int = 500,
    batch_wait_s: float = 0.1,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Consume-transform-produce, exactly once: each batch is one transaction.

    For each batch of up to ``batch_size`` records (or what arrived within
    ``batch_wait_s`` of the first), sends ``fn(record)`` for each, then commits
    the outputs and the batch's input offsets together. A failed transaction is
    aborted and its batch read again. Returns when ``stop()`` is true between
    batches; runs until cancelled otherwise.

    :param sink: a sink with a ``transactional_id``, opened.
    :raises ValueError: ``batch_size`` < 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    iterator = aiter(source)
    pending: asyncio.Task[Inbound] | None = None
    try:
        while not stop():
            batch: list[Inbound] = []
            deadline: float | None = None
            while len(batch) < batch_size:
                if pending is None:
                    pending = asyncio.ensure_future(anext(iterator))
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                done, _ = await asyncio.wait({pending}, timeout=timeout)
                if not done:
                    break
                batch.append(pending.result())
                pending = None
                if deadline is None:
                    deadline = time.monotonic() + batch_wait_s
            await _transact(source, sink, fn, batch)
    finally:
        if pending is not None:
            pending.cancel()


async def _transact(
    source: KafkaSource,
    sink: KafkaSink,
    fn: Callable[[Record], Awaitable[Sequence[Record]]],
    batch: Sequence[Inbound],
) -> None:
    await sink.begin()
    try:
        for inbound in batch:
            for out in await fn(inbound.record):
                await sink.send(out)
        offsets = source.settle_in_transaction(batch)
        await sink.commit(offsets, source.group_metadata())
    except (KafkaException, DeliveryFailed):
        await sink.abort()
        await source.rewind(batch)
