"""Shared measurement vocabulary: samples, percentiles and per-scenario summaries.

A *sample* is what one run of one variant (floor or icefloe) of a scenario
measured, as ``{metric name: value}``. A :class:`Metric` says whether larger
values are better, which decides what "best of the rounds" means.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

__all__ = [
    "CHUNKS_PER_S",
    "DELIVERIES_PER_S",
    "FAN_OUT_METRICS",
    "LATENCY_METRICS",
    "P50_MS",
    "P50_US",
    "P99_MS",
    "P99_US",
    "THROUGHPUT_METRICS",
    "Metric",
    "Sample",
    "Summary",
    "latency_ms_sample",
    "latency_sample",
    "percentile",
    "rounded",
    "summarise",
    "throughput_sample",
]

#: one run's measurements, keyed by metric name
Sample = Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Metric:
    """A measured quantity and how to compare it across rounds and variants."""

    #: key in a :data:`Sample` and in the report
    name: str
    #: True for rates (best = max), False for latencies (best = min)
    higher_is_better: bool
    #: report key for ``icefloe / floor`` of this metric
    ratio_key: str
    #: decimal places kept in the report
    digits: int


CHUNKS_PER_S = Metric("chunks_per_s", higher_is_better=True, ratio_key="ratio", digits=0)
DELIVERIES_PER_S = Metric("deliveries_per_s", higher_is_better=True, ratio_key="ratio", digits=0)
P50_US = Metric("p50_us", higher_is_better=False, ratio_key="p50_ratio", digits=2)
P99_US = Metric("p99_us", higher_is_better=False, ratio_key="p99_ratio", digits=2)
#: the edge scenarios' latencies (a request and its answer), in ms
P50_MS = Metric("p50_ms", higher_is_better=False, ratio_key="p50_ratio", digits=3)
P99_MS = Metric("p99_ms", higher_is_better=False, ratio_key="p99_ratio", digits=3)

THROUGHPUT_METRICS: tuple[Metric, ...] = (CHUNKS_PER_S,)
FAN_OUT_METRICS: tuple[Metric, ...] = (DELIVERIES_PER_S,)
LATENCY_METRICS: tuple[Metric, ...] = (P50_US, P99_US)


class Summary(TypedDict):
    """Best and median of one metric over all rounds."""

    best: float
    median: float


def throughput_sample(items: int, seconds: float, metric: Metric = CHUNKS_PER_S) -> Sample:
    """A throughput sample: ``items`` delivered in ``seconds``, as ``metric``."""
    return {metric.name: items / seconds}


def percentile(sorted_values: Sequence[int], fraction: float) -> int:
    """Nearest-rank percentile of already sorted values (``fraction`` in (0, 1])."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_sample(latencies_ns: list[int]) -> Sample:
    """p50 and p99 of per-chunk latencies, converted from ns to µs.

    Sorts ``latencies_ns`` in place (the caller owns and discards it).
    """
    return _percentiles(latencies_ns, P50_US, P99_US, 1e3)


def latency_ms_sample(latencies_ns: list[int]) -> Sample:
    """p50 and p99 of request latencies, converted from ns to ms.

    Sorts ``latencies_ns`` in place (the caller owns and discards it).
    """
    return _percentiles(latencies_ns, P50_MS, P99_MS, 1e6)


def _percentiles(latencies_ns: list[int], p50: Metric, p99: Metric, ns_per_unit: float) -> Sample:
    latencies_ns.sort()
    return {
        p50.name: percentile(latencies_ns, 0.50) / ns_per_unit,
        p99.name: percentile(latencies_ns, 0.99) / ns_per_unit,
    }


def summarise(metric: Metric, samples: Sequence[Sample]) -> Summary:
    """Best (max or min, per ``metric``) and median of ``metric`` over ``samples``, unrounded."""
    values = [s[metric.name] for s in samples]
    best = max(values) if metric.higher_is_better else min(values)
    return Summary(best=best, median=statistics.median(values))


def rounded(summary: Summary, metric: Metric) -> Summary:
    """``summary`` rounded to ``metric.digits`` (whole numbers as ints)."""

    def fix(value: float) -> float:
        return round(value) if metric.digits == 0 else round(value, metric.digits)

    return Summary(best=fix(summary["best"]), median=fix(summary["median"]))
