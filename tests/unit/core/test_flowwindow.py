"""FlowWindow: the window feedback loop from queue latency and drain rate.

Examples pin the rules (cut on latency, once per round; grow while a bigger
window would meet the target at the measured drain rate; hold otherwise);
hypothesis properties check the bounds, the monotone response and
convergence of a simulated steady consumer.
"""

from __future__ import annotations

import math
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.core.flowwindow import FlowWindow, FlowWindowPolicy

TARGET = 0.01


def _window(ceiling: int = 16, **policy: float) -> FlowWindow:
    return FlowWindow(ceiling, FlowWindowPolicy(target_latency_s=TARGET, floor=2, **policy))


# -- policy and construction -------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target_latency_s": 0},
        {"target_latency_s": math.inf},
        {"target_latency_s": math.nan},
        {"floor": 0},
        {"floor": True},
        {"floor": 2.0},
        {"increase": 0},
        {"increase": -1.0},
        {"decrease": 0},
        {"decrease": 1},
        {"decrease": True},
    ],
)
def test_policy_rejects_out_of_range_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FlowWindowPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("ceiling", [0, -1, True, 2.0])
def test_ceiling_must_be_a_positive_int(ceiling: object) -> None:
    with pytest.raises(ValueError):
        FlowWindow(ceiling)  # type: ignore[arg-type]


def test_starts_at_the_ceiling_and_a_small_ceiling_lowers_the_floor() -> None:
    assert _window(16).window == 16
    stats = FlowWindow(3, FlowWindowPolicy(floor=8)).statistics()
    assert (stats.window, stats.floor, stats.ceiling) == (3, 3, 3)


def test_released_below_taken_is_refused() -> None:
    with pytest.raises(ValueError):
        _window().observe(0.0, 0.0, 5, 4)


# -- the rules ---------------------------------------------------------------------------


def test_latency_over_target_cuts_once_per_round() -> None:
    fw = _window()
    assert fw.observe(0.0, 0.05, 0, 16) == 8
    # Chunks released before the cut were queued under the old window.
    for taken in range(1, 16):
        assert fw.observe(taken / 100, 0.05, taken, taken + 8) == 8
    assert fw.observe(0.2, 0.05, 16, 24) == 4
    assert fw.statistics().decreases == 2


def test_latency_under_target_at_the_ceiling_changes_nothing() -> None:
    fw = _window()
    for taken in range(100):
        assert fw.observe(taken / 1000, TARGET, taken, taken + 16) == 16
    stats = fw.statistics()
    assert (stats.samples, stats.decreases, stats.rounds) == (100, 0, 0)


def test_a_round_under_target_grows_while_the_drain_rate_allows() -> None:
    fw = _window()
    fw.observe(0.0, 1.0, 1, 17)  # cut to 8; the recovery round ends at 17
    assert fw.observe(0.001, 0.0, 17, 25) == 9  # 16 chunks in 1 ms: far under target
    stats = fw.statistics()
    assert (stats.rounds, stats.increases, stats.holds) == (1, 1, 0)
    assert stats.drain_rate == pytest.approx(16_000)


def test_a_round_under_target_holds_when_a_bigger_window_would_wait_too_long() -> None:
    fw = _window()
    fw.observe(0.0, 1.0, 1, 17)  # cut to 8
    # 16 chunks in 0.02 s: 800/s, so 9 chunks would wait 11 ms > 10 ms.
    assert fw.observe(0.02, 0.009, 17, 25) == 8
    stats = fw.statistics()
    assert (stats.increases, stats.holds) == (0, 1)


def test_a_round_needs_progress() -> None:
    fw = _window()
    fw.observe(0.0, 0.0, 0, 0)
    fw.observe(1.0, 0.0, 0, 0)
    assert fw.statistics().rounds == 0


@pytest.mark.parametrize(("now", "taken"), [(-1.0, 10), (1.0, 5)])
def test_a_clock_step_back_or_a_slower_pace_reader_restarts_the_round(
    now: float, taken: int
) -> None:
    fw = _window()
    fw.observe(0.0, 1.0, 10, 26)  # cut to 8; this round ends once 26 are taken
    fw.observe(now, 0.0, taken, 30)  # restarted: the round ends once 30 are taken
    fw.observe(now + 0.001, 0.0, 29, 40)
    assert fw.statistics().rounds == 0
    assert fw.observe(now + 0.002, 0.0, 30, 40) > 8
    assert fw.statistics().rounds == 1


def test_a_negative_latency_counts_as_zero() -> None:
    fw = _window()
    fw.observe(0.0, -5.0, 0, 16)
    assert fw.statistics().last_latency_s == 0.0


# -- properties --------------------------------------------------------------------------

_SAMPLE = st.tuples(
    st.floats(0, 0.01),  # time step
    st.one_of(st.floats(0, 0.002), st.floats(0, 1.0)),  # latency
    st.integers(0, 64),  # chunks taken since the last sample
    st.integers(0, 64),  # chunks in flight after it
)


@st.composite
def _policy(draw: st.DrawFn) -> tuple[int, FlowWindowPolicy]:
    ceiling = draw(st.integers(1, 256))
    policy = FlowWindowPolicy(
        target_latency_s=draw(st.floats(1e-4, 1.0)),
        floor=draw(st.integers(1, 300)),
        increase=draw(st.floats(0.01, 64)),
        decrease=draw(st.floats(0.01, 0.99)),
    )
    return ceiling, policy


