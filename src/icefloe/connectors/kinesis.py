"""Amazon Kinesis Data Streams: :class:`KinesisSink` and :class:`KinesisSource` over aiobotocore.

Installed by the ``kinesis`` extra (``pip install icefloe[kinesis]``). Both
take an ``endpoint_url`` (a local emulator, a VPC endpoint) and credentials,
or use botocore's usual chain when those are ``None``.

This module is the public face; the code lives along its seams:

* :mod:`icefloe.connectors.kinesis_client`: the envelope (:func:`pack`,
  :func:`unpack`), the client options, :func:`ensure_stream`, the limits;
* :mod:`icefloe.connectors.kinesis_sink`: :class:`KinesisSink`,
  ``put_records`` batching, order per key across partial failures;
* :mod:`icefloe.connectors.kinesis_shards`: lineage after resharding
  (:func:`readable_shards`) and where checkpoints live (:class:`Checkpoints`,
  :class:`MemoryCheckpoints`, :class:`StoreCheckpoints`);
* :mod:`icefloe.connectors.kinesis_source`: :class:`KinesisSource`, shard
  readers, acks committed per shard, checkpoints saved and resumed.
"""

from __future__ import annotations

from icefloe.connectors.kinesis_client import (
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    MAX_RECORD_BYTES,
    ensure_stream,
    pack,
    unpack,
)
from icefloe.connectors.kinesis_shards import (
    SHARD_END,
    Checkpoints,
    MemoryCheckpoints,
    ShardInfo,
    StoreCheckpoints,
    readable_shards,
)
from icefloe.connectors.kinesis_sink import KinesisSink
from icefloe.connectors.kinesis_source import KinesisSource

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
    "StoreCheckpoints",
    "ensure_stream",
    "pack",
    "readable_shards",
    "unpack",
]
