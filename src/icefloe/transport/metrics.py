"""Prometheus metrics of the edge (``GET /metrics``).

Series are labelled by tenant where a figure is per tenant, never by
subscriber or stream id (unbounded, and each a client's own). With
authentication on, only a principal with the ``metrics`` scope reads them
(:mod:`icefloe.transport.routes_ops`).

Flow-wide figures are read from ``flow.stats()`` at scrape time (a custom
collector, so nothing is counted twice); the edge's own events are counters
and histograms updated per write, never per chunk per client.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from icefloe.core.messages import StreamChunk
from icefloe.hub import Hub
from icefloe.runtime.flow import Flow, FlowStatistics
from icefloe.runtime.stream_types import WindowTotals
from icefloe.transport.idempotency import ExpiringMap
from icefloe.transport.ws_sender import WsSendStatistics

__all__ = ["EdgeMetrics"]

#: tenants listed in the per-tenant drop series (the most dropping first):
#: the rest are in the hub-wide totals, so a scrape stays small however many
#: tenants drop. No series is labelled per subscriber: subscriber ids are
#: unbounded (one series each would grow without limit) and a client's own.
MAX_TENANT_SERIES = 100

#: seconds a start time is kept for its stream's time to first token
POSTED_TTL_S = 60.0

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class _FlowCollector(Collector):
    def __init__(self, flow: Flow) -> None:
        self._flow = flow

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._flow.stats()
        streams = stats.streams
        yield GaugeMetricFamily("icefloe_streams_active", "Streams running now", streams.active)
        yield GaugeMetricFamily(
            "icefloe_streams_registered",
            "Streams registered (running or lingering)",
            streams.registered,
        )
        yield GaugeMetricFamily(
            "icefloe_bytes_in_flight", "Bytes held in all streams", streams.bytes_in_flight
        )
        yield GaugeMetricFamily(
            "icefloe_queue_depth",
            "Messages waiting in node inboxes and the egress",
            stats.queue_depth,
        )
        yield CounterMetricFamily("icefloe_streams_admitted", "Streams admitted", streams.admitted)
        yield CounterMetricFamily(
            "icefloe_streams_refused", "Streams refused as overloaded", streams.refused
        )
        flow = self._flow
        observed = CounterMetricFamily(
            "icefloe_latency_budget_observations",
            "Chunks measured against their node's latency budget",
            labels=["node"],
        )
        violated = CounterMetricFamily(
            "icefloe_latency_budget_violations",
            "Chunks that took longer than their node's latency budget",
            labels=["node"],
        )
        for node in stats.nodes:
            if node.latency is not None:
                observed.add_metric([node.name], node.latency.observations)
                violated.add_metric([node.name], node.latency.violations)
        yield observed
        yield violated
        # Zero with shedding off: the family is always there for dashboards.
        shed = 0 if stats.shedding is None else stats.shedding.refused
        yield CounterMetricFamily("icefloe_streams_shed", "Streams refused by load shedding", shed)
        state = GaugeMetricFamily(
            "icefloe_congestion_state",
            "Load: 0 normal, 1 congested, 2 overloaded",
            labels=["state"],
        )
        state.add_metric([flow.congestion.value], flow.congestion.level)
        yield state
        if flow.load is not None:
            load = flow.load.statistics()
            yield GaugeMetricFamily(
                "icefloe_loop_lag_seconds", "Event-loop lag at the last probe", load.last_lag_s
            )
            yield CounterMetricFamily(
                "icefloe_congestion_transitions",
                "Changes of congestion state",
                load.congestion.transitions,
            )
        yield from _budget_metrics(stats)
        yield from _window_metrics(stats.windows)
        yield CounterMetricFamily("icefloe_chunks_emitted", "Chunks released", streams.emitted)
        yield CounterMetricFamily(
            "icefloe_chunks_delivered", "Chunks handed to readers", streams.delivered
        )


def _budget_metrics(stats: FlowStatistics) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """Throttling, shedding of accepted streams, and byte budgets per tenant."""
    shedding = stats.shedding
    if shedding is not None:
        yield CounterMetricFamily(
            "icefloe_streams_shed_accepted",
            "Accepted low-priority at_most_once streams ended as overloaded",
            shedding.shed_accepted,
        )
        yield CounterMetricFamily(
            "icefloe_runs_throttled", "Runs whose start was delayed", shedding.throttle.delayed
        )
        yield GaugeMetricFamily(
            "icefloe_throttle_rate", "Throttled admissions per second", shedding.throttle.rate
        )
    budgets = stats.budgets
    if budgets is None:
        return
    yield GaugeMetricFamily(
        "icefloe_inflight_bytes", "Bytes released and not yet read", budgets.inflight_bytes
    )
    yield CounterMetricFamily(
        "icefloe_budget_memory_waits", "Producer waits for in-flight bytes", budgets.memory_waits
    )
    inflight = GaugeMetricFamily(
        "icefloe_tenant_inflight_bytes", "Bytes in flight per tenant", labels=["tenant"]
    )
    throttled = CounterMetricFamily(
        "icefloe_tenant_throttled_seconds",
        "Seconds producers waited on bytes/s budgets",
        labels=["tenant"],
    )
    refused = CounterMetricFamily(
        "icefloe_tenant_refused", "Streams refused as limit_exceeded", labels=["tenant"]
    )
    for tenant in budgets.tenants:
        inflight.add_metric([tenant.tenant], tenant.inflight_bytes)
        throttled.add_metric([tenant.tenant], tenant.throttled_s)
        refused.add_metric([tenant.tenant], tenant.refused)
    yield inflight
    yield throttled
    yield refused


def _window_metrics(windows: WindowTotals) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """The adaptive stream windows (docs/qos.md, "Adaptive windows")."""
    yield GaugeMetricFamily(
        "icefloe_adapted_windows", "Running streams whose window has adapted", windows.adapted
    )
    yield GaugeMetricFamily(
        "icefloe_adapted_window_chunks", "Sum of the adapted windows, in chunks", windows.window_sum
    )
    changes = CounterMetricFamily(
        "icefloe_window_changes",
        "Adaptive window changes of running streams",
        labels=["direction"],
    )
    changes.add_metric(["increase"], windows.increases)
    changes.add_metric(["decrease"], windows.decreases)
    yield changes


class _HubCollector(Collector):
    """The hub's totals, and drops per tenant for the worst droppers."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._hub.statistics()
        yield GaugeMetricFamily("icefloe_hub_topics", "Hub topics held", stats.topics)
        yield GaugeMetricFamily(
            "icefloe_hub_subscribers", "Hub subscriptions open", stats.subscribers
        )
        yield GaugeMetricFamily(
            "icefloe_hub_bytes_held", "Bytes held by hub buffers and histories", stats.bytes_held
        )
        yield CounterMetricFamily("icefloe_hub_published", "Events published", stats.published)
        yield CounterMetricFamily(
            "icefloe_hub_delivered", "Events handed to subscribers", stats.delivered
        )
        dropped = CounterMetricFamily(
            "icefloe_hub_dropped", "Events dropped by overflow policies", labels=["policy"]
        )
        dropped.add_metric(["drop_oldest"], stats.dropped_oldest)
        dropped.add_metric(["drop_newest"], stats.dropped_newest)
        yield dropped
        yield CounterMetricFamily(
            "icefloe_hub_disconnected",
            "Subscribers cut by the disconnect policy",
            stats.disconnected,
        )
        yield _tenant_drops(self._hub)


