"""Which position a consumer may commit, when records are acked out of order.

A broker partition (a Kafka partition, a RabbitMQ stream, a Kinesis shard)
hands out records in order; the application acks them in any order.
Committing a position tells the broker "everything up to here is processed",
so the commit point may only move past a record once that record *and every
earlier one* is acked: a crash then never skips an unprocessed record (it may
repeat processed ones, which the consumer's dedup drops).

:class:`AckTracker` holds one partition's delivered-but-not-released
positions, in delivery order, and answers :attr:`~AckTracker.released`: the
newest position that it and every earlier delivery are acked. Positions are
only compared for equality (Kinesis sequence numbers are strings; Kafka
offsets skip transaction markers). :class:`PartitionAcks` keeps one tracker
per partition and counts what is in flight over all of them. No I/O: the
connector stores the position these return. Memory is one entry per
delivered record not yet released, which the caller bounds (each source's
``max_in_flight``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["AckTracker", "PartitionAcks"]

P = TypeVar("P", bound=Hashable)


class AckTracker(Generic[P]):
    """One partition's delivered positions, acked in any order, released in order.

    :meth:`deliver` positions in the partition's order, :meth:`ack` them in
    any order; :attr:`released` is the newest delivered position whose every
    earlier delivery is acked too (``None`` before the first release).
    :meth:`rewind` forgets a delivery and every later one, for a consumer
    that seeks back.
    """

    __slots__ = ("_entries", "_pending", "_released")

    def __init__(self) -> None:
        # position -> acked?, for delivered positions not released yet, in delivery order
        self._entries: OrderedDict[P, bool] = OrderedDict()
        self._pending = 0
        self._released: P | None = None

    def __repr__(self) -> str:
        return f"AckTracker(released={self._released!r}, pending={self._pending})"

    def __len__(self) -> int:
        """How many delivered positions are held: not released yet, acked or not."""
        return len(self._entries)

    def __contains__(self, position: object) -> bool:
        """Whether ``position`` is delivered and not released yet (acked or not)."""
        return position in self._entries

    @property
    def released(self) -> P | None:
        """The newest position that it and every earlier delivery are acked."""
        return self._released

    @property
    def pending(self) -> int:
        """How many delivered positions are not acked yet."""
        return self._pending

    def deliver(self, position: P) -> None:
        """Record ``position`` as handed out, after every earlier delivery.

        :raises ValueError: ``position`` is delivered already and not released.
        """
        if position in self._entries:
            raise ValueError(f"position {position!r} is already outstanding")
        self._entries[position] = False
        self._pending += 1

    def ack(self, position: P) -> bool:
        """Mark ``position`` processed; False if it is not pending (unknown or acked)."""
        entries = self._entries
        if entries.get(position, True):
            return False
        entries[position] = True
        self._pending -= 1
        while entries:
            first, acked = next(iter(entries.items()))
            if not acked:
                break
            entries.popitem(last=False)
            self._released = first
        return True

    def rewind(self, position: P) -> int:
        """Forget ``position`` and every later delivery; returns how many were pending.

        Forgets nothing when ``position`` is not held (unknown or released):
        the released prefix is never forgotten.
        """
        entries = self._entries
        if position not in entries:
            return 0
        dropped = 0
        while True:
            last, acked = entries.popitem()
            dropped += not acked
            if last == position:
                break
        self._pending -= dropped
        return dropped


class PartitionAcks(Generic[P]):
    """An :class:`AckTracker` per partition, and the count in flight over all of them."""

    __slots__ = ("_open", "_trackers")

    def __init__(self) -> None:
        self._trackers: dict[str, AckTracker[P]] = {}
        self._open = 0

    def deliver(self, partition: str, position: P) -> None:
        """Record that ``position`` of ``partition`` was handed out (in partition order).

        :raises ValueError: the position is already outstanding.
        """
        tracker = self._trackers.get(partition)
        if tracker is None:
            tracker = self._trackers[partition] = AckTracker()
        tracker.deliver(position)
        self._open += 1

    def ack(self, partition: str, position: P) -> P | None:
        """Mark ``position`` processed; the new commit point, or ``None`` if it did not move.

        :raises ValueError: ``position`` was not delivered, or was already acked.
        """
        tracker = self._trackers.get(partition)
        held = 0 if tracker is None else len(tracker)
        if tracker is None or not tracker.ack(position):
            raise ValueError(f"position {position!r} of {partition!r} is not awaiting an ack")
        self._open -= 1
        if not tracker:
            del self._trackers[partition]  # nothing held: an idle partition costs nothing
        # the commit point moved iff the ack released entries
        return tracker.released if len(tracker) < held else None

    def outstanding(self) -> int:
        """Records delivered and not acked, over every partition."""
        return self._open

    def waiting(self, partition: str) -> int:
        """Records of ``partition`` delivered and not acked."""
        tracker = self._trackers.get(partition)
        return 0 if tracker is None else tracker.pending
