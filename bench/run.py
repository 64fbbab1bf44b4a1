"""icefloe benchmark suite: every figure beside a raw-asyncio floor from the same run.

Usage::

    python bench/run.py [--uvloop] [--quick] [--rounds N] [--no-http]

Prints one JSON object to stdout (progress goes to stderr). For robust ratios
on a small, noisy machine, the floor and icefloe variants of every scenario
run interleaved for ``--rounds`` rounds (their order alternating per round,
after one unrecorded warm-up run each); the report gives the best (max
throughput, min latency percentile) and the median of each, and the ratios
``icefloe / floor`` of both. GC stays enabled; ``gc.collect()`` runs before
every measured run. Headline ratios and targets use the best values.

Scenarios (N = 200,000 chunks, 20,000 round trips for ``paced_latency``;
``--quick`` divides sizes by 10):

* ``one_hop``: one node emits N chunks to ``flow.stream``; chunks/s.
* ``pipeline_3``: a -> b -> c, b and c re-emit every chunk; chunks/s at the consumer.
* ``loaded_latency``: stamp-to-receipt latency through one hop at full speed;
  p50/p99 µs and ``p99_ratio``.
* ``paced_latency``: ping-pong, one chunk in flight; p50/p99 one-way µs.
* ``fan_out_4``: one node, 4 counting sinks; deliveries/s (4*N / elapsed).
* ``memory``: RSS after ``import icefloe`` vs ``import asyncio`` in fresh
  interpreters, this process's peak RSS, and that starlette/uvicorn stay unloaded.

HTTP scenarios (``bench/edge.py``; after the memory figures, so they do not
touch them; ``--no-http`` skips them): the ASGI app under uvicorn against
raw ``asyncio.start_server`` floors, every server in a child interpreter and
the clients here. Each scenario's servers start before its warm-up and stop
after its last round, and its rounds run back to back (3 for the heavy ones,
5 for ``time_to_first_token``, or ``--rounds`` if fewer):

* ``sse_fan_out``: one stream of 2,000 chunks to 1,000 raw SSE clients;
  delivered events/s and ``ratio`` (target >= 0.5).
* ``time_to_first_token``: POST + SSE GET until the first chunk event,
  200 sequential iterations with httpx; p50/p99 ms (floor: the same two
  exchanges as bare TCP round trips).
* ``sse_idle_memory``: server RSS per idle SSE connection (1,000), KiB.

WebSocket scenarios (``bench/ws.py``; after the HTTP ones, run the same way,
and skipped with them by ``--no-http``): chunks/s over one ``/v1/ws``
connection (``ws_{json,msgpack}_{1,100}[_deflate]``: 1 or 100 multiplexed
streams, each format, with and without permessage-deflate) against a bare
``websockets`` server sending the same pre-encoded frames, and
``ws_first_chunk`` (start to first chunk, p50/p99 ms).

Kafka connector scenario (``bench/kafka_connector.py``; after the WebSocket
ones, skipped with them by ``--no-http``, and skipped with a message when
the ``tansu`` broker or confluent-kafka is not installed):
``kafka_round_trip``, chunk records through ``KafkaSink`` and back through
``KafkaSource`` against a broker on loopback, beside the raw confluent-kafka
client doing the same work (target >= 0.7).

Redis Streams connector scenario (``bench/connectors.py``; after the Kafka
one, skipped with it by ``--no-http``, and skipped with a message when no
Redis answers at ``ICEFLOE_BENCH_REDIS``, default ``redis://127.0.0.1:6379/0``):
``redis_streams_round_trip``, chunks through ``RedisStreamsSink`` and back
through ``RedisStreamsSource`` with reassembly and per-record acks, beside
raw redis-py doing the same work (target >= 0.7).

Backplane scenario (``bench/backplane.py``, run as its own command since it
spawns a producer and a reader process; after the Redis Streams one, skipped
with it by ``--no-http`` and when no Redis answers): ``backplane``, one
stream produced in one process and read in another through Redis, beside
raw redis-py ``XADD``/``XREAD`` doing the same work in the same run (target
``backplane_ratio`` >= 0.7), with the added latency per chunk (p50/p99 ms).

Durable latency (``bench/durable.py --stores sqlite``, its own command):
``durable_latency``, the latency ``at_least_once`` and ``exactly_once`` add
over ``at_most_once`` in the same rounds, chunk creation to reader (median
of the rounds' added p50/p99; target added p99 <= 5 ms each).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, TypedDict

import icefloe
from durable_scenarios import icefloe_one_hop_at_least_once, icefloe_one_hop_exactly_once
from floors import (
    floor_fan_out_4,
    floor_loaded_latency,
    floor_one_hop,
    floor_paced_latency,
    floor_pipeline_3,
)
from hub import hub_scenarios, idle_subscriber_bytes
from measure import (
    CHUNKS_PER_S,
    FAN_OUT_METRICS,
    LATENCY_METRICS,
    P99_US,
    THROUGHPUT_METRICS,
    Metric,
    Sample,
    Summary,
    rounded,
    summarise,
)
from memory import MemoryReport, memory_report
from scenarios import (
    icefloe_fan_out_4,
    icefloe_loaded_latency,
    icefloe_one_hop,
    icefloe_paced_latency,
    icefloe_pipeline_3,
)

#: chunks per throughput / loaded-latency run
THROUGHPUT_SIZE = 200_000
#: round trips per paced-latency run
PACED_SIZE = 20_000
#: divisor applied to every size by ``--quick``
QUICK_DIVISOR = 10
#: divisor giving the unrecorded warm-up size
WARMUP_DIVISOR = 20
DEFAULT_ROUNDS = 5
RATIO_DIGITS = 3

Variant = Literal["floor", "icefloe"]
RunFn = Callable[[int], Awaitable[Sample]]
Comparison = Literal[">=", "<=", "<"]


@dataclass(frozen=True, slots=True)
class Options:
    """Command-line options."""

    uvloop: bool
    quick: bool
    rounds: int
    http: bool
    #: scenario names to run; empty runs them all
    only: frozenset[str] = frozenset()

    def wants(self, name: str) -> bool:
        return not self.only or name in self.only


@dataclass(frozen=True, slots=True)
class Scenario:
    """One comparison: the same workload as raw asyncio and as icefloe."""

    name: str
    #: chunks (or round trips) per run
    size: int
    unit: str
    metrics: tuple[Metric, ...]
    floor: RunFn
    icefloe: RunFn

    def runner(self, variant: Variant) -> RunFn:
        return self.floor if variant == "floor" else self.icefloe


@dataclass(slots=True)
class Collected:
    """Samples of both variants of one scenario, one per round."""

    floor: list[Sample] = field(default_factory=list)
    icefloe: list[Sample] = field(default_factory=list)

    def add(self, variant: Variant, sample: Sample) -> None:
        (self.floor if variant == "floor" else self.icefloe).append(sample)


class VariantReport(TypedDict):
    """Best and median of every metric of one variant, rounded for the report."""

    floor: dict[str, Summary]
    icefloe: dict[str, Summary]


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """One scenario's outcome: summaries of both variants and their ratios."""

    size: int
    unit: str
    summaries: VariantReport
    #: ``icefloe / floor`` per metric (``ratio``, ``p99_ratio``...), best and median
    ratios: dict[str, float]
    #: further facts of the scenario (sizes, rounds, medians of diagnostic values)
    details: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        summaries = {"size": self.size, "unit": self.unit, **self.summaries}
        return {**summaries, **self.ratios, **self.details}


