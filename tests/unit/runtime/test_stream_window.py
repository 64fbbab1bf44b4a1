"""One stream's adaptive window controller (runtime/stream_window.py), over a real log."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from icefloe.core.flowwindow import FlowWindowPolicy, FlowWindowStatistics
from icefloe.core.messages import NO_META, StreamChunk
from icefloe.core.streamlog import StreamLog
from icefloe.runtime.stream_window import WindowFeedback, window_totals

if TYPE_CHECKING:
    from icefloe.runtime.stream import StreamState

POLICY = FlowWindowPolicy(target_latency_s=0.01, floor=2)


def _full_log(age_s: float) -> StreamLog:
    """A log whose window (8) is full of chunks ``age_s`` old, one reader at 0."""
    log = StreamLog(window=8, max_bytes=1 << 20)
    log.attach(0)
    ts = time.time_ns() - int(age_s * 1e9)
    for seq in range(8):
        log.append(StreamChunk("s", seq, "x", False, NO_META, None, ts))
    assert not log.has_room()
    return log


def test_no_figures_before_the_first_sample() -> None:
    assert WindowFeedback(POLICY).statistics() is None


def test_old_unread_chunks_shrink_the_window() -> None:
    feedback = WindowFeedback(POLICY)
    log = _full_log(age_s=1.0)
    grew = feedback.sample(log)
    stats = feedback.statistics()
    assert stats is not None
    assert not grew
    assert log.window == stats.window < 8


def test_nothing_unread_is_no_sample() -> None:
    feedback = WindowFeedback(POLICY)
    log = StreamLog(window=8, max_bytes=1 << 20)
    log.attach(0)
    assert not feedback.sample(log)
    assert feedback.statistics() is None


@dataclass
class _Stream:
    stats: FlowWindowStatistics | None

    def window_statistics(self) -> FlowWindowStatistics | None:
        return self.stats


def _stats(window: int, increases: int, decreases: int) -> FlowWindowStatistics:
    return FlowWindowStatistics(window, 2, 16, 0.01, 0.0, 0.0, 0, 0, increases, decreases, 0)


def test_window_totals_sum_the_sampled_streams() -> None:
    streams = [_Stream(_stats(4, 1, 2)), _Stream(None), _Stream(_stats(10, 3, 0))]
    totals = window_totals(cast("list[StreamState]", streams), adaptive=True)
    assert (totals.adaptive, totals.adapted, totals.window_sum, totals.window_min) == (
        True,
        2,
        14,
        4,
    )
    assert (totals.increases, totals.decreases) == (4, 2)
