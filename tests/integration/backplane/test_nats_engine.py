"""The NATS engine itself, two engines in one process on the machine's NATS:
a resume from any seq gets that seq and the rest exactly once, while other
streams' chunks interleave in the chunk stream."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from cluster import NATS_URL, _drop_nats
from test_nats_backplane import _reachable

from icefloe.backplane.nats.engine import NatsBackplane
from icefloe.backplane.reader import RemoteReader
from icefloe.core.messages import StreamChunk
from icefloe.exceptions import EndOfStream, WouldBlock

pytestmark = pytest.mark.skipif(not _reachable(NATS_URL), reason=f"no NATS server at {NATS_URL}")

CHUNKS = 300


class _Chunks:
    """A stream of ``CHUNKS`` chunks and its done chunk, handed out a few at a time."""

    def __init__(self, sid: str) -> None:
        self._sid, self._next = sid, 0
        self._yielded = False

    def receive_nowait(self) -> StreamChunk:
        seq = self._next
        if seq > CHUNKS:
            raise EndOfStream("done")
        if seq % 7 == 6 and not self._yielded:
            self._yielded = True
            raise WouldBlock("small batches, so that the streams interleave")
        self._yielded = False
        self._next += 1
        return StreamChunk(self._sid, seq, f"c{seq}", done=seq == CHUNKS)

    async def wait(self) -> None:
        await asyncio.sleep(0)

    def close(self) -> None:
        pass


@asynccontextmanager
async def _engines() -> AsyncIterator[tuple[NatsBackplane, NatsBackplane]]:
    prefix = f"icefloe_test_{uuid.uuid4().hex[:10]}"
    url = f"{NATS_URL}?prefix={prefix}"
    a, b = (
        NatsBackplane(url, history=CHUNKS + 1, window=CHUNKS + 1, on_cancel=print) for _ in range(2)
    )
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await b.aclose()
        await a.aclose()
        await _drop_nats(prefix)


async def _read(reader: RemoteReader) -> list[int]:
    seqs: list[int] = []
    while True:
        try:
            seqs.append(reader.receive_nowait().seq)
        except WouldBlock:
            await reader.wait()
        except EndOfStream:
            reader.close()
            return seqs


async def test_nats_a_resume_from_any_seq_gets_the_rest_exactly_once() -> None:
    async with asyncio.timeout(60), _engines() as (producer, follower):
        sids = [f"s{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
        for sid in sids:  # three streams published at once: their chunks interleave
            producer.publish(sid, "t", _Chunks(sid))
        while any(producer.publishing(sid) for sid in sids):
            await asyncio.sleep(0.01)  # the publish tasks run in this loop
        marks = await follower.store.marks(sids[0])
        assert marks.js_last - marks.js0 > CHUNKS  # other streams' chunks in between
        for sid in sids:
            meta = await follower.meta(sid)
            assert meta is not None
            assert (meta.state, meta.last_seq) == ("done", CHUNKS)
            for start in (0, 1, 37, 150, CHUNKS):
                seqs = await _read(await follower.follow(meta, start))
                assert seqs == list(range(start, CHUNKS + 1)), (sid, start)
