"""The small shared vocabulary of streams: phases, statistics, chunk sizes.

``chunk_size`` lives in :mod:`icefloe.core.streamlog` (the log counts bytes
with it) and is re-exported here for the runtime.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from icefloe.core.flowwindow import FlowWindowStatistics
from icefloe.core.streamlog import chunk_size

__all__ = ["StreamBrief", "StreamPhase", "StreamStatistics", "WindowTotals", "chunk_size"]


class StreamPhase(enum.IntEnum):
    """Where a stream is in its life; everything but RUNNING is terminal."""

    RUNNING = 0
    DONE = 1
    FAILED = 2
    CANCELLED = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class StreamBrief(NamedTuple):
    """The O(1) facts about a stream (:meth:`Flow.brief`): for per-request checks."""

    stream_id: str
    #: owning tenant
    tenant: str
    #: ``running``, ``done``, ``failed`` or ``cancelled``
    state: str
    #: highest released seq, -1 before the first chunk
    last_seq: int
    #: ``Headers.priority`` of the stream's start
    priority: int = 0


class StreamStatistics(NamedTuple):
    """A snapshot of one stream."""

    #: the stream's id
    stream_id: str
    #: owning tenant
    tenant: str
    #: ``running``, ``done``, ``failed`` or ``cancelled``
    state: str
    #: highest released seq, -1 before the first chunk
    last_seq: int
    #: readers attached now
    subscribers: int
    #: chunks held (unread by the slowest reader, plus retained history)
    buffered: int
    #: bytes held, as counted by :func:`chunk_size`
    buffered_bytes: int
    #: chunks the producer may still release before it waits
    credit: int
    #: chunks held out of order waiting for a missing seq
    reorder_pending: int
    #: duplicate chunks dropped (retries, fan-in)
    duplicates: int
    #: the terminal code, if it ended abnormally
    code: str | None
    #: the adaptive window (its size, signals and adjustments); None until the
    #: producer first found the window full, or with ``Limits.adaptive_window=None``
    window: FlowWindowStatistics | None = None


class WindowTotals(NamedTuple):
    """The adaptive windows of a flow's running streams (``flow.stats().windows``)."""

    #: whether windows adapt (``Limits.adaptive_window`` is set)
    adaptive: bool
    #: running streams whose window has been sampled (their producer waited)
    adapted: int
    #: the sum of those streams' windows, in chunks
    window_sum: int
    #: the smallest of those windows (None: none adapted)
    window_min: int | None
    #: rounds that grew a window, summed over those streams
    increases: int
    #: window cuts (queue latency over target), summed over those streams
    decreases: int