def _tenant_drops(hub: Hub) -> GaugeMetricFamily:
    """Events dropped by each tenant's open subscriptions, for the
    :data:`MAX_TENANT_SERIES` tenants that dropped most (a gauge: it falls
    when a subscription that dropped closes)."""
    drops: dict[str, list[int]] = {}
    for sub in hub.subscriber_statistics():
        if sub.dropped_oldest or sub.dropped_newest:
            counts = drops.setdefault(sub.tenant, [0, 0])
            counts[0] += sub.dropped_oldest
            counts[1] += sub.dropped_newest
    per = GaugeMetricFamily(
        "icefloe_hub_tenant_dropped",
        f"Events dropped by open subscriptions per tenant (the {MAX_TENANT_SERIES} most dropping)",
        labels=["tenant", "policy"],
    )
    worst = sorted(drops.items(), key=lambda item: sum(item[1]), reverse=True)
    for tenant, (oldest, newest) in worst[:MAX_TENANT_SERIES]:
        per.add_metric([tenant, "drop_oldest"], oldest)
        per.add_metric([tenant, "drop_newest"], newest)
    return per


class _WsConnection(Protocol):
    def statistics(self) -> WsSendStatistics: ...


#: WsSendStatistics fields that only grow: summed over closed and open connections
_WS_COUNTERS = {
    "messages": "WebSocket messages sent",
    "bytes": "WebSocket payload bytes sent (after zstd)",
    "chunks": "Stream chunks sent over WebSocket, alone or batched",
    "batches": "WebSocket chunks ops sent (two or more chunks each)",
    "paced_s": "Seconds WebSocket sends waited for a bandwidth limit",
    "uncompressed_bytes": "WebSocket bytes before zstd (zstd connections only)",
}


