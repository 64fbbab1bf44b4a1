"""What the Redis and NATS halves of ``bench/backplane.py`` share.

The sizes both engines (and their raw floors) are run with, and the icefloe
reader: an engine's ``follow`` of one stream from its first chunk, whatever
the engine.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from icefloe.backplane.protocol import Engine
from icefloe.exceptions import EndOfStream, WouldBlock

__all__ = ["BATCH", "HISTORY", "read_arrivals"]

#: chunks an engine keeps per stream, and its window
HISTORY = 1024
#: chunks per pipelined write or read of the raw floors (and between a producer's yields)
BATCH = 256


async def read_arrivals(bp: Engine, sid: str, ready: Any) -> list[tuple[int, int]]:
    """Open ``bp``, set ``ready``, then read ``sid`` to its end through ``bp.follow``.

    Waits for the stream's meta (its producer starts after ``ready``); returns
    each chunk's ``(ts, arrival)`` in ns, and closes ``bp`` whatever happens.
    """
    await bp.open()
    ready.set()
    try:
        meta = None
        while meta is None:
            meta = await bp.meta(sid)
            if meta is None:
                await asyncio.sleep(0.001)  # the producer has not started yet
        reader = await bp.follow(meta, 0)
        arrivals: list[tuple[int, int]] = []
        while True:
            try:
                chunk = reader.receive_nowait()
            except WouldBlock:
                await reader.wait()
                continue
            except EndOfStream:
                break
            arrivals.append((chunk.ts, time.time_ns()))
        reader.close()
        return arrivals
    finally:
        await bp.aclose()
