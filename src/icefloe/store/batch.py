"""A durable batch on its way to ``Store.append``: chunks, encoded on demand.

The store writer (:mod:`icefloe.runtime.durable`) hands each ``append`` a
:class:`ChunkBatch`: consecutive chunks of one stream. It is the
``Sequence[StoredChunk]`` the :class:`~icefloe.store.protocol.Store`
protocol asks for, so every backend reads it as before (a record per
chunk, encoded by :func:`~icefloe.store.records.encode_chunks` the first
time a backend looks at them). A backend that keeps a batch whole (the
SQLite store) asks for :meth:`ChunkBatch.segments` instead: a few segment
records (:func:`~icefloe.store.records.encode_segment`), and the per-chunk
records are never built.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

from icefloe.core.messages import StreamChunk
from icefloe.store.records import encode_chunks, encode_segment
from icefloe.store.types import StoredChunk

__all__ = ["ChunkBatch", "Segment"]

#: one segment record and the seqs it holds: (first_seq, last_seq, record)
Segment = tuple[int, int, bytes]


class ChunkBatch(Sequence[StoredChunk]):
    """Consecutive chunks of one stream (at least one), as stored chunks.

    Read only; built by the store writer, which guarantees the seqs follow
    each other (:func:`~icefloe.store.records.encode_segment` checks it too).
    """

    __slots__ = ("_records", "chunks")

    def __init__(self, chunks: list[StreamChunk]) -> None:
        if not chunks:
            raise ValueError("a batch holds at least one chunk")
        self.chunks = chunks
        self._records: list[StoredChunk] | None = None

    @property
    def first_seq(self) -> int:
        return self.chunks[0].seq

    @property
    def last_seq(self) -> int:
        return self.chunks[-1].seq

    def segments(self, max_bytes: int) -> list[Segment]:
        """The batch as segment records, each under ``max_bytes`` unless it
        holds a single chunk.

        The common batch (small chunks) is one encode. A larger one is cut in
        proportion to its encoded size, and a part still too large is cut
        again, so big chunks cost about two encodes, not one per halving.

        :raises EncodeError: a chunk holds a value msgpack cannot carry.
        """
        out: list[Segment] = []
        _cut(self.chunks, max_bytes, out)
        return out

    def _stored(self) -> list[StoredChunk]:
        if self._records is None:
            self._records = encode_chunks(self.chunks)
        return self._records

    def __len__(self) -> int:
        return len(self.chunks)

    @overload
    def __getitem__(self, index: int) -> StoredChunk: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[StoredChunk]: ...

    def __getitem__(self, index: int | slice) -> StoredChunk | Sequence[StoredChunk]:
        return self._stored()[index]

    def __iter__(self) -> Iterator[StoredChunk]:
        return iter(self._stored())


def _cut(chunks: list[StreamChunk], max_bytes: int, out: list[Segment]) -> None:
    record = encode_segment(chunks)
    if len(record) <= max_bytes or len(chunks) == 1:
        out.append((chunks[0].seq, chunks[-1].seq, record))
        return
    # Parts of about max_bytes each, by the share of the bytes seen.
    parts = -(-len(record) // max_bytes)
    step = max(1, len(chunks) // parts)
    for start in range(0, len(chunks), step):
        _cut(chunks[start : start + step], max_bytes, out)