@dataclass(frozen=True, slots=True)
class Target:
    """A goal for one reported value."""

    value: float
    comparison: Comparison
    bound: float

    @property
    def met(self) -> bool:
        if self.comparison == ">=":
            return self.value >= self.bound
        if self.comparison == "<=":
            return self.value <= self.bound
        return self.value < self.bound

    def to_json(self) -> dict[str, object]:
        return {"value": self.value, "target": f"{self.comparison} {self.bound}", "met": self.met}


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio")
    parser.add_argument("--quick", action="store_true", help="divide every size by 10")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="interleaved rounds")
    parser.add_argument(
        "--no-http", action="store_true", help="skip the HTTP and WebSocket edge scenarios"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated scenario names to run (default: all)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    only = frozenset(name.strip() for name in args.only.split(",") if name.strip())
    return Options(
        uvloop=args.uvloop,
        quick=args.quick,
        rounds=args.rounds,
        http=not args.no_http,
        only=only,
    )


def build_scenarios(quick: bool) -> tuple[Scenario, ...]:
    """The scenario table, sized for a default or a ``--quick`` run."""
    divisor = QUICK_DIVISOR if quick else 1
    n = THROUGHPUT_SIZE // divisor
    paced = PACED_SIZE // divisor
    chunks = "chunks/s"
    deliveries = "deliveries/s"
    micros = "us"
    return (
        Scenario("one_hop", n, chunks, THROUGHPUT_METRICS, floor_one_hop, icefloe_one_hop),
        # Durable one_hop (issue 11): the "floor" is at_most_once icefloe_one_hop.
        Scenario(
            "one_hop_at_least_once",
            n,
            chunks,
            THROUGHPUT_METRICS,
            icefloe_one_hop,
            icefloe_one_hop_at_least_once,
        ),
        Scenario(
            "one_hop_exactly_once",
            n,
            chunks,
            THROUGHPUT_METRICS,
            icefloe_one_hop,
            icefloe_one_hop_exactly_once,
        ),
        Scenario("pipeline_3", n, chunks, THROUGHPUT_METRICS, floor_pipeline_3, icefloe_pipeline_3),
        Scenario(
            "loaded_latency",
            n,
            micros,
            LATENCY_METRICS,
            floor_loaded_latency,
            icefloe_loaded_latency,
        ),
        Scenario(
            "paced_latency",
            paced,
            micros,
            LATENCY_METRICS,
            floor_paced_latency,
            icefloe_paced_latency,
        ),
        Scenario("fan_out_4", n, deliveries, FAN_OUT_METRICS, floor_fan_out_4, icefloe_fan_out_4),
        *(
            Scenario(name, n, deliveries, FAN_OUT_METRICS, floor, ice)
            for name, floor, ice in hub_scenarios()
        ),
    )


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def variant_order(round_index: int) -> tuple[Variant, Variant]:
    """Floor first on even rounds, icefloe first on odd ones, to cancel order bias."""
    return ("floor", "icefloe") if round_index % 2 == 0 else ("icefloe", "floor")


async def measured(fn: RunFn, size: int) -> Sample:
    """One run of ``fn`` after a full collection, so no run pays for another's garbage."""
    gc.collect()
    return await fn(size)


async def warm_up(scenarios: Sequence[Scenario]) -> None:
    """One small unrecorded run of every variant: imports, caches, allocator pools."""
    for scenario in scenarios:
        for variant in variant_order(0):
            await measured(scenario.runner(variant), max(100, scenario.size // WARMUP_DIVISOR))


async def run_round(scenario: Scenario, round_index: int, collected: Collected) -> None:
    """One measured run of each variant of ``scenario``, in this round's order."""
    for variant in variant_order(round_index):
        sample = await measured(scenario.runner(variant), scenario.size)
        collected.add(variant, sample)
        shown = ", ".join(f"{k}={v:,.2f}" for k, v in sample.items())
        progress(f"  {scenario.name:<15} {variant:<8} {shown}")


async def collect(scenarios: Sequence[Scenario], rounds: int) -> dict[str, Collected]:
    """Run every scenario's two variants interleaved, ``rounds`` times."""
    collected = {s.name: Collected() for s in scenarios}
    progress("warming up")
    await warm_up(scenarios)
    for r in range(rounds):
        progress(f"round {r + 1}/{rounds}")
        for scenario in scenarios:
            await run_round(scenario, r, collected[scenario.name])
    return collected


def load_http_bench(file: str = "edge.py") -> ModuleType:
    """``bench/edge.py`` (or ``ws.py``), loaded by path (only when the HTTP scenarios run)."""
    spec = spec_from_file_location(f"bench_{Path(file).stem}", Path(__file__).with_name(file))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load bench/{file}")
    module = module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


async def collect_http(
    scenarios: Sequence[Any], rounds: int
) -> dict[str, tuple[Scenario, Collected, int]]:
    """Each HTTP scenario's rounds, both variants interleaved, while its servers run.

    Returns, per scenario, the scenario as run, its samples and its rounds.
    """
    results: dict[str, tuple[Scenario, Collected, int]] = {}
    for http_scenario in scenarios:
        scenario_rounds = min(rounds, http_scenario.rounds)
        progress(f"{http_scenario.name}: starting servers")
        async with http_scenario.session() as (floor, ice):
            scenario = Scenario(
                http_scenario.name,
                http_scenario.size,
                http_scenario.unit,
                http_scenario.metrics,
                floor,
                ice,
            )
            if http_scenario.warm_up:
                progress(f"{scenario.name}: warming up")
                await warm_up([scenario])
            collected = Collected()
            for r in range(scenario_rounds):
                progress(f"{scenario.name}: round {r + 1}/{scenario_rounds}")
                await run_round(scenario, r, collected)
        results[scenario.name] = (scenario, collected, scenario_rounds)
    return results


def _ratio(icefloe_value: float, floor_value: float) -> float:
    return round(icefloe_value / floor_value, RATIO_DIGITS)


def scenario_result(scenario: Scenario, samples: Collected) -> ScenarioResult:
    """Best/median per variant and metric, and ``icefloe / floor`` ratios of both."""
    floor = {m.name: summarise(m, samples.floor) for m in scenario.metrics}
    ice = {m.name: summarise(m, samples.icefloe) for m in scenario.metrics}
    ratios: dict[str, float] = {}
    for m in scenario.metrics:
        ratios[m.ratio_key] = _ratio(ice[m.name]["best"], floor[m.name]["best"])
        ratios[f"{m.ratio_key}_median"] = _ratio(ice[m.name]["median"], floor[m.name]["median"])
    summaries = VariantReport(
        floor={m.name: rounded(floor[m.name], m) for m in scenario.metrics},
        icefloe={m.name: rounded(ice[m.name], m) for m in scenario.metrics},
    )
    return ScenarioResult(scenario.size, scenario.unit, summaries, ratios)


def diagnostic_medians(scenario: Scenario, samples: Collected) -> dict[str, object]:
    """Median per variant of every sampled value that is not one of the metrics."""
    names = {m.name for m in scenario.metrics}
    extra = sorted({k for s in (*samples.floor, *samples.icefloe) for k in s} - names)
    return {
        key: {
            "floor": round(statistics.median(s[key] for s in samples.floor), RATIO_DIGITS),
            "icefloe": round(statistics.median(s[key] for s in samples.icefloe), RATIO_DIGITS),
        }
        for key in extra
    }


def http_result(
    http_scenario: Any, scenario: Scenario, samples: Collected, rounds: int
) -> ScenarioResult:
    """:func:`scenario_result` with the HTTP scenario's sizes, rounds and diagnostics."""
    result = scenario_result(scenario, samples)
    details = {**http_scenario.params, "rounds": rounds, **diagnostic_medians(scenario, samples)}
    return ScenarioResult(result.size, result.unit, result.summaries, result.ratios, details)


def targets(results: dict[str, ScenarioResult], memory: MemoryReport) -> dict[str, object]:
    """The project's performance goals, evaluated on the best-of-rounds ratios."""
    goals: dict[str, Target] = {}
    if "one_hop" in results:
        goals["one_hop_ratio"] = Target(
            results["one_hop"].ratios[CHUNKS_PER_S.ratio_key], ">=", 1.0
        )
    for name, goal in (("one_hop_at_least_once", 0.5), ("one_hop_exactly_once", 0.3)):
        if name in results:  # durable rate / at_most_once rate (issue 11)
            goals[f"{name}_ratio"] = Target(
                results[name].ratios[CHUNKS_PER_S.ratio_key], ">=", goal
            )
    if "pipeline_3" in results:
        ratio = results["pipeline_3"].ratios[CHUNKS_PER_S.ratio_key]
        goals["pipeline_3_ratio"] = Target(ratio, ">=", 0.8)
    if "loaded_latency" in results:
        ratio = results["loaded_latency"].ratios[P99_US.ratio_key]
        goals["loaded_latency_p99_ratio"] = Target(ratio, "<=", 1.5)
    goals["rss_after_import_mb"] = Target(memory["rss_after_import_mb"], "<", 25.0)
    for name in ("hub_fan_out_1", "hub_fan_out_100", "hub_fan_out_1000"):
        if name in results:
            goals[f"{name}_ratio"] = Target(results[name].ratios["ratio"], ">=", 0.5)
    if "sse_fan_out" in results:
        goals["sse_fan_out_ratio"] = Target(results["sse_fan_out"].ratios["ratio"], ">=", 0.5)
    if "kafka_round_trip" in results:
        ratio = results["kafka_round_trip"].ratios["ratio"]
        goals["kafka_round_trip_ratio"] = Target(ratio, ">=", 0.7)
    if "redis_streams_round_trip" in results:
        ratio = results["redis_streams_round_trip"].ratios["ratio"]
        goals["redis_streams_round_trip_ratio"] = Target(ratio, ">=", 0.7)
    return {name: goal.to_json() for name, goal in goals.items()}


def loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop]:
    if use_uvloop:
        import uvloop  # optional dependency: only imported when asked for

        return uvloop.new_event_loop
    return asyncio.new_event_loop


async def loop_name() -> str:
    """``uvloop`` or ``asyncio``, from the loop actually running."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"


def metadata(options: Options, event_loop: str, http: dict[str, object]) -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "event_loop": event_loop,
        "cpu_count": os.cpu_count(),
        "icefloe_version": icefloe.__version__,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "rounds": options.rounds,
        "quick": options.quick,
        "gc_enabled": gc.isenabled(),
        "http": http,
    }


def run(options: Options) -> dict[str, object]:
    """Run the whole suite and return the report."""
    scenarios = tuple(s for s in build_scenarios(options.quick) if options.wants(s.name))
    with asyncio.Runner(loop_factory=loop_factory(options.uvloop)) as runner:
        event_loop = runner.run(loop_name())
        collected = runner.run(collect(scenarios, options.rounds))
    results = {s.name: scenario_result(s, collected[s.name]) for s in scenarios}
    progress("measuring memory")
    memory = memory_report()
    with asyncio.Runner(loop_factory=loop_factory(options.uvloop)) as runner:
        hub_memory = runner.run(idle_subscriber_bytes())
    http: dict[str, object] = {"ran": options.http}
    if options.http:
        started = time.perf_counter()
        bench_http = load_http_bench()
        bench_ws = load_http_bench("ws.py")
        divisor = QUICK_DIVISOR if options.quick else 1
        http_scenarios = tuple(
            hs
            for hs in (
                *bench_http.http_scenarios(divisor, options.uvloop),
                *bench_ws.ws_scenarios(divisor, options.uvloop),
            )
            if options.wants(hs.name)
        )
        with asyncio.Runner(loop_factory=loop_factory(options.uvloop)) as runner:
            http_collected = runner.run(collect_http(http_scenarios, options.rounds))
        for hs in http_scenarios:
            scenario, samples, rounds = http_collected[hs.name]
            results[hs.name] = http_result(hs, scenario, samples, rounds)
        connector_scenarios = tuple(
            cs
            for cs in (
                *load_http_bench("kafka_connector.py").kafka_scenarios(divisor),
                *load_http_bench("connectors.py").redis_scenarios(divisor),
            )
            if options.wants(cs.name)
        )
        with asyncio.Runner(loop_factory=loop_factory(options.uvloop)) as runner:
            connector_collected = runner.run(collect_http(connector_scenarios, options.rounds))
        for cs in connector_scenarios:
            scenario, samples, rounds = connector_collected[cs.name]
            results[cs.name] = http_result(cs, scenario, samples, rounds)
        backplane = backplane_bench(options, divisor)
        http["layout"] = bench_http.LAYOUT
        http["ws_layout"] = bench_ws.LAYOUT
        http["seconds"] = round(time.perf_counter() - started, 1)
    else:
        backplane = None
    latency = durable_latency(options)
    goals = targets(results, memory)
    for level in ("at_least_once", "exactly_once") if latency is not None else ():
        added = latency[f"{level}/sqlite"]["added_p99_ms_median"]
        goals[f"one_hop_{level}_added_p99_ms"] = Target(added, "<=", 5.0).to_json()
    if backplane is not None:
        goals["backplane_ratio"] = Target(backplane["ratio"], ">=", 0.7).to_json()
    return {
        "meta": metadata(options, event_loop, http),
        "scenarios": {name: result.to_json() for name, result in results.items()},
        "durable_latency": latency,
        "backplane": backplane,
        "memory": {**memory, **hub_memory},
        "targets": goals,
    }


#: chunks of the durable latency scenario (``--quick`` divides it)
DURABLE_LATENCY_CHUNKS = 20_000


def durable_latency(options: Options) -> dict[str, Any] | None:
    """``bench/durable.py`` over SQLite: the latency ``at_least_once`` and
    ``exactly_once`` add to ``at_most_once`` in the same rounds (p50/p99 ms;
    target: added p99 <= 5 ms). None: not wanted."""
    if not options.wants("durable_latency"):
        return None
    divisor = QUICK_DIVISOR if options.quick else 1
    args = [
        sys.executable,
        str(Path(__file__).with_name("durable.py")),
        "--stores",
        "sqlite",
        "--chunks",
        str(DURABLE_LATENCY_CHUNKS // divisor),
        "--rounds",
        str(max(options.rounds, 3)),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(args, capture_output=True, text=True, timeout=900, check=False, env=env)
    if done.returncode != 0:
        print(f"durable_latency: failed: {done.stderr[-2000:]}", file=sys.stderr)
        return None
    report: dict[str, Any] = json.loads(done.stdout)
    return report


#: chunks of the backplane scenario (``--quick`` divides it)
BACKPLANE_CHUNKS = 20_000


def backplane_bench(options: Options, divisor: int) -> dict[str, Any] | None:
    """``bench/backplane.py`` against the bench's Redis: icefloe's backplane
    beside raw redis-py in the same run (None: not wanted, or no Redis)."""
    if not options.wants("backplane"):
        return None
    connectors = load_http_bench("connectors.py")
    if not connectors.reachable_redis():
        print("backplane: skipped, no Redis answers", file=sys.stderr)
        return None
    args = [
        sys.executable,
        str(Path(__file__).with_name("backplane.py")),
        "--redis",
        connectors.URL,
        "--chunks",
        str(BACKPLANE_CHUNKS // divisor),
        "--rounds",
        str(max(options.rounds, 3)),
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        print(f"backplane: failed: {done.stderr[-2000:]}", file=sys.stderr)
        return None
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    report = run(parse_args(argv))
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
