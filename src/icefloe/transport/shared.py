"""Encode once, write many: a stream's wire events shared by all its HTTP readers.

A stream watched by a thousand browsers would otherwise be serialized a
thousand times per token. :class:`EncodedLog` keeps the encoded events of
one stream in one wire format (SSE or NDJSON) as a run of consecutive seqs;
the first reader to reach a chunk encodes it, and every other reader gets
the same bytes joined into its write.

Limits: the run holds at most ``max_events`` events. When it is full the
older half is forgotten; a reader that falls behind the run (a resumer, a
laggard) encodes its own events, which costs CPU but never correctness.
Bytes are identical whoever encodes them, so readers cannot tell.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from typing import Any, NamedTuple

from icefloe.core.messages import StreamChunk
from icefloe.runtime.subscription import Subscription

__all__ = ["EncodedLog", "Taken"]

#: events one log keeps by default (about 130 bytes each for a short token)
DEFAULT_MAX_EVENTS = 4096


class Taken(NamedTuple):
    """What one :meth:`EncodedLog.take` moved: the bytes, how many chunks, the first one."""

    data: bytes
    chunks: int
    #: the first chunk (a StreamChunk; a HubEvent for topic readers)
    first: Any


class EncodedLog:
    """The encoded events of one stream in one wire format, shared by its readers.

    Invariant: ``_events[i]`` is the encoding of seq ``_base + i`` and
    ``_ends[i]`` the running byte total up to and including it (absolute,
    so trimming never rewrites it).
    """

    __slots__ = ("_base", "_encode", "_ends", "_events", "_origin", "max_events", "users")

    def __init__(
        self, encode: Callable[[StreamChunk], bytes], max_events: int = DEFAULT_MAX_EVENTS
    ) -> None:
        if max_events < 2:
            raise ValueError(f"max_events must be >= 2, got {max_events}")
        self._encode = encode
        self.max_events = max_events
        self._base = 0
        #: the running byte total before ``_base``
        self._origin = 0
        self._events: list[bytes] = []
        self._ends: list[int] = []
        #: readers using this log (the owner drops it at zero)
        self.users = 0

    @property
    def end(self) -> int:
        """The seq after the last encoded one."""
        return self._base + len(self._events)

    def __len__(self) -> int:
        return len(self._events)

    def take(self, reader: Subscription, max_bytes: int) -> Taken | None:
        """Move ``reader`` past its held chunks and return their encoding.

        At most ``max_bytes`` of events (but always at least one); None when
        nothing is held.

        :raises StreamError: ``history_gone``: a lag-tolerant reader was overrun.
        """
        held = reader.held()
        if not held:
            return None
        start = reader.next_seq
        if start < self._base:
            return self._take_private(reader, held, max_bytes)
        if start > self.end:
            self._restart(start)
        if self.end < start + held and self._total_from(start) < max_bytes:
            # This reader is at the front: encode what it holds, enough for a write.
            self._extend(reader, start, start + held, max_bytes)
        events, ends = self._events, self._ends
        i = start - self._base
        goal = self._before(i) + max_bytes
        stop = min(len(events), i + held)
        # The last event that fits in max_bytes, but at least one.
        stop = max(i + 1, bisect_right(ends, goal, i, stop))
        first = reader.peek(0)
        count = stop - i
        data = events[i] if count == 1 else b"".join(events[i:stop])
        reader.skip(count)
        return Taken(data, count, first)

    def _before(self, i: int) -> int:
        """The running byte total before the event at index ``i``."""
        return self._ends[i - 1] if i else self._origin

    def _total_from(self, seq: int) -> int:
        """Bytes encoded from ``seq`` (within the run) to the run's end."""
        end_total = self._ends[-1] if self._ends else self._origin
        return end_total - self._before(seq - self._base)

    def _restart(self, seq: int) -> None:
        self._base = seq
        self._origin = 0
        self._events.clear()
        self._ends.clear()

    def _extend(self, reader: Subscription, start: int, need: int, max_bytes: int) -> None:
        encode = self._encode
        events, ends = self._events, self._ends
        goal = self._before(start - self._base) + max_bytes
        total = ends[-1] if ends else self._origin
        seq = self.end
        while seq < need and total < goal:
            data = encode(reader.peek(seq - start))
            events.append(data)
            total += len(data)
            ends.append(total)
            seq += 1
        if len(events) > self.max_events:
            # Forget the older half, but never what this reader still needs.
            drop = min(len(events) - self.max_events // 2, start - self._base)
            if drop > 0:
                self._origin = ends[drop - 1]
                del events[:drop]
                del ends[:drop]
                self._base += drop

    def _take_private(self, reader: Subscription, held: int, max_bytes: int) -> Taken:
        # A reader behind the shared run encodes its own events: the run only
        # ever grows at its front, where the readers are.
        encode = self._encode
        parts: list[bytes] = []
        size = 0
        count = 0
        while count < held and (count == 0 or size < max_bytes):
            data = encode(reader.peek(count))
            if count and size + len(data) > max_bytes:
                break
            parts.append(data)
            size += len(data)
            count += 1
        first = reader.peek(0)
        reader.skip(count)
        return Taken(b"".join(parts), count, first)
