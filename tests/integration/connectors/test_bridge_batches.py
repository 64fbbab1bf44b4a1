"""Bridge routes move records in batches, show ``starting`` until both ends are
open, and count what they hold in their lag (the machine's Redis, in process).

The source is a real Redis stream; the sink is a stand-in kind registered
here (``batch-probe``) that records each ``send`` and ``flush`` and can hold
a flush, or its own opening, until the test lets it go: what is under test is
the route between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from bridgekit import REDIS_URL, redis_producer
from streamcheck import chunk_records

from icefloe.connectors.record import ChunkRecord
from icefloe.gateway import Gateway, Kind, RouteState, Served, parse_config, register_kind

RECORDS = 600


class ProbeOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: the probe this sink reports to (see PROBES)
    probe: str


class Probe:
    """What one ``batch-probe`` sink saw, and the gates it waits at."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.open_gate = asyncio.Event()
        self.flush_gate = asyncio.Event()
        self.open_gate.set()
        self.flush_gate.set()
        self.sent: list[tuple[str, int]] = []
        self.flushes: list[int] = []  # chunks sent before each flush
        self.flushing = asyncio.Event()


PROBES: dict[str, Probe] = {}


class _ProbeSink:
    name = "batch-probe"

    def __init__(self, probe: Probe) -> None:
        self._probe = probe
        self._since = 0

    async def send(self, got: ChunkRecord) -> None:
        self._probe.sent.append((got.chunk.stream_id, got.chunk.seq))
        self._since += 1

    async def flush(self) -> None:
        self._probe.flushing.set()
        await self._probe.flush_gate.wait()
        self._probe.flushes.append(self._since)
        self._since = 0


@contextlib.asynccontextmanager
async def _probe_sink(opts: ProbeOptions, served: Served) -> AsyncIterator[_ProbeSink]:
    probe = PROBES[opts.probe]
    await probe.open_gate.wait()
    probe.opened.set()
    yield _ProbeSink(probe)


register_kind("batch-probe", Kind(ProbeOptions, sink=_probe_sink))


@pytest.fixture
async def source() -> AsyncIterator[tuple[dict[str, Any], Any]]:
    try:
        async with redis_producer() as (table, write):
            yield table, write
    except LookupError as exc:
        pytest.skip(str(exc))


def _gateway(source: dict[str, Any], probe: str, **route: Any) -> Gateway:
    PROBES[probe] = Probe()
    table = {"source": source, "sink": {"kind": "batch-probe", "probe": probe}, **route}
    return Gateway(parse_config({"routes": {"r": table}}))


async def _until(gateway: Gateway, check: Any) -> Any:
    while not check(status := gateway.statuses()[0]):
        await asyncio.sleep(0.01)  # polling the route's counters
    return status


