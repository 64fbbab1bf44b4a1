"""AimdWindow stays within [floor, ceiling] under any sequence of events.

A stateful hypothesis test: the machine picks parameters (extreme ones
included), then interleaves successes (single, batched, huge) and congestion
signals, checking the bounds and the counters after every step.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from icefloe.core.aimd import AimdWindow

_MAX_CEILING = 2**53


@st.composite
def _bounds(draw: st.DrawFn) -> tuple[int, int, int]:
    floor = draw(st.one_of(st.integers(1, 64), st.integers(1, _MAX_CEILING)))
    near = st.integers(floor, min(floor + 64, _MAX_CEILING))
    ceiling = draw(st.one_of(near, st.integers(floor, _MAX_CEILING)))
    initial = draw(st.sampled_from([floor, ceiling]) | st.integers(floor, ceiling))
    return floor, ceiling, initial


class AimdBounds(RuleBasedStateMachine):
    """Random event sequences against one AimdWindow."""

    window: AimdWindow
    floor: int
    ceiling: int
    successes: int
    congestions: int

    @initialize(
        bounds=_bounds(),
        increase=st.one_of(st.floats(1e-6, 1e6), st.sampled_from([1e-12, 1e12])),
        decrease=st.one_of(st.floats(0.001, 0.999), st.sampled_from([1e-9, 1 - 1e-9])),
    )
    def build(self, bounds: tuple[int, int, int], increase: float, decrease: float) -> None:
        self.floor, self.ceiling, initial = bounds
        self.window = AimdWindow(
            initial, floor=self.floor, ceiling=self.ceiling, increase=increase, decrease=decrease
        )
        self.successes = 0
        self.congestions = 0

    @rule(n=st.one_of(st.integers(0, 10), st.integers(0, 2**40), st.just(2**62)))
    def success(self, n: int) -> None:
        before = self.window.statistics().exact_window
        returned = self.window.on_success(n)
        self.successes += n
        assert returned == self.window.window
        assert self.window.statistics().exact_window >= before

    @rule()
    def congestion(self) -> None:
        before = self.window.statistics().exact_window
        returned = self.window.on_congestion()
        self.congestions += 1
        assert returned == self.window.window
        assert self.window.statistics().exact_window <= before

    @rule(times=st.integers(1, 80))
    def congestion_storm(self, times: int) -> None:
        for _ in range(times):
            self.window.on_congestion()
        self.congestions += times

    @invariant()
    def within_bounds(self) -> None:
        stats = self.window.statistics()
        assert self.floor <= self.window.window <= self.ceiling
        assert self.floor <= stats.exact_window <= self.ceiling
        assert stats.window == self.window.window == int(stats.exact_window)
        assert (stats.floor, stats.ceiling) == (self.floor, self.ceiling)

    @invariant()
    def counters_match(self) -> None:
        stats = self.window.statistics()
        assert stats.successes == self.successes
        assert stats.congestion_events == self.congestions


AimdBounds.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestAimdBounds = AimdBounds.TestCase
