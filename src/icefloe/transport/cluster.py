"""This gateway's view of the cluster: its heartbeat, the members alive, the gauges.

A :class:`ClusterView` per app. With a backplane it beats this process
(role ``gateway``) into :class:`~icefloe.backplane.members.Members` every
second and, after each beat, reads the processes alive (and the run queue's
figures, when a provider is given) into a cached snapshot: ``/metrics``
renders its gauges from that snapshot, so a scrape does no I/O.
``GET /v1/cluster`` (:mod:`icefloe.transport.routes_cluster`) reads fresh.
Without a backplane the cluster is this process alone.

The run queue is not the edge's: workers (``icefloe worker``) consume it.
Whoever builds it may pass ``run_stats`` to
:func:`~icefloe.transport.app.create_app`: a coroutine function answering
``{"queued": n, "running": m}``; without it ``runs.queued`` is ``null`` and
``runs.running`` sums what the processes report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from icefloe.backplane.members import BEAT_S, ROLES, Members, beat_forever
from icefloe.backplane.runqueue import RunQueue
from icefloe.runtime.flow import Flow
from icefloe.transport.drain import Drain

if TYPE_CHECKING:
    from icefloe.transport.backplane_edge import EdgeBackplane

__all__ = ["ClusterCollector", "ClusterView", "RunStats"]

log = logging.getLogger("icefloe.cluster")

#: ``await run_stats()`` -> ``{"queued": n, "running": m}``: the run queue's figures
RunStats: TypeAlias = Callable[[], Awaitable[Mapping[str, int]]]

#: the per-process figures summed into the totals
_SUMMED = ("connections", "streams", "runs_running")


class ClusterView:
    """This process's heartbeat record and the cluster it sees."""

    def __init__(
        self,
        flow: Flow,
        drain: Drain,
        *,
        address: str | None = None,
        run_stats: RunStats | None = None,
    ) -> None:
        self._flow = flow
        self._drain = drain
        self._address = address
        self._run_stats = run_stats
        self._backplane: EdgeBackplane | None = None
        self._members: Members | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = time.time()
        self._own_id = uuid.uuid4().hex[:12]
        #: the last snapshot: (processes, runs) read after a beat
        self._snapshot: tuple[list[dict[str, Any]], Mapping[str, int] | None] | None = None

    @property
    def process_id(self) -> str:
        """This process in the membership (the backplane's id when there is one)."""
        bp = self._backplane
        return bp.engine.process_id if bp is not None else self._own_id

    def stats(self) -> dict[str, Any]:
        """This process's heartbeat figures."""
        active = self._flow.stats().streams.active
        followed = 0 if self._backplane is None else len(self._backplane.engine.followed())
        return {
            "started": round(self._started, 3),
            "address": self._address,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "load": self._flow.congestion.value,
            "draining": self._drain.draining,
            "connections": self._drain.open_connections(),
            "streams": active + followed,
            "runs_running": active,
        }

    def record(self) -> dict[str, Any]:
        """This process as a member record (without a backplane: the whole cluster)."""
        return {
            **self.stats(),
            "id": self.process_id,
            "role": "gateway",
            "beat_ms": int(time.time() * 1000),
        }

    async def open(self, backplane: EdgeBackplane | None) -> None:
        """Start beating (with a backplane), refreshing the snapshot after each
        beat; without one, only the run figures (if any) are refreshed."""
        self._backplane = backplane
        # Membership lives in Redis; with NATS each gateway lists itself alone.
        redis = None if backplane is None else backplane.redis
        if redis is None:
            if self._run_stats is not None:
                self._task = asyncio.ensure_future(self._refresh_forever())
            return
        if self._run_stats is None:  # the workers' queue, wherever they run
            self._run_stats = RunQueue(redis.client, redis.keys).stats
        self._members = members = Members(redis.client, redis.keys)
        self._task = asyncio.ensure_future(
            beat_forever(members, self.process_id, "gateway", self.stats, after_beat=self.refresh)
        )

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # the provider's failure: keep the last figures
                log.debug("run stats failed: %r", exc)
            await asyncio.sleep(BEAT_S)

    async def aclose(self) -> None:
        """Stop beating and leave the membership."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def refresh(self) -> None:
        """Read the cluster into the snapshot the gauges render."""
        self._snapshot = (await self._processes(), await self._runs())

    async def report(self) -> dict[str, Any]:
        """``GET /v1/cluster``: the processes alive, their totals and the runs."""
        processes = await self._processes()
        runs = await self._runs()
        return {
            "self": self.process_id,
            "processes": processes,
            "totals": _totals(processes),
            "runs": _runs_json(processes, runs),
        }

    def snapshot(self) -> tuple[list[dict[str, Any]], Mapping[str, int] | None]:
        """The last read cluster, or this process alone before the first read."""
        if self._snapshot is None:
            return [self.record()], None
        if self._members is None:  # this process alone: its figures are fresh
            return [self.record()], self._snapshot[1]
        return self._snapshot

    async def _processes(self) -> list[dict[str, Any]]:
        if self._members is None:
            return [self.record()]
        alive = await self._members.alive()
        if not any(p.get("id") == self.process_id for p in alive):
            alive.append(self.record())  # not beaten yet, or the beat failed
        return alive

    async def _runs(self) -> Mapping[str, int] | None:
        return None if self._run_stats is None else await self._run_stats()


def _number(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _totals(processes: list[dict[str, Any]]) -> dict[str, int]:
    totals = {f"{role}s": sum(p.get("role") == role for p in processes) for role in ROLES}
    for name in _SUMMED:
        totals[name] = sum(_number(p.get(name)) for p in processes)
    return totals


def _runs_json(
    processes: list[dict[str, Any]], runs: Mapping[str, int] | None
) -> dict[str, int | None]:
    reported = sum(_number(p.get("runs_running")) for p in processes)
    if runs is None:
        return {"queued": None, "running": reported}
    return {"queued": _number(runs.get("queued")), "running": _number(runs.get("running"))}


class ClusterCollector(Collector):
    """The cluster gauges of ``/metrics``, from the view's last snapshot.

    Labelled by role and load state only: never by process (ids come and
    go with every restart, and a series per process would grow without end).
    """

    def __init__(self, view: ClusterView) -> None:
        self._view = view

    def collect(self) -> Iterator[GaugeMetricFamily]:
        view = self._view
        own = view.stats()
        yield GaugeMetricFamily(
            "icefloe_draining", "1 while this process drains (SIGTERM)", int(own["draining"])
        )
        yield GaugeMetricFamily(
            "icefloe_connections",
            "Open streaming connections of this process (SSE, NDJSON, WebSocket)",
            own["connections"],
        )
        processes, runs = view.snapshot()
        alive = GaugeMetricFamily(
            "icefloe_cluster_processes", "Processes alive in the cluster", labels=["role"]
        )
        for role in ROLES:
            alive.add_metric([role], sum(p.get("role") == role for p in processes))
        yield alive
        load = GaugeMetricFamily(
            "icefloe_cluster_load",
            "Processes alive by role and load state (normal, congested, overloaded, draining)",
            labels=["role", "load"],
        )
        counts: dict[tuple[str, str], int] = {}
        for p in processes:
            state = "draining" if p.get("draining") else str(p.get("load", "normal"))
            key = (str(p.get("role")), state)
            counts[key] = counts.get(key, 0) + 1
        for (role, state), n in sorted(counts.items()):
            load.add_metric([role, state], n)
        yield load
        totals = _totals(processes)
        for name in _SUMMED:
            yield GaugeMetricFamily(
                f"icefloe_cluster_{name}",
                f"Sum of the processes' {name.replace('_', ' ')}",
                totals[name],
            )
        queued = _runs_json(processes, runs)["queued"]
        if queued is not None:
            yield GaugeMetricFamily(
                "icefloe_cluster_runs_queued", "Runs waiting in the run queue", queued
            )
