"""The chunk stream and the meta bucket, made if missing (every gateway at
open, and again after a server restart lost them)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from icefloe.backplane.nats.layout import Layout, Options
from icefloe.backplane.publisher import TTL_S

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

__all__ = ["ensure_chunks", "ensure_meta"]

log = logging.getLogger("icefloe.backplane")


async def ensure_chunks(
    js: JetStreamContext, layout: Layout, options: Options, history: int
) -> None:
    """Make ``P_chunks``: ``history + 1`` messages per subject (the window's
    chunks and the abnormal end after them), ``TTL_S`` max age, ``max_bytes``
    in all, oldest dropped (an existing one is used as it is)."""
    from nats.js.api import DiscardPolicy, StorageType, StreamConfig
    from nats.js.errors import BadRequestError

    config = StreamConfig(
        name=layout.chunk_stream,
        subjects=[layout.chunk_subjects],
        storage=StorageType(options.storage),
        max_msgs_per_subject=history + 1,
        max_age=TTL_S,
        max_bytes=options.max_bytes,
        discard=DiscardPolicy.OLD,
        num_replicas=1,
    )
    try:
        await js.add_stream(config)
    except BadRequestError:  # made by a gateway with other limits: use it as is
        info = await js.stream_info(layout.chunk_stream)
        log.warning("backplane chunk stream exists with other limits: %s", info.config)


async def ensure_meta(js: JetStreamContext, layout: Layout, options: Options) -> KeyValue:
    """The ``P_meta`` bucket: one revision per key, ``TTL_S`` max age."""
    from nats.js.api import KeyValueConfig, StorageType
    from nats.js.errors import BucketNotFoundError

    try:
        return await js.key_value(layout.meta_bucket)
    except BucketNotFoundError:
        config = KeyValueConfig(
            bucket=layout.meta_bucket,
            history=1,
            ttl=TTL_S,
            storage=StorageType(options.storage),
        )
        return await js.create_key_value(config)
