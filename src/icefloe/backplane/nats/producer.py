"""The producing side on JetStream: one stream's chunks appended to its subject.

:func:`produce` reads a local stream (the edge's blocking in-process
subscription attached at seq 0) and publishes each chunk once,
msgpack-encoded, to ``P.c.<token>``: the chunks of one batch (what is
ready, at most :data:`~icefloe.backplane.limits.MAX_BATCH`) go out
pipelined in order on one connection, the last one as a request whose
acknowledgement answers for the batch, then the meta (last seq and its
JetStream sequence) is written. An abnormal end is one last message with the
``Icefloe-End`` header.

Bounded across processes: :class:`Positions` holds the positions the
reading processes publish on ``P.p.<token>`` (pushed to the producer; no
polling of the engine), and the producer appends at most ``window`` chunks
past the slowest fresh one, waiting for the next report while it may not.
A report older than :data:`~icefloe.backplane.limits.STALE_MS` is
ignored (a crashed gateway must not stall a stream forever). The window and
the source read are :mod:`icefloe.backplane.producing`'s, as on Redis.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from icefloe.backplane.meta import CANCELLED, DONE, FAILED, RUNNING
from icefloe.backplane.nats.layout import END_HEADER
from icefloe.backplane.nats.metastore import MetaStore, now_ms
from icefloe.backplane.producing import ChunkSource, batch_room, fresh, pump
from icefloe.core.codec import encode_chunk_msgpack
from icefloe.core.messages import StreamChunk
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import StreamError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

__all__ = ["ACK_TIMEOUT_S", "MAX_PROCESSES", "Positions", "produce"]

#: seconds a batch's acknowledgements may take
ACK_TIMEOUT_S: Final = 10.0
#: reading processes whose positions one produced stream keeps
MAX_PROCESSES: Final = 1000
#: seconds the producer waits for a report before it looks again (a stale
#: report must stop holding it back even if no new one comes)
RECHECK_S: Final = 0.5


class Positions:
    """Where the other processes' slowest readers of one produced stream are."""

    def __init__(self) -> None:
        self._at: dict[str, tuple[int, int]] = {}
        #: set on every report
        self.changed = asyncio.Event()

    def report(self, data: bytes) -> None:
        """Take one ``<process> <seq> <unix ms>`` report (seq -1: it stopped reading)."""
        try:
            process, pos_text, ts_text = data.decode().split(" ")
            pos, ts = int(pos_text), int(ts_text)
        except ValueError:
            return  # a foreign message
        if pos < 0:
            self._at.pop(process, None)
        elif process in self._at or len(self._at) < MAX_PROCESSES:
            self._at[process] = (pos, ts)
        self.changed.set()

    def slowest(self, now: int) -> int | None:
        """The slowest fresh position (None: no fresh reader)."""
        return min((pos for pos, ts in self._at.values() if fresh(ts, now)), default=None)

    async def room(self, next_seq: int, window: int) -> int:
        """Chunks that may be appended now; waits while none may."""
        while True:
            room = batch_room(self.slowest(now_ms()), next_seq, window)
            if room > 0:
                return room
            self.changed.clear()
            changed = asyncio.ensure_future(self.changed.wait())
            try:
                await asyncio.wait({changed}, timeout=RECHECK_S)
            finally:
                changed.cancel()


async def _append(
    nc: Client, js: JetStreamContext, subject: str, payloads: list[bytes], *, ack_first: bool
) -> tuple[int, int]:
    """Publish ``payloads`` in order, pipelined; the JetStream sequences of the
    first (0 unless ``ack_first``) and of the last.

    Only the last one (and the first if asked) waits for JetStream's
    acknowledgement: the server stores one connection's messages to a stream
    in order, so the last one's acknowledgement answers for the batch.
    """
    first = 0
    if ack_first:
        first = (await js.publish(subject, payloads[0], timeout=ACK_TIMEOUT_S)).seq
        payloads = payloads[1:]
        if not payloads:
            return first, first
    for payload in payloads[:-1]:
        await nc.publish(subject, payload)
    last = (await js.publish(subject, payloads[-1], timeout=ACK_TIMEOUT_S)).seq
    return first, last


async def produce(
    nc: Client,
    js: JetStreamContext,
    store: MetaStore,
    source: ChunkSource,
    positions: Positions,
    *,
    subject: str,
    meta: dict[str, Any],
    window: int,
) -> None:
    """Publish ``source``'s chunks to ``subject`` until it ends.

    ``meta`` holds the stream's meta fields (stream id, tenant, owner); it is
    kept current here, and the engine's keepalive rewrites it as it is.
    """
    sid = str(meta["stream_id"])
    meta.update(state=RUNNING, last_seq=-1, code="", message="", js0=0, js_last=0)
    meta["started"] = now_ms()
    await store.put(sid, meta)

    async def room(next_seq: int) -> int:
        return await positions.room(next_seq, window)

    async def append(chunks: list[StreamChunk]) -> None:
        payloads = [encode_chunk_msgpack(c) for c in chunks]
        first, last = await _append(nc, js, subject, payloads, ack_first=not meta["js0"])
        if first:
            meta["js0"] = max(1, first - chunks[0].seq)
        meta.update(last_seq=chunks[-1].seq, js_last=last)
        if chunks[-1].done:
            meta["state"] = DONE
        await store.put(sid, meta)

    async def fail(end: StreamError, _next_seq: int) -> None:
        headers = {END_HEADER: end.code.value}
        await js.publish(subject, end.message.encode(), ACK_TIMEOUT_S, headers=headers)
        state = CANCELLED if end.code is ErrorCode.CANCELLED else FAILED
        meta.update(state=state, code=end.code.value, message=end.message)
        await store.put(sid, meta)

    await pump(source, room, append, fail)
