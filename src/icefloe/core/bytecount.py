"""The byte accounting of a :class:`~icefloe.core.streamlog.StreamLog`.

:class:`ByteCount` keeps three figures for the chunks a log holds, each as
cheap as its use allows:

* ``bound``, an upper bound of the bytes held, in O(1): the per-chunk path
  adds to it and nothing ever subtracts (trimming recounts instead);
* the exact bytes held (:meth:`ByteCount.recount`, O(chunks held)), for the
  slow paths: a room check that found the bound at the limit, statistics;
* the bytes not yet passed by the pace (:meth:`ByteCount.unread`), cached and
  updated incrementally from the last count.

Invariant: ``bound`` is at least the bytes held, and exact after
:meth:`ByteCount.recount`. The count never looks at readers: the log passes
in what it holds and where its pace stands.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice

from icefloe.core.messages import StreamChunk

__all__ = ["ByteCount", "chunk_size"]


def chunk_size(chunk: StreamChunk) -> int:
    """What a chunk counts against byte limits: its text plus str/bytes data.

    It is an estimate of the memory held, cheap enough for the hot path, not
    the wire size (that depends on the transport's encoding).
    """
    data = chunk.data
    if data is None:
        return len(chunk.text)
    if isinstance(data, str | bytes | bytearray):
        return len(chunk.text) + len(data)
    return len(chunk.text) + 64


class ByteCount:
    """The bytes a log holds against its ``limit`` (``max_bytes``, >= 1).

    ``bound`` is public for the log's per-chunk paths (the producer fast
    path adds ``chunk_size(chunk)`` to it); everything else goes through
    the methods.
    """

    __slots__ = ("_c_floor", "_c_head", "_c_unread", "bound", "limit")

    def __init__(self, limit: int) -> None:
        #: the most bytes held before the producer waits
        self.limit = limit
        #: an upper bound of the bytes held (exact after :meth:`recount`)
        self.bound = 0
        # unread()'s last exact count: (floor, head) -> bytes
        self._c_floor = -1
        self._c_head = -1
        self._c_unread = 0

    def __repr__(self) -> str:
        return f"ByteCount(bound={self.bound}, limit={self.limit})"

    def recount(self, held: Iterable[StreamChunk]) -> int:
        """Count ``held`` (all the log holds) exactly; O(chunks held)."""
        self.bound = total = sum(map(chunk_size, held))
        return total

    def full(self, held: Iterable[StreamChunk]) -> bool:
        """Whether the bytes held reach the limit, recounted if the bound says so."""
        return self.bound >= self.limit and self.recount(held) >= self.limit

    def clear(self) -> None:
        """The log dropped everything it held."""
        self.bound = 0

    def unread(self, held: Sequence[StreamChunk], head: int, floor: int) -> int:
        """Bytes of ``held`` (seqs ``[head - len(held), head)``) at or past ``floor``.

        Unchanged since the last count, O(1); else O(chunks appended or passed
        since) while the chunks passed since are still held, and O(unread
        chunks) when they are not (a solo reader pops what it reads).
        """
        base = head - len(held)
        # An overrun lag-tolerant pace may be below the log: count from its start.
        floor = max(floor, base)
        c_floor, c_head = self._c_floor, self._c_head
        if c_floor == floor and c_head == head:
            return self._c_unread
        if (
            base <= c_floor <= floor
            and c_floor <= c_head <= head
            and (floor - c_floor) + (head - c_head) < head - floor
        ):
            # unread = sum[c_floor, c_head) - sum[c_floor, floor) + sum[c_head, head)
            read = sum(map(chunk_size, islice(held, c_floor - base, floor - base)))
            new = sum(map(chunk_size, islice(reversed(held), 0, head - c_head)))
            unread = self._c_unread - read + new
        else:
            unread = sum(map(chunk_size, islice(held, floor - base, None)))
        self._c_floor, self._c_head, self._c_unread = floor, head, unread
        return unread
