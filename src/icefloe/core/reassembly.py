"""Many chunk streams put back together from broker records: in order, once, bounded.

A broker hands a consumer the records of many streams interleaved, possibly
out of order (several partitions, a redelivery after a crash) and possibly
twice (at-least-once producers and consumers). :class:`Reassembler` takes
``(stream_id, seq, item)`` in whatever order they come and releases each
stream's items strictly in seq order, each seq once. Sans-I/O: no loop, the
clock is injected, the caller does the acking.

Per stream it runs a :class:`~icefloe.core.sequencer.ReorderBuffer` starting
at seq 0. A stream ends when its ``done`` item is released (or when it fails,
below); its id then goes into a :class:`~icefloe.core.dedup.DedupWindow`, so
a late redelivery of any of its records is dropped as a duplicate instead of
starting the stream again.

Policies, every one bounded and counted in :meth:`Reassembler.statistics`:

=====================  ==========================================================
situation              what happens
=====================  ==========================================================
seq already released   dropped, counted in ``duplicates`` (``Pushed.duplicate``)
or already held
record of an ended     dropped, counted in ``duplicates``; ended ids are kept
stream                 ``ended_ttl_s`` seconds, at most ``max_ended`` of them
a gap and             :exc:`StreamGap` (code ``history_gone``): the stream ends,
``max_pending`` held   its held items are handed back in ``StreamGap.dropped``
a gap open for         :meth:`Reassembler.expire` returns a :exc:`StreamGap` for
``gap_timeout_s``      it, same as above
a stream idle for      :meth:`Reassembler.expire` forgets it (``idle_evicted``);
``idle_timeout_s``     its id is remembered as ended, a later record is dropped
``max_streams`` open   :exc:`ReassemblyFull` (code ``overloaded``): the record is
and a new stream       refused, nothing changes; nack it and retry later
=====================  ==========================================================

A gap is a seq that never came: the broker lost or trimmed it, or the
producer skipped it. Waiting forever would hold memory and the stream's
readers hostage, so after the limit or the timeout the stream ends with the
``history_gone`` code (the history that would fill it is gone).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

from icefloe.core.dedup import DedupWindow
from icefloe.core.sequencer import ReorderBuffer
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import DuplicateSeq, ReorderOverflow, StreamError

__all__ = [
    "Pushed",
    "Reassembler",
    "ReassemblyFull",
    "ReassemblyStatistics",
    "StreamGap",
]

T = TypeVar("T")

#: default most streams open at once
DEFAULT_MAX_STREAMS = 10_000
#: default most items held out of order per stream
DEFAULT_MAX_PENDING = 1024
#: default seconds a gap may stay open
DEFAULT_GAP_TIMEOUT_S = 30.0
#: default seconds a stream with no gap may go without a record
DEFAULT_IDLE_TIMEOUT_S = 600.0
#: default seconds an ended stream's id is remembered
DEFAULT_ENDED_TTL_S = 3600.0
#: default most ended stream ids remembered
DEFAULT_MAX_ENDED = 100_000


class StreamGap(StreamError):
    """A stream has a seq that will not come; it ended with ``history_gone``.

    ``next_seq`` is the first missing seq; ``dropped`` the items that were
    held after it (so the caller can ack or dead-letter them).
    """

    def __init__(self, stream_id: str, next_seq: int, reason: str, dropped: tuple[object, ...]):
        self.next_seq = next_seq
        self.reason = reason
        self.dropped = dropped
        super().__init__(
            ErrorCode.HISTORY_GONE, f"seq {next_seq} never arrived ({reason})", stream_id
        )


class ReassemblyFull(StreamError):
    """A new stream was refused: ``max_streams`` streams are open (code ``overloaded``)."""

    def __init__(self, stream_id: str, max_streams: int) -> None:
        self.max_streams = max_streams
        super().__init__(
            ErrorCode.OVERLOADED,
            f"max_streams={max_streams} streams are being reassembled",
            stream_id,
        )


class Pushed(NamedTuple, Generic[T]):
    """What one :meth:`Reassembler.push` did."""

    #: items released by this push, in seq order (empty if held or dropped)
    released: list[T]
    #: the pushed item was a duplicate and was dropped
    duplicate: bool = False
    #: this push released the stream's ``done`` item: the stream has ended
    ended: bool = False


class ReassemblyStatistics(NamedTuple):
    """A snapshot of a :class:`Reassembler`."""

    #: streams being reassembled
    streams: int
    #: items held out of order, all streams together
    held: int
    #: items released in order
    released: int
    #: items dropped as duplicates (or records of ended streams)
    duplicates: int
    #: streams that ended with their done item
    completed: int
    #: streams that ended with a gap (limit or timeout)
    gaps: int
    #: idle streams forgotten by :meth:`Reassembler.expire`
    idle_evicted: int
    #: new streams refused with :exc:`ReassemblyFull`
    refused: int


class _Stream(Generic[T]):
    __slots__ = ("buffer", "done_seq", "gap_since", "last_seen")

    def __init__(self, limit: int, now: float) -> None:
        self.buffer: ReorderBuffer[T] = ReorderBuffer(0, limit)
        self.done_seq: int | None = None
        self.gap_since: float | None = None
        self.last_seen = now


class Reassembler(Generic[T]):
    """Releases the items of many streams, each in seq order and once.

    :param clock: monotonic seconds, e.g. ``time.monotonic``.
    :param max_streams: streams open at once, >= 1.
    :param max_pending: items held out of order per stream, >= 0.
    :param gap_timeout_s: seconds a gap may stay open before the stream fails.
    :param idle_timeout_s: seconds a stream without a gap may go quiet before
        it is forgotten.
    :param ended_ttl_s: seconds an ended stream's id is remembered.
    :param max_ended: ended stream ids remembered, >= 1.
    :raises ValueError: a limit out of range.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        max_streams: int = DEFAULT_MAX_STREAMS,
        max_pending: int = DEFAULT_MAX_PENDING,
        gap_timeout_s: float = DEFAULT_GAP_TIMEOUT_S,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        ended_ttl_s: float = DEFAULT_ENDED_TTL_S,
        max_ended: int = DEFAULT_MAX_ENDED,
    ) -> None:
        if max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {max_streams}")
        if max_pending < 0:
            raise ValueError(f"max_pending must be >= 0, got {max_pending}")
        if not (gap_timeout_s > 0 and idle_timeout_s > 0):
            raise ValueError("gap_timeout_s and idle_timeout_s must be > 0")
        self._clock = clock
        self._max_streams = max_streams
        self._max_pending = max_pending
        self._gap_timeout = gap_timeout_s
        self._idle_timeout = idle_timeout_s
        # least recently seen first, so expire() stops at the first fresh one
        self._streams: OrderedDict[str, _Stream[T]] = OrderedDict()
        self._ended: DedupWindow[str] = DedupWindow(ended_ttl_s, max_ended, clock)
        self._released = 0
        self._duplicates = 0
        self._completed = 0
        self._gaps = 0
        self._idle = 0
        self._refused = 0

    def push(self, stream_id: str, seq: int, item: T, *, done: bool = False) -> Pushed[T]:
        """Take ``item`` as ``seq`` of ``stream_id``; release what is now in order.

        ``done`` marks the stream's last item: once it is released the stream
        ends and later records of it are duplicates.

        :raises StreamGap: holding ``item`` would exceed ``max_pending``; the
            stream has ended and ``item`` is not kept (it is not in ``dropped``).
        :raises ReassemblyFull: ``stream_id`` is new and ``max_streams`` are open;
            nothing changed.
        :raises ValueError: ``seq`` is negative.
        """
        if seq < 0:
            raise ValueError(f"seq must be >= 0, got {seq}")
        now = self._clock()
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id in self._ended:
                self._duplicates += 1
                return Pushed([], duplicate=True)
            if len(self._streams) >= self._max_streams:
                self._refused += 1
                raise ReassemblyFull(stream_id, self._max_streams)
            stream = self._streams[stream_id] = _Stream(self._max_pending, now)
        else:
            self._streams.move_to_end(stream_id)
            stream.last_seen = now
        if stream.done_seq is not None and seq > stream.done_seq:
            # past the stream's end: a producer bug or a foreign record; not data
            self._duplicates += 1
            return Pushed([], duplicate=True)
        if done:
            stream.done_seq = seq
        first = stream.buffer.next_seq
        try:
            released = stream.buffer.push(seq, item)
        except DuplicateSeq:
            self._duplicates += 1
            return Pushed([], duplicate=True)
        except ReorderOverflow:
            raise self._fail(stream_id, stream, f"max_pending={self._max_pending} held") from None
        if not stream.buffer.has_gap:
            stream.gap_since = None
        elif stream.gap_since is None or released:
            # a gap opened, or moved on to a later seq: its clock starts now
            stream.gap_since = now
        done_seq = stream.done_seq
        if done_seq is not None and stream.buffer.next_seq > done_seq:
            # items held past the done seq are not part of the stream
            released = released[: done_seq - first + 1]
            self._released += len(released)
            self._end(stream_id)
            self._completed += 1
            return Pushed(released, ended=True)
        self._released += len(released)
        return Pushed(released)

    def expire(self) -> list[StreamGap]:
        """Fail streams whose gap outlived ``gap_timeout_s``; forget idle ones.

        Call it now and then (each poll of the source is fine). Returns one
        :exc:`StreamGap` per failed stream, not raised.
        """
        now = self._clock()
        gaps: list[StreamGap] = []
        for stream_id, stream in list(self._streams.items()):
            if stream.gap_since is not None and now - stream.gap_since >= self._gap_timeout:
                gaps.append(self._fail(stream_id, stream, f"gap_timeout_s={self._gap_timeout}"))
            elif stream.gap_since is None and now - stream.last_seen >= self._idle_timeout:
                self._end(stream_id)
                self._idle += 1
        return gaps

    def _fail(self, stream_id: str, stream: _Stream[T], reason: str) -> StreamGap:
        next_seq = stream.buffer.next_seq
        dropped = tuple(stream.buffer.drain_held()) if stream.buffer.has_gap else ()
        self._end(stream_id)
        self._gaps += 1
        return StreamGap(stream_id, next_seq, reason, dropped)

    def _end(self, stream_id: str) -> None:
        del self._streams[stream_id]
        self._ended.seen(stream_id)

    def next_seq(self, stream_id: str) -> int | None:
        """The seq ``stream_id`` waits for; ``None`` if it is not open."""
        stream = self._streams.get(stream_id)
        return None if stream is None else stream.buffer.next_seq

    def statistics(self) -> ReassemblyStatistics:
        """A snapshot of the open streams and the counters."""
        return ReassemblyStatistics(
            streams=len(self._streams),
            held=sum(s.buffer.pending for s in self._streams.values()),
            released=self._released,
            duplicates=self._duplicates,
            completed=self._completed,
            gaps=self._gaps,
            idle_evicted=self._idle,
            refused=self._refused,
        )
