"""Stream meta in the ``P_meta`` KV bucket: what every process reads of a
stream it does not produce.

One JSON object per stream (the fields of
:class:`~icefloe.backplane.meta.StreamMeta`, plus ``at``: the producer's
last write in unix ms, ``started``, and the JetStream sequences ``js0`` of
chunk 0 and ``js_last`` of chunk ``last_seq``, which place a consumer's
start exactly or just before a reader's seq). A running stream whose meta
was not written for :data:`~icefloe.backplane.publisher.RUNNING_TTL_S`
reads as gone: its producer died (the bucket's max age removes it later).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from icefloe.backplane.meta import RUNNING, StreamMeta
from icefloe.backplane.nats.layout import token
from icefloe.backplane.publisher import RUNNING_TTL_S

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

__all__ = ["MAX_SCANNED", "Marks", "MetaStore", "now_ms"]

#: entries one listing reads at most (newest 1,000 of them are listed)
MAX_SCANNED: Final = 10_000
#: seconds a listing waits for the next entry before it stops
SCAN_WAIT_S: Final = 2.0


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Marks:
    """Where a stream's chunks sit in the chunk stream (0: not known yet)."""

    js0: int
    last_seq: int
    js_last: int

    def start_for(self, seq: int) -> int:
        """A JetStream sequence at or before chunk ``seq``'s (1: the subject's first).

        Chunks are appended in seq order, so chunk ``seq``'s sequence is at
        least ``js0 + seq`` and, past ``last_seq``, more than ``js_last``.
        """
        if seq > self.last_seq and self.js_last:
            return self.js_last + 1
        if self.js0:
            return self.js0 + seq
        return 1


def _live(fields: dict[str, Any]) -> bool:
    stale = now_ms() - int(fields.get("at", 0)) > RUNNING_TTL_S * 1000
    return not (fields.get("state") == RUNNING and stale)


class MetaStore:
    """The meta bucket, read and written by one process."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def _fields(self, stream_id: str) -> dict[str, Any] | None:
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await self._kv.get(token(stream_id))
        except KeyNotFoundError:  # also a deleted or purged key
            return None
        if not entry.value:
            return None
        fields: dict[str, Any] = json.loads(entry.value)
        return fields if _live(fields) else None

    async def get(self, stream_id: str) -> StreamMeta | None:
        """The stream's meta (None: none, or its producer died)."""
        fields = await self._fields(stream_id)
        return None if fields is None else StreamMeta.from_hash(stream_id, fields)

    async def marks(self, stream_id: str) -> Marks:
        fields = await self._fields(stream_id) or {}
        js0, js_last = int(fields.get("js0", 0)), int(fields.get("js_last", 0))
        return Marks(js0, int(fields.get("last_seq", -1)), js_last)

    async def put(self, stream_id: str, fields: dict[str, Any]) -> None:
        """Write the whole meta (with ``at`` set to now)."""
        fields["at"] = now_ms()
        await self._kv.put(token(stream_id), json.dumps(fields).encode())

    async def listed(self, limit: int) -> list[StreamMeta]:
        """The live streams, newest first, at most ``limit``."""
        watcher = await self._kv.watchall(ignore_deletes=True)
        found: list[tuple[int, StreamMeta]] = []
        try:
            for _ in range(MAX_SCANNED):
                entry = await watcher.updates(timeout=SCAN_WAIT_S)  # type: ignore[no-untyped-call]
                if entry is None:  # every current value was delivered
                    break
                if not entry.value:
                    continue
                fields = json.loads(entry.value)
                sid = fields.get("stream_id", "")
                meta = StreamMeta.from_hash(sid, fields) if _live(fields) else None
                if meta is not None:
                    found.append((int(fields.get("started", 0)), meta))
        except TimeoutError:
            pass  # a partial listing beats none
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        found.sort(key=lambda pair: pair[0], reverse=True)
        return [meta for _started, meta in found[:limit]]
