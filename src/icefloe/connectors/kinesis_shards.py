"""Kinesis shard logic the source builds on: lineage after resharding, and checkpoints.

**Lineage.** Resharding closes a shard and opens children (a split: two
children of one parent; a merge: one child of two parents). A key's records
move to a child, so reading a child before its parents are finished would put
that key's newer records before its older ones. :func:`readable_shards` says
which shards may be read: those whose listed parents are all finished.

**Checkpoints.** A :class:`Checkpoints` keeps each shard's position per
consumer ``scope``: the sequence number of the last record of the shard's
acked prefix, or :data:`SHARD_END` once the shard was read to its end and all
of it acked (which is what lets its children start after a restart).
:class:`StoreCheckpoints` keeps them in an icefloe store
(:meth:`~icefloe.store.protocol.Store.put_position`), so they survive a
restart of the process; :class:`MemoryCheckpoints` in a dict.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, runtime_checkable

from icefloe.exceptions import CorruptRecord

if TYPE_CHECKING:
    from icefloe.store.protocol import Store

__all__ = [
    "NAMESPACE_PREFIX",
    "SHARD_END",
    "Checkpoints",
    "MemoryCheckpoints",
    "ShardInfo",
    "StoreCheckpoints",
    "readable_shards",
]

#: the checkpoint of a shard that ended and whose records were all acked
SHARD_END: Final = "SHARD_END"
#: what :class:`StoreCheckpoints` puts before a scope to make the store namespace
NAMESPACE_PREFIX: Final = "kinesis/"


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


class StoreCheckpoints:
    """:class:`Checkpoints` in an icefloe store: they survive a restart.

    A scope is the store namespace ``"kinesis/<scope>"``, a shard id its key,
    and a checkpoint a state record of :mod:`icefloe.store.records` (CRC32C):
    a corrupted one is :class:`~icefloe.exceptions.CorruptRecord` on load,
    never a silent restart from the shard's beginning. The store must be
    open while the source runs (the served flow's store is).
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    async def load(self, scope: str) -> dict[str, str]:
        """:raises CorruptRecord: a stored checkpoint fails its checks (naming the shard)."""
        from icefloe.store.records import decode_state

        found = await self._store.positions(NAMESPACE_PREFIX + scope)
        loaded: dict[str, str] = {}
        for shard_id, record in found.items():
            try:
                checkpoint = decode_state(record)
            except CorruptRecord as exc:
                raise CorruptRecord("state", f"checkpoint of shard {shard_id}: {exc}") from exc
            if not isinstance(checkpoint, str):
                raise CorruptRecord("state", f"checkpoint of shard {shard_id} is not a string")
            loaded[shard_id] = checkpoint
        return loaded

    async def save(self, scope: str, shard_id: str, checkpoint: str) -> None:
        from icefloe.store.records import encode_state

        await self._store.put_position(NAMESPACE_PREFIX + scope, shard_id, encode_state(checkpoint))


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