async def test_a_busy_source_is_moved_in_batches_of_at_most_batch(
    source: tuple[dict[str, Any], Any],
) -> None:
    table, write = source
    records = chunk_records("bb", 6, RECORDS // 6)
    await write(records)
    probe = f"p-{uuid.uuid4().hex[:6]}"
    gateway = _gateway(table, probe, batch=50)
    async with asyncio.timeout(30), gateway.running(Served(None, None)):
        status = await _until(gateway, lambda s: s.records_out == RECORDS)
    seen = PROBES[probe]
    assert max(seen.flushes) == 50  # a backlog fills batches
    assert all(1 <= n <= 50 for n in seen.flushes)
    assert len(seen.flushes) < RECORDS / 10  # not one flush per record
    assert sum(seen.flushes) == RECORDS
    # every stream in the source's order
    for s in range(6):
        seqs = [seq for sid, seq in seen.sent if sid == f"bb-{s}"]
        assert seqs == list(range(RECORDS // 6))
    assert (status.records_in, status.state) == (RECORDS, RouteState.RUNNING)


async def test_lag_counts_the_records_a_route_holds_until_its_sink_confirms(
    source: tuple[dict[str, Any], Any],
) -> None:
    table, write = source
    await write(chunk_records("bl", 2, RECORDS // 2))
    probe = f"p-{uuid.uuid4().hex[:6]}"
    gateway = _gateway(table, probe, batch=100)
    PROBES[probe].flush_gate.clear()  # the sink confirms nothing yet
    async with asyncio.timeout(30), gateway.running(Served(None, None)):
        await PROBES[probe].flushing.wait()
        (route,) = gateway.routes()
        # taken or not, nothing was moved: all of it is lag
        assert await route.refresh_lag() == RECORDS
        assert route.status().records_out == 0
        PROBES[probe].flush_gate.set()
        await _until(gateway, lambda s: s.records_out == RECORDS)
        # the source sends its acks with its next read: the lag follows
        while await route.refresh_lag() != 0:
            await asyncio.sleep(0.02)  # polling the broker's count


async def test_a_route_is_starting_until_its_sink_is_open(
    source: tuple[dict[str, Any], Any],
) -> None:
    table, write = source
    probe = f"p-{uuid.uuid4().hex[:6]}"
    gateway = _gateway(table, probe)
    PROBES[probe].open_gate.clear()  # the sink's opening waits
    async with asyncio.timeout(30), gateway.running(Served(None, None)):
        (route,) = gateway.routes()
        assert route.state is RouteState.STARTING
        await write(chunk_records("bs", 1, 3))
        await asyncio.sleep(0.3)  # the source has records ready: still not running
        assert route.state is RouteState.STARTING
        assert route.status().records_in == 0
        PROBES[probe].open_gate.set()
        await PROBES[probe].opened.wait()
        status = await _until(gateway, lambda s: s.records_out == 3)
        assert status.state is RouteState.RUNNING
    assert route.state is RouteState.STOPPED


def test_batch_is_checked() -> None:
    from icefloe.gateway import ConfigError

    sink = {"kind": "batch-probe", "probe": "x"}
    src = {"kind": "redis-streams", "url": REDIS_URL, "key": "k"}
    for bad in (0, 10_001):
        with pytest.raises(ConfigError, match="batch"):
            parse_config({"routes": {"r": {"source": src, "sink": sink, "batch": bad}}})
    with pytest.raises(ConfigError, match="store"):
        parse_config({"routes": {"r": {"source": src, "sink": sink}}, "store": "nope://x"})


class _SwallowingSource:
    """A source end whose client swallows the first cancellation (as a broker
    client may when it turns one into a connection error that a connector
    retries) and waits on."""

    name = "swallow"

    def __init__(self) -> None:
        self.swallowed = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.swallowed.set()
        await asyncio.Event().wait()  # waits on, as if nothing happened
        yield  # pragma: no cover (an async generator that never yields)

    async def ack(self, taken: Any) -> None:
        return None

    async def lag(self) -> int | None:
        return None


SWALLOWING: list[_SwallowingSource] = []


class _NoOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


@contextlib.asynccontextmanager
async def _swallowing(opts: _NoOptions, served: Served) -> AsyncIterator[_SwallowingSource]:
    source = _SwallowingSource()
    SWALLOWING.append(source)
    yield source


register_kind("swallow-probe", Kind(_NoOptions, source=_swallowing))


async def test_a_route_stops_even_when_its_source_swallows_a_cancellation() -> None:
    probe = f"p-{uuid.uuid4().hex[:6]}"
    gateway = _gateway({"kind": "swallow-probe"}, probe)
    async with asyncio.timeout(10):
        async with gateway.running(Served(None, None)):
            await _until(gateway, lambda s: s.state is RouteState.RUNNING)
        (route,) = gateway.routes()
        assert route.state is RouteState.STOPPED
    assert SWALLOWING[-1].swallowed.is_set()
    # the route and its intake reader ended: nothing left running
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("icefloe-")]
    assert left == []
