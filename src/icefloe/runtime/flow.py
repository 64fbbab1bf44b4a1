"""The flow: a graph of nodes, its streams, and the calls users make on it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from icefloe.core.congestion import CongestionPolicy, CongestionState
from icefloe.core.flowwindow import FlowWindowStatistics
from icefloe.core.messages import Headers, Message, new_id
from icefloe.exceptions import ErrorCode, InvalidState, StreamError, StreamNotFound
from icefloe.runtime.admission import Admission
from icefloe.runtime.budgets import Budgets, BudgetStatistics
from icefloe.runtime.channel import ChannelStatistics
from icefloe.runtime.durable import DurableStatistics
from icefloe.runtime.flow_load import DEFAULT_CONGESTION as DEFAULT_CONGESTION
from icefloe.runtime.flow_load import DEFAULT_SHEDDING as DEFAULT_SHEDDING
from icefloe.runtime.flow_load import FlowLoad
from icefloe.runtime.flow_store import FlowStore
from icefloe.runtime.limits import Limits
from icefloe.runtime.loadwatch import LoadWatch
from icefloe.runtime.node import Adjacency, Node
from icefloe.runtime.registry import FinishedStream, RegistryStatistics, StreamRegistry
from icefloe.runtime.runner import NodeStatistics
from icefloe.runtime.shedding import ShedStatistics
from icefloe.runtime.stream_types import StreamBrief, StreamStatistics, WindowTotals
from icefloe.runtime.stream_window import window_totals
from icefloe.runtime.subscription import Subscription
from icefloe.runtime.throttle import SheddingPolicy
from icefloe.runtime.wiring import Wiring
from icefloe.runtime.writer import StreamWriter
from icefloe.store.protocol import Store

__all__ = ["Flow", "FlowStatistics", "create"]

#: default capacity of every inbox and of the egress, in messages
DEFAULT_QUEUE_MAXSIZE = 64


@dataclass(frozen=True, slots=True)
class FlowStatistics:
    """A snapshot of a flow for capacity monitoring (``flow.stats()``)."""

    #: whether the flow's workers run
    running: bool
    #: one entry per node, in graph order
    nodes: tuple[NodeStatistics, ...]
    #: the egress queue that ``flow.fetch`` reads
    egress: ChannelStatistics
    #: totals over all streams
    streams: RegistryStatistics
    #: chunks producers may still release before waiting, summed over running streams
    credit_available: int
    #: the adaptive windows of the running streams (sizes, cuts, growth)
    windows: WindowTotals
    #: byte budgets (bytes/s, in-flight bytes per tenant); None: no byte limit set
    budgets: BudgetStatistics | None = None
    #: load shedding and congested-admission throttling; None: shedding off
    shedding: ShedStatistics | None = None
    #: the adaptive inbox windows (``Limits.inbox_window``), by node name; empty: fixed
    inbox_windows: Mapping[str, FlowWindowStatistics] = field(default_factory=dict)
    #: throttled runs admitted and waiting to enter the flow
    deferred: int = 0
    #: the fullest node inbox against its configured maxsize, 0..1: the queue
    #: fill load shedding reads (an adaptive inbox's shrunken window is not pressure)
    queue_fill: float = 0.0
    #: the store writer of durable runs (None: the flow has no store)
    durable: DurableStatistics | None = None

    @property
    def queue_depth(self) -> int:
        """Messages waiting in all inboxes and the egress."""
        return sum(n.queue.used for n in self.nodes) + self.egress.used


class Flow:
    """A running graph of nodes. Build one with :func:`create`."""

    def __init__(
        self,
        adjacencies: Sequence[Adjacency],
        *,
        queue_maxsize: int = DEFAULT_QUEUE_MAXSIZE,
        limits: Limits | None = None,
        congestion: CongestionPolicy | None = DEFAULT_CONGESTION,
        shedding: SheddingPolicy = DEFAULT_SHEDDING,
        store: Store | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self._registry = StreamRegistry(self.limits, self._stop_run)
        # Byte budgets exist only when Limits sets one: otherwise producers
        # pay a single ``is None`` test per chunk.
        self._budgets = (
            Budgets(self.limits, self._registry) if Budgets.wanted(self.limits) else None
        )
        self._wiring = Wiring(
            adjacencies, queue_maxsize, self.limits.inbox_window, self._registry, self._budgets
        )
        self._running = False
        self._stopped = False
        self._load = FlowLoad(
            congestion,
            shedding,
            registry=self._registry,
            wiring=self._wiring,
            stop_run=self._stop_run,
        )
        #: the load watch behind load shedding (None: shedding off)
        self.load: LoadWatch | None = self._load.watch
        self._admission = Admission(
            self._registry, self._budgets, self._load.shedder, self._load.max_delay_s
        )
        self._store: FlowStore | None = None
        #: whether :meth:`run` settles the store's unfinished runs (False: a
        #: worker's flow, which settles only the runs it takes over, issue 12)
        self.recover_at_start = True
        if store is not None:
            self.use_store(store)

    def __repr__(self) -> str:
        names = ", ".join(n.name for n in self._wiring.nodes)
        return f"<Flow [{names}] {'running' if self._running else 'idle'}>"

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self._wiring.nodes

    @property
    def running(self) -> bool:
        return self._running

    # -- the store (issue 11, docs/reliability.md) ----------------------------------

    @property
    def store(self) -> Store | None:
        """The store durable runs write to (None: memory only)."""
        return None if self._store is None else self._store.store

    async def store_ready(self) -> None:
        """Wait until the store is open and crash recovery has run (at once without a store).

        :raises StoreUnavailable: the store could not be opened.
        """
        self._check_running()
        if self._store is not None:
            await self._store.ready()

    def use_store(self, store: Store) -> None:
        """Keep durable runs in ``store`` (before :meth:`run`; the flow opens and closes it).

        :raises InvalidState: the flow has started, or has a store already.
        """
        if self._running or self._stopped or self._store is not None:
            raise InvalidState("use_store() needs a flow that has not started and has no store")
        if not isinstance(store, Store):
            raise TypeError(f"store must implement icefloe.store.Store, got {store!r}")
        self._store = FlowStore(store, self._registry, self._wiring, self._admission)

    async def _recover(self) -> None:
        assert self._store is not None
        if self.recover_at_start:
            await self._store.recover()

    # -- workers (issue 12): runs taken over from another process --
    async def recover_run(self, stream_id: str) -> str | None:
        """Settle one unfinished run of the store now, as crash recovery does
        at start; what was done (``runtime.recovery.RESUMED``, ``DONE``,
        ``INTERRUPTED``, ``CORRUPT``), or None: the store holds no unfinished
        run of that id, the flow runs it already, or it has no store.

        :raises StoreUnavailable: the store did not answer.
        """
        self._check_running()
        if self._store is None:
            return None
        return await self._store.recover_run(stream_id)

    def abandon(self, stream_id: str) -> None:
        """Stop a run another process took over: it ends here (``cancelled``)
        and nothing more of it, its end included, is written to the store."""
        if self._store is not None:
            self._store.forget(stream_id)
        self.cancel(stream_id)

    # -- end of the store ---------------------------------------------------------------

    # -- life cycle --------------------------------------------------------------

    def run(self) -> None:
        """Start the node workers on the running event loop.

        :raises InvalidState: already running, or stopped (flows are single-use).
        """
        if self._running or self._stopped:
            raise InvalidState(f"flow is {'running' if self._running else 'stopped'}")
        asyncio.get_running_loop()  # fail early, outside a loop, with asyncio's own error
        self._wiring.start()
        self._load.start()
        if self._store is not None:
            self._store.start(self._recover)
        self._running = True

    async def stop(self) -> None:
        """Cancel every stream and stop the workers. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._running = False
        self._load.close()
        self._admission.close()
        if self._budgets is not None:
            self._budgets.close()
        if self._store is not None:
            # First: durable runs stay unfinished in the store, to be resumed.
            await self._store.close()
        self._registry.cancel_all(ErrorCode.CANCELLED, "the flow stopped")
        await self._wiring.stop()

    async def __aenter__(self) -> Flow:
        self.run()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def _check_running(self) -> None:
        if not self._running:
            raise InvalidState(f"flow is {'stopped' if self._stopped else 'not running'}")

    # -- messages ----------------------------------------------------------------

    async def emit(self, msg: Message, to: Node | Sequence[Node] | None = None) -> None:
        """Send ``msg`` into the flow (to its ingress nodes, or ``to``); waits when full.

        :raises InvalidState: the flow is not running.
        """
        self._check_running()
        for inbox in self._wiring.targets(to):
            await inbox.send(msg)

    def emit_nowait(self, msg: Message, to: Node | Sequence[Node] | None = None) -> None:
        """Like :meth:`emit`, without waiting.

        :raises WouldBlock: an ingress inbox is full (nothing was sent to it).
        :raises InvalidState: the flow is not running.
        """
        self._check_running()
        for inbox in self._wiring.targets(to):
            inbox.send_nowait(msg)

    async def fetch(self) -> Message:
        """The next message a sink node sent with ``ctx.emit``; waits when none.

        :raises InvalidState: the flow is not running.
        """
        self._check_running()
        return await self._wiring.egress.receive()

    def cancel(self, trace_id: str) -> bool:
        """Cancel a run: its streams end with ``cancelled``, its invocations stop,
        its queued messages are skipped. Returns whether anything was running."""
        ended = self._registry.cancel_trace(trace_id, ErrorCode.CANCELLED, "cancelled")
        return self._stop_run(trace_id) or bool(ended)

    def send_input(self, stream_id: str, data: Any) -> None:
        """Queue interactive input for the node producing ``stream_id``.

        The node reads it with ``ctx.inputs(parent=msg)``. Never waits.

        :raises StreamNotFound: (a ``KeyError``) no such stream is registered.
        :raises StreamClosedError: the stream has ended.
        :raises WouldBlock: ``Limits.stream_inputs`` inputs are still unread.
        """
        state = self._registry.get(stream_id)
        if state is None:
            raise StreamNotFound(stream_id)
        state.input_queue(self.limits.stream_inputs).put_nowait(data)

    # -- admission (issue 15, item 3) --
    def set_stream_caps(self, *, max_streams_per_tenant: int | None) -> None:
        """Change the per-tenant stream cap of new admissions (``icefloe serve
        --max-streams-per-tenant``); streams already admitted stay."""
        limits = replace(self.limits, max_streams_per_tenant=max_streams_per_tenant)
        self.limits = limits
        self._registry.set_limits(limits)

    # -- end of admission --
    @property
    def congestion(self) -> CongestionState:
        """``normal``, ``congested`` or ``overloaded`` (always ``normal`` with shedding off)."""
        return self._load.state

    def _stop_run(self, trace_id: str) -> bool:
        return self._wiring.cancel_trace(trace_id)

    # -- streams -----------------------------------------------------------------

    def stream(self, message: Message, to: Node | Sequence[Node] | None = None) -> Subscription:
        """Start a run of ``message`` and iterate its stream (id = its trace_id).

        The stream is admitted now (``StreamError("overloaded")`` if a limit
        refuses it); the message enters the flow on the first iteration.
        Leaving the loop early cancels the run.

        :raises InvalidState: the flow is not running, or the stream exists.
        :raises StreamError: ``overloaded``.
        """
        self._check_running()
        targets = self._wiring.targets(to)
        reliability = self._wiring.reliability(to)
        state, delay = self._admission.admit(message, reliability)
        if self._store is not None:  # the common case: no store, nothing to pay
            self._store.admitted(message, reliability, to, state)
        reader = state.attach(0, owner=True, kickoff=None if delay else (targets, message))
        if delay:
            self._admission.defer(state, targets, message, delay)
        return reader

    async def start(
        self,
        message: Message,
        to: Node | Sequence[Node] | None = None,
        *,
        history: int | None = None,
        window: int | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Start a run whose stream lives on its own; returns the stream id.

        Unlike :meth:`stream`, no reader owns the run: readers come and go
        with :meth:`subscribe` (the HTTP edge does this). Until one reads,
        the producer waits once ``stream_buffer`` chunks are held.
        ``history`` overrides ``Limits.stream_history`` for this stream, so
        readers can resume; such a stream lingers ``linger_s`` after it ends.
        ``window`` overrides ``Limits.stream_buffer``: the most the producer
        may run ahead of the readers it waits for (the HTTP edge raises it so
        that lagging and fan-out readers take bigger writes). With
        ``Limits.adaptive_window`` on, it is the ceiling of the stream's
        adaptive window, not a fixed size.

        With a store, a durable run is recorded in it before it starts, and
        ``idempotency_key`` (scope it yourself, e.g. ``tenant/key``) is claimed
        there: a key claimed already returns the stream id of the run that
        claimed it and starts nothing. Without a store the key is ignored.

        :raises InvalidState: the flow is not running, or the stream exists.
        :raises StreamError: ``overloaded`` (a limit, or the flow is overloaded).
        :raises StoreUnavailable: the store did not answer.
        """
        self._check_running()
        if window is not None and (not isinstance(window, int) or window < 1):
            raise ValueError(f"window must be an int >= 1, got {window!r}")
        targets = self._wiring.targets(to)
        reliability = self._wiring.reliability(to)
        store = self._store
        run = None
        if store is not None:
            run, winner = await store.claim(message, reliability, to, idempotency_key)
            if winner != message.trace_id:
                return winner
        try:
            state, delay = self._admission.admit(
                message, reliability, history=history, window=window
            )
        except StreamError as exc:
            if run is not None and store is not None:
                await store.refused(run, exc)
            raise
        if run is not None and store is not None:
            store.attach(run, state)
        self._admission.enter(state, targets, message, delay)
        return state.stream_id

    def brief(self, stream_id: str) -> StreamBrief | None:
        """Tenant, state and last seq of a registered stream in O(1), or None.

        For per-request checks; :meth:`lookup` counts bytes and readers.
        """
        state = self._registry.get(stream_id)
        return None if state is None else state.brief()

    def lookup(self, stream_id: str) -> StreamStatistics | None:
        """The statistics of a registered stream, or None."""
        state = self._registry.get(stream_id)
        return None if state is None else state.statistics()

    def held_from(self, stream_id: str) -> int | None:
        """The oldest seq a registered stream still holds in memory, or None
        (older seqs of a durable stream are in the store)."""
        state = self._registry.get(stream_id)
        return None if state is None else state.base

    def finished(self, stream_id: str) -> FinishedStream | None:
        """What is remembered of a stream that ended and left the registry
        (its next seq and tenant); None if it is unknown or still registered."""
        return self._registry.finished(stream_id)

    def subscribe(
        self, stream_id: str, from_seq: int | None = 0, *, lag_limit: int | None = None
    ) -> Subscription:
        """Iterate an existing stream from ``from_seq`` (None: from the live head).

        Leaving early only detaches this reader; the stream goes on. With
        ``lag_limit`` the reader never holds the producer back by more than
        that many chunks; a reader that falls further behind than the stream
        holds gets ``StreamError("history_gone")`` (network clients use this).

        :raises StreamError: ``history_gone`` if ``from_seq`` is no longer held.
        :raises StreamNotFound: (a ``KeyError``) no such stream is registered.
        """
        state = self._registry.get(stream_id)
        if state is None:
            raise StreamNotFound(stream_id)
        return state.attach(from_seq, lag_limit=lag_limit)

    def open_stream(
        self, headers: Headers, stream_id: str | None = None, *, history: int | None = None
    ) -> StreamWriter:
        """A writer producing a new stream from outside any node.

        ``history`` overrides ``Limits.stream_history`` for this stream, as
        :meth:`start`'s does: readers that come late (or resume) find it.

        :raises StreamError: ``overloaded`` if a limit refuses the stream.
        :raises InvalidState: a stream with this id exists.
        """
        sid = stream_id or new_id()
        state = self._admission.admit_writer(sid, headers, history)
        return StreamWriter(state, None if self._budgets is None else self._budgets.gate(state))

    def streams(self) -> list[StreamStatistics]:
        """Every registered stream with its state, last seq and subscribers."""
        return [state.statistics() for state in self._registry]

    def stats(self) -> FlowStatistics:
        credit = sum(s.credit for s in self._registry if not s.phase)
        running = (s for s in self._registry if not s.phase)
        return FlowStatistics(
            self._running,
            self._wiring.node_statistics(),
            self._wiring.egress.statistics(),
            self._registry.statistics(),
            credit,
            window_totals(running, self.limits.adaptive_window is not None),
            None if self._budgets is None else self._budgets.statistics(),
            self._load.statistics(),
            self._wiring.inbox_windows(),
            self._admission.deferred,
            self._wiring.queue_fill(),
            None if self._store is None else self._store.statistics(),
        )


def create(
    *adjacencies: Adjacency,
    queue_maxsize: int = DEFAULT_QUEUE_MAXSIZE,
    limits: Limits | None = None,
    congestion: CongestionPolicy | None = DEFAULT_CONGESTION,
    shedding: SheddingPolicy = DEFAULT_SHEDDING,
    store: Store | None = None,
) -> Flow:
    """Build a flow from ``node.to(...)`` adjacencies.

    ``queue_maxsize`` bounds every node inbox and the egress (messages);
    ``limits`` sets stream admission and buffering (see :class:`Limits`);
    ``congestion`` sets when new streams are shed under load (see
    docs/qos.md; None turns load shedding off); ``shedding`` sets how a
    congested flow throttles new low-priority runs and how an overloaded one
    sheds accepted ones (see :class:`SheddingPolicy`). ``store`` keeps the
    runs of ``at_least_once`` and ``exactly_once`` nodes across restarts
    (docs/reliability.md); None (the default) keeps everything in memory,
    and every level then behaves as ``at_most_once`` across a restart.
    """
    return Flow(
        adjacencies,
        queue_maxsize=queue_maxsize,
        limits=limits,
        congestion=congestion,
        shedding=shedding,
        store=store,
    )