class WsTotals:
    """Send figures of every WebSocket connection: the closed ones summed at
    close, the open ones read at scrape time."""

    def __init__(self) -> None:
        self.open: set[_WsConnection] = set()
        self.closed = dict.fromkeys(_WS_COUNTERS, 0.0)

    def opened(self, conn: _WsConnection) -> None:
        self.open.add(conn)

    def closed_conn(self, conn: _WsConnection) -> None:
        self.open.discard(conn)
        stats = conn.statistics()
        for name in _WS_COUNTERS:
            self.closed[name] += getattr(stats, name)


class _WsCollector(Collector):
    def __init__(self, totals: WsTotals) -> None:
        self._totals = totals

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        live = [conn.statistics() for conn in self._totals.open]
        yield GaugeMetricFamily("icefloe_ws_connections", "Open WebSocket connections", len(live))
        yield GaugeMetricFamily(
            "icefloe_ws_queued_chunks",
            "Chunks queued in WebSocket send paths, waiting for their turn",
            sum(s.queued_chunks for s in live),
        )
        for name, doc in _WS_COUNTERS.items():
            total = self._totals.closed[name] + sum(getattr(s, name) for s in live)
            yield CounterMetricFamily(f"icefloe_ws_{name}", doc, total)


class _SentCollector(Collector):
    def __init__(self, metrics: EdgeMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily]:
        m = self._metrics
        yield CounterMetricFamily(
            "icefloe_http_chunks_sent", "Chunks written to HTTP clients", m.chunks_sent
        )
        yield CounterMetricFamily(
            "icefloe_http_bytes_sent", "Body bytes written to HTTP clients", m.bytes_sent
        )


class EdgeMetrics:
    """The registry behind ``/metrics`` for one app.

    ``max_posted`` bounds the start times kept for time to first token
    (streams started over the edge and not yet written to a client).
    """

    def __init__(self, flow: Flow, hub: Hub | None = None, *, max_posted: int = 100_000) -> None:
        # Start time per stream (perf_counter), for time to first token.
        self._posted_at: ExpiringMap[float] = ExpiringMap(POSTED_TTL_S, max_posted, time.monotonic)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_FlowCollector(flow))
        if hub is not None:
            self.registry.register(_HubCollector(hub))
        self.ws = WsTotals()
        self.registry.register(_WsCollector(self.ws))
        r = self.registry
        self.connections = Gauge(
            "icefloe_http_stream_connections", "Open streaming responses", registry=r
        )
        # Counted per write by every pump: plain ints, read at scrape time.
        self.chunks_sent = 0
        self.bytes_sent = 0
        r.register(_SentCollector(self))
        self.disconnects = Counter(
            "icefloe_http_stream_ends",
            "Streaming responses ended, by outcome",
            ["outcome"],
            registry=r,
        )
        self.unread_cancelled = Counter(
            "icefloe_http_unread_cancelled",
            "Runs cancelled because no reader came for unread_timeout_s",
            registry=r,
        )
        self.requests_limited = Counter(
            "icefloe_http_rate_limited", "Requests answered 429", registry=r
        )
        self.time_to_first_token = Histogram(
            "icefloe_time_to_first_token_seconds",
            "From POST /v1/streams to the first chunk written to a client",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.chunk_latency = Histogram(
            "icefloe_chunk_latency_seconds",
            "From chunk creation to its write (first chunk of each write)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def stream_started(self, stream_id: str) -> None:
        """A run started over the edge: its first written chunk is its time to first token."""
        self._posted_at.put(stream_id, time.perf_counter())

    def stream_refused(self, stream_id: str) -> None:
        """A run counted by :meth:`stream_started` did not start: forget it now
        (a store outage refuses many, and each would be held until it expired)."""
        self._posted_at.pop(stream_id)

    def chunks_written(self, first: StreamChunk, count: int, size: int) -> None:
        """A streaming response wrote ``count`` chunks (``size`` bytes) from ``first`` on."""
        self.chunks_sent += count
        self.bytes_sent += size
        self.chunk_latency.observe(max(0.0, (time.time_ns() - first.ts) / 1e9))
        if first.seq == 0:
            posted = self._posted_at.pop(first.stream_id)
            if posted is not None:
                self.time_to_first_token.observe(time.perf_counter() - posted)

    def render(self) -> bytes:
        return generate_latest(self.registry)
