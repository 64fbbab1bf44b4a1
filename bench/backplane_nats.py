"""The NATS JetStream half of ``bench/backplane.py`` (``--nats URL``).

* ``nats``: the producer's :class:`~icefloe.backplane.nats.engine.NatsBackplane`
  ``publish`` (pipelined batches of 256, one acknowledgement per batch, a
  meta write per batch, the window check against the positions
  the reader publishes) and the reader's ``follow`` (one pull consumer, a
  :class:`~icefloe.backplane.reader.RemoteReader`, position reports);
* ``nats-raw``: the same work written directly with nats-py: the same
  msgpack chunks published in batches of 256, pipelined, the last of each
  as a request whose acknowledgement is awaited (as the engine does), to a
  stream in memory, and a pull consumer (nats-py ``pull_subscribe``,
  ``fetch(256)``, no acknowledgements) decoding them (no window, no meta,
  no reports).

URLs carry the prefix: ``nats://host:4222?prefix=P``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from backplane_follow import BATCH, HISTORY, read_arrivals
from icefloe.backplane.nats.engine import NatsBackplane
from icefloe.backplane.nats.layout import parse_nats_url
from icefloe.backplane.publisher import ChunkSource
from icefloe.core.codec import decode_chunk_msgpack, encode_chunk_msgpack
from icefloe.core.messages import StreamChunk

__all__ = ["cleanup", "produce_icefloe", "produce_raw", "read_icefloe", "read_raw", "setup"]


async def produce_icefloe(url: str, sid: str, source: ChunkSource) -> None:
    bp = NatsBackplane(url, history=HISTORY, window=HISTORY, on_cancel=lambda _s: None)
    await bp.open()
    try:
        bp.publish(sid, "bench", source)
        # The engine runs the publish task and says only whether it still runs.
        while bp.publishing(sid):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    finally:
        await bp.aclose()


async def read_icefloe(url: str, sid: str, ready: Any) -> list[tuple[int, int]]:
    bp = NatsBackplane(url, history=HISTORY, window=HISTORY, on_cancel=lambda _s: None)
    return await read_arrivals(bp, sid, ready)


def _raw_names(url: str) -> tuple[str, str, str]:
    options = parse_nats_url(url)
    return options.server, f"{options.prefix}_raw", f"{options.prefix}.raw"


async def setup(url: str, count: int) -> None:
    """The raw variant's stream (the icefloe variant makes its own)."""
    import nats
    from nats.js.api import DiscardPolicy, StorageType, StreamConfig

    server, stream, subject = _raw_names(url)
    nc = await nats.connect(server)
    try:
        config = StreamConfig(
            name=stream,
            subjects=[f"{subject}.>"],
            storage=StorageType.MEMORY,
            # No window here: the subject must hold the whole stream.
            max_msgs_per_subject=count + 1,
            max_age=600,
            discard=DiscardPolicy.OLD,
        )
        await nc.jetstream().add_stream(config)
    finally:
        await nc.close()


async def produce_raw(url: str, sid: str, count: int, text: str) -> None:
    import nats

    server, _stream, subject = _raw_names(url)
    nc = await nats.connect(server)
    js = nc.jetstream()
    try:
        seq = 0
        while seq <= count:
            end = min(seq + BATCH, count + 1)
            for n in range(seq, end):
                payload = encode_chunk_msgpack(StreamChunk(sid, n, text, done=n == count))
                if n < end - 1:
                    await nc.publish(f"{subject}.{sid}", payload)
                else:  # the batch's last one waits for its acknowledgement
                    await js.publish(f"{subject}.{sid}", payload)
            seq = end
    finally:
        await nc.close()


async def read_raw(url: str, sid: str, ready: Any) -> list[tuple[int, int]]:
    import nats

    server, stream, subject = _raw_names(url)
    nc = await nats.connect(server)
    arrivals: list[tuple[int, int]] = []
    try:
        from nats.js.api import AckPolicy, ConsumerConfig

        config = ConsumerConfig(ack_policy=AckPolicy.NONE, mem_storage=True)
        sub = await nc.jetstream().pull_subscribe(f"{subject}.{sid}", stream=stream, config=config)
        ready.set()
        while True:
            try:
                msgs = await sub.fetch(BATCH, timeout=1.0)
            except TimeoutError:
                continue
            for msg in msgs:
                chunk = decode_chunk_msgpack(msg.data)
                arrivals.append((chunk.ts, time.time_ns()))
                if chunk.done:
                    return arrivals
    finally:
        await nc.close()


async def cleanup(url: str) -> None:
    import nats
    from nats.js.errors import NotFoundError

    options = parse_nats_url(url)
    nc = await nats.connect(options.server)
    try:
        p = options.prefix
        for name in (f"{p}_chunks", f"KV_{p}_meta", f"{p}_raw"):
            try:
                await nc.jetstream().delete_stream(name)
            except NotFoundError:
                pass
    finally:
        await nc.close()
