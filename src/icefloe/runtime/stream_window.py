"""One stream's adaptive window: fed when its producer finds the window full.

With ``Limits.adaptive_window`` set, each time a stream's producer finds its
window full, :meth:`WindowFeedback.sample` feeds a
:class:`~icefloe.core.flowwindow.FlowWindow` with the age of the oldest
chunk the pace reader has not taken (queue latency) and how far it has read
(drain rate), and moves the log's window within ``[floor, stream_buffer]``.
That is one clock read per full window, never per chunk, and nothing for a
producer that never waits. It exists apart from
:class:`~icefloe.runtime.stream.StreamState` because it is a controller
with its own clock and figures that only reads the log and sets its window;
the stream only says when to sample.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from icefloe.core.flowwindow import FlowWindow, FlowWindowPolicy, FlowWindowStatistics
from icefloe.core.streamlog import StreamLog
from icefloe.runtime.stream_types import WindowTotals

if TYPE_CHECKING:
    from icefloe.runtime.stream import StreamState

__all__ = ["WindowFeedback", "window_totals"]


class WindowFeedback:
    """The window controller of one stream's log (made when the producer first waits)."""

    __slots__ = ("_fw", "_policy")

    def __init__(self, policy: FlowWindowPolicy) -> None:
        self._policy = policy
        self._fw: FlowWindow | None = None

    def sample(self, log: StreamLog) -> bool:
        """Feed the controller one sample of ``log``; whether the window grew.

        Called with the floor exact (after :meth:`StreamLog.has_room`). The
        queue latency is the age of the oldest chunk the pace reader has not
        taken; chunks are stamped at creation (``StreamChunk.ts``), so the
        stream keeps no timestamps of its own.
        """
        oldest = log.pace_chunk()
        if oldest is None:
            return False  # nothing unread: a byte limit stopped the producer
        # Chunk stamps are wall-clock: a clock step makes one odd sample at
        # most (a backward step reads as no wait); the controller's own
        # clock is monotonic, so its drain rate never sees the step.
        latency = max(0.0, (time.time_ns() - oldest.ts) / 1e9)
        fw = self._fw
        if fw is None:
            fw = self._fw = FlowWindow(log.limits.window_limit, self._policy)
        elif latency <= fw.quiet_latency:
            return False  # the common case: a reader keeping up at the full window
        before = log.window
        start = log.limits.start_seq
        window = fw.observe(time.monotonic(), latency, log.floor - start, log.next_seq - start)
        if window == before:
            return False
        log.set_window(window)
        return window > before

    def statistics(self) -> FlowWindowStatistics | None:
        """The controller's figures (None until the producer first waited)."""
        return None if self._fw is None else self._fw.statistics()


def window_totals(states: Iterable[StreamState], adaptive: bool) -> WindowTotals:
    """The adaptive windows of ``states`` summed up, for ``flow.stats()``. O(streams)."""
    adapted = sum_window = increases = decreases = 0
    smallest: int | None = None
    for state in states:
        stats = state.window_statistics()
        if stats is None:
            continue
        adapted += 1
        sum_window += stats.window
        smallest = stats.window if smallest is None else min(smallest, stats.window)
        increases += stats.increases
        decreases += stats.decreases
    return WindowTotals(adaptive, adapted, sum_window, smallest, increases, decreases)