def _feed(fw: FlowWindow, samples: list[tuple[float, float, int, int]]) -> tuple[float, int, int]:
    now, taken, released = 0.0, 0, 0
    for step, latency, took, flight in samples:
        now += step
        taken += took
        released = max(released, taken + flight)
        fw.observe(now, latency, taken, released)
    return now, taken, released


@given(_policy(), st.lists(_SAMPLE, max_size=200))
def test_the_window_stays_within_floor_and_ceiling(
    setup: tuple[int, FlowWindowPolicy], samples: list[tuple[float, float, int, int]]
) -> None:
    ceiling, policy = setup
    fw = FlowWindow(ceiling, policy)
    floor = min(policy.floor, ceiling)
    now, taken, released = 0.0, 0, 0
    for step, latency, took, flight in samples:
        now += step
        taken += took
        released = max(released, taken + flight)
        window = fw.observe(now, latency, taken, released)
        assert floor <= window <= ceiling
        assert window == fw.window
    stats = fw.statistics()
    assert stats.samples == len(samples)
    assert stats.increases + stats.holds == stats.rounds


@given(
    _policy(),
    st.lists(_SAMPLE, max_size=60),
    _SAMPLE,
    st.floats(0, 1.0),
    st.floats(0, 0.01),
)
def test_more_latency_or_a_slower_drain_never_gives_a_bigger_window(
    setup: tuple[int, FlowWindowPolicy],
    prefix: list[tuple[float, float, int, int]],
    last: tuple[float, float, int, int],
    more_latency: float,
    more_time: float,
) -> None:
    ceiling, policy = setup
    twins = [FlowWindow(ceiling, policy) for _ in range(3)]
    for fw in twins:
        now, taken, released = _feed(fw, prefix)
    step, latency, took, flight = last
    now += step
    taken += took
    released = max(released, taken + flight)
    base = twins[0].observe(now, latency, taken, released)
    assert twins[1].observe(now, latency + more_latency, taken, released) <= base
    assert twins[2].observe(now + more_time, latency, taken, released) <= base


def _simulate(fw: FlowWindow, period: float, steps: int) -> list[int]:
    """A producer that refills at once and a consumer taking one chunk per ``period``.

    The controller is sampled whenever the producer is blocked, as the
    runtime does; the latency is the exact age of the oldest untaken chunk.
    """
    released_at: deque[float] = deque()
    released = 0
    windows = []
    for taken in range(steps):
        now = taken * period
        while len(released_at) < fw.window:
            released_at.append(now)
            released += 1
        windows.append(fw.observe(now, now - released_at[0], taken, released))
        released_at.popleft()
    return windows


@settings(max_examples=60, deadline=None)
@given(
    ceiling=st.integers(1, 40),
    floor=st.integers(1, 8),
    increase=st.sampled_from([0.5, 1.0, 2.0, 3.5]),
    decrease=st.floats(0.2, 0.8),
    period=st.floats(1e-5, 0.05),
)
def test_a_steady_consumer_converges_to_the_window_its_drain_rate_allows(
    ceiling: int, floor: int, increase: float, decrease: float, period: float
) -> None:
    policy = FlowWindowPolicy(TARGET, floor, increase, decrease)
    fw = FlowWindow(ceiling, policy)
    steps = int(40 * ceiling * ceiling / increase) + 400
    windows = _simulate(fw, period, steps)
    settled = windows[-1]
    # It settles: the last stretch (several rounds) never moves.
    assert set(windows[-4 * ceiling - 50 :]) == {settled}
    floor = min(floor, ceiling)
    # Latency meets the target unless the floor forbids it ...
    assert settled == floor or (settled - 1) * period <= TARGET
    # ... and the window is not smaller than the drain rate needs.
    assert settled == ceiling or settled + increase > TARGET / period * (1 - 1e-9)


@settings(max_examples=40, deadline=None)
@given(
    ceiling=st.integers(1, 40),
    periods=st.tuples(st.floats(1e-5, 0.02), st.floats(1e-5, 0.02)).map(sorted),
)
def test_a_slower_consumer_settles_on_a_window_no_bigger(
    ceiling: int, periods: list[float]
) -> None:
    policy = FlowWindowPolicy(TARGET, 1, 1.0, 0.5)
    steps = 40 * ceiling * ceiling + 400
    fast = _simulate(FlowWindow(ceiling, policy), periods[0], steps)[-1]
    slow = _simulate(FlowWindow(ceiling, policy), periods[1], steps)[-1]
    assert slow <= fast


@given(_policy(), st.lists(_SAMPLE, max_size=100), _SAMPLE)
def test_a_sample_within_the_quiet_latency_changes_nothing(
    setup: tuple[int, FlowWindowPolicy],
    prefix: list[tuple[float, float, int, int]],
    last: tuple[float, float, int, int],
) -> None:
    ceiling, policy = setup
    fw = FlowWindow(ceiling, policy)
    now, taken, released = _feed(fw, prefix)
    quiet = fw.quiet_latency
    assert quiet == (policy.target_latency_s if fw.window == ceiling else -1.0)
    step, _, took, flight = last
    if quiet >= 0:
        before = fw.statistics()
        fw.observe(now + step, quiet, taken + took, max(released, taken + took + flight))
        after = fw.statistics()
        assert after._replace(samples=0, last_latency_s=0) == before._replace(
            samples=0, last_latency_s=0
        )
