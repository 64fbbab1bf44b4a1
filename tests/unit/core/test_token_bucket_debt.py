"""Overdraft (debt) properties of icefloe.core.token_bucket.TokenBucket over simulated time.

The bucket's level may go below zero: a request above the burst is granted
on a full bucket (:meth:`take`), and :meth:`charge` takes whatever it is
asked and says how long the debt lasts. These properties hold for any rate,
burst and pattern of requests:

* a pacer (charge, then wait as told, then act) gets the rate within 2% over
  a long run, and never acts on more than ``burst + rate * elapsed``;
* a try-style taker is granted at most ``burst + rate * elapsed`` plus the
  debt it holds, and that debt is bounded by its largest request's excess;
* a debt is repaid before any new token is granted;
* pacers charging one bucket are served in the order they charged.
"""

from __future__ import annotations

import math
import random

import pytest
from bucketkit import BURSTS, PROPERTY, RATES, bucket_on_clock, bucket_property, patterns, requests
from hypothesis import given
from hypothesis import strategies as st


@bucket_property(seed=st.integers(0, 2**32))
def test_a_pacer_gets_the_rate_within_two_percent(
    rate: float, burst: float, start: float, seed: int
) -> None:
    """Sizes from a twentieth of the burst to three bursts, acting as soon as allowed."""
    clock, bucket = bucket_on_clock(rate, burst, start)
    rng = random.Random(seed)
    acted = 0.0
    while clock.now - start < 100 * burst / rate:
        n = rng.uniform(burst / 20, 3 * burst)
        clock.advance(bucket.charge(n))
        acted += n
    elapsed = clock.now - start
    assert abs(acted / elapsed - rate) <= 0.02 * rate


_patterns = patterns(largest=3.0, max_size=200)


@bucket_property(pattern=_patterns)
def test_a_pacer_never_acts_on_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: float, start: float, pattern: list[tuple[float, float]]
) -> None:
    clock, bucket = bucket_on_clock(rate, burst, start)
    acted = 0.0
    for n in requests(pattern, clock, rate, burst):
        wait = bucket.charge(n)
        assert wait >= 0.0
        clock.advance(wait)  # waits as told, then acts
        acted += n
        # Slack for float rounding: relative to the burst, and the clock's own
        # resolution at its magnitude (times the rate) for each step taken.
        slack = len(pattern) * (1e-9 * burst + 4 * rate * math.ulp(clock.now))
        assert acted <= burst + rate * (clock.now - start) + slack


@bucket_property(pattern=_patterns)
def test_a_taker_is_granted_burst_plus_rate_times_elapsed_plus_a_bounded_debt(
    rate: float, burst: float, start: float, pattern: list[tuple[float, float]]
) -> None:
    clock, bucket = bucket_on_clock(rate, burst, start)
    granted = 0.0
    largest = 0.0
    for n in requests(pattern, clock, rate, burst):
        wait = bucket.take(n)
        assert wait >= 0.0
        if wait == 0.0:
            granted += n
            largest = max(largest, n)
        debt = max(0.0, -bucket.tokens)
        slack = 1e-9 * burst * len(pattern) + 1e-6 * burst
        # Overdraft bounded: never more than the largest granted request's excess.
        assert debt <= max(0.0, largest - burst) + slack
        assert granted - debt <= burst + rate * (clock.now - start) + slack


@PROPERTY
@given(
    rate=RATES,
    burst=BURSTS,
    excess=st.floats(0.01, 10.0),
    asks=st.lists(st.tuples(st.floats(0.0, 0.999), st.floats(0.0, 3.0)), max_size=20),
    charged=st.booleans(),
)
def test_debt_is_repaid_before_any_new_token_is_granted(
    rate: float,
    burst: float,
    excess: float,
    asks: list[tuple[float, float]],
    charged: bool,
) -> None:
    clock, bucket = bucket_on_clock(rate, burst, 1000.0)
    n = burst * (1 + excess)
    if charged:
        assert bucket.charge(n) == pytest.approx(burst * excess / rate)
    else:
        assert bucket.take(n) == 0.0
    repaid_at = clock.now + burst * excess / rate
    for when, size in asks:  # any request, at any time before the debt is repaid
        clock.now = max(clock.now, 1000.0 + when * (repaid_at - 1000.0))
        if clock.now >= repaid_at * (1 - 1e-12):
            break
        assert bucket.time_until(size * burst) >= repaid_at - clock.now - 1e-9 * repaid_at
        assert not bucket.try_take(size * burst)


@PROPERTY
@given(
    rate=RATES,
    burst=BURSTS,
    sizes=st.lists(st.floats(0.0, 3.0), min_size=2, max_size=30),
)
def test_pacers_are_served_in_the_order_they_charged(
    rate: float, burst: float, sizes: list[float]
) -> None:
    _, bucket = bucket_on_clock(rate, burst, 50.0)
    waits = [bucket.charge(size * burst) for size in sizes]  # all at one instant
    assert waits == sorted(waits)
    # ...and the last one waits exactly for everything beyond the burst.
    total = sum(sizes) * burst
    assert waits[-1] == pytest.approx(max(0.0, total - burst) / rate, rel=1e-9, abs=1e-12)


def test_giving_back_a_charge_restores_the_level_up_to_the_burst() -> None:
    _, bucket = bucket_on_clock(100.0, 1000.0)
    assert bucket.charge(1500.0) == pytest.approx(5.0)  # overdrawn by 500 at 100/s
    assert bucket.charge(-1500.0) == 0.0
    assert bucket.tokens == 1000.0
    assert bucket.charge(-2000.0) == 0.0
    assert bucket.tokens == 1000.0  # capped
    assert bucket.statistics().admitted == -2000.0  # net of what was given back


def test_retuning_the_rate_keeps_the_time_until_full() -> None:
    clock, bucket = bucket_on_clock(10.0, 2.0)
    for _ in range(5):
        bucket.charge(1.0)  # 3 tokens of debt: full again in 0.5 s
    bucket.rate = 5.0
    assert bucket.tokens == pytest.approx(2.0 - 5 * 0.5)
    clock.advance(0.5)
    assert bucket.tokens == pytest.approx(2.0)
    with pytest.raises(ValueError):
        bucket.rate = 0.0
