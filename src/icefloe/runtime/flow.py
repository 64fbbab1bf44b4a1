"""The flow: a graph of nodes, its streams, and the calls users make on it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from icefloe.core.congestion import CongestionPolicy, CongestionState
from icefloe.core.flowwindow import FlowWindowPolicy, FlowWindowStatistics
from icefloe.core.messages import Headers, Message, new_id
from icefloe.exceptions import ErrorCode, InvalidState, StreamError, StreamNotFound
from icefloe.runtime.admission import Admission
from icefloe.runtime.budgets import Budgets, BudgetStatistics
from icefloe.runtime.channel import AdaptiveChannel, Channel, ChannelStatistics
from icefloe.runtime.context import Context
from icefloe.runtime.durable import DurableStatistics, StoreWriter
from icefloe.runtime.fair import FairQueue
from icefloe.runtime.limits import Limits
from icefloe.runtime.loadwatch import LoadWatch
from icefloe.runtime.node import Adjacency, Node, graph
from icefloe.runtime.registry import FinishedStream, RegistryStatistics, StreamRegistry
from icefloe.runtime.runner import NodeRunner, NodeStatistics
from icefloe.runtime.shedding import LoadShedder, ShedStatistics
from icefloe.runtime.store_runs import StoreRuns
from icefloe.runtime.stream import window_totals
from icefloe.runtime.stream_types import StreamBrief, StreamStatistics, WindowTotals
from icefloe.runtime.subscription import Subscription
from icefloe.runtime.throttle import SheddingPolicy
from icefloe.runtime.writer import StreamWriter
from icefloe.store.protocol import Store
from icefloe.store.types import RunState

__all__ = ["Flow", "FlowStatistics", "create"]

#: default capacity of every inbox and of the egress, in messages
DEFAULT_QUEUE_MAXSIZE = 64
#: load shedding's thresholds unless create(congestion=...) says otherwise
DEFAULT_CONGESTION = CongestionPolicy()
#: throttling and shedding unless create(shedding=...) says otherwise
DEFAULT_SHEDDING = SheddingPolicy()
#: credit starvation is a share of at least this many running streams
STARVATION_FLOOR = 32


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
        if not adjacencies:
            raise ValueError("create() needs at least one node: create(Node(f).to())")
        if not isinstance(queue_maxsize, int) or queue_maxsize < 1:
            raise ValueError(f"queue_maxsize must be an int >= 1, got {queue_maxsize!r}")
        self.limits = limits or Limits()
        self._queue_maxsize = queue_maxsize
        self._nodes, succ = graph(adjacencies)
        self._registry = StreamRegistry(self.limits, self._stop_run)
        # Byte budgets exist only when Limits sets one: otherwise producers
        # pay a single ``is None`` test per chunk.
        self._budgets = (
            Budgets(self.limits, self._registry) if Budgets.wanted(self.limits) else None
        )
        self._egress: Channel[Message] = Channel(queue_maxsize)
        has_pred = {s for n in self._nodes for s in succ[n]}
        ingress = [n for n in self._nodes if n not in has_pred] or [self._nodes[0]]
        self._inboxes = _inboxes(self._nodes, ingress, queue_maxsize, self.limits.inbox_window)
        self._runners: list[NodeRunner] = []
        for node in self._nodes:
            ctx = Context(
                node,
                self._registry,
                {s: self._inboxes[s] for s in succ[node]},
                self._egress,
                self._budgets,
            )
            self._runners.append(NodeRunner(node, self._inboxes[node], ctx, self._registry))
        self._ingress = tuple(self._inboxes[n] for n in ingress)
        self._ingress_nodes = tuple(ingress)
        self._running = False
        self._stopped = False
        #: the load watch behind load shedding (None: shedding off)
        self.load: LoadWatch | None = None
        self._shedder: LoadShedder | None = None
        if congestion is not None:
            self.load = LoadWatch(self._load_sample, policy=congestion)
            self._shedder = LoadShedder(self.load, self._registry, shedding, self._stop_run)
            self._registry.shedder = self._shedder.refusal
        # Without shedding, a deferred run (a resumed one) still waits at most
        # the default policy's max_delay_s for room in its inbox.
        max_delay_s = (shedding if self._shedder is not None else DEFAULT_SHEDDING).max_delay_s
        self._admission = Admission(self._registry, self._budgets, self._shedder, max_delay_s)
        self._store_runs: StoreRuns | None = None
        #: whether :meth:`run` settles the store's unfinished runs (False: a
        #: worker's flow, which settles only the runs it takes over, issue 12)
        self.recover_at_start = True
        if store is not None:
            self.use_store(store)

    def __repr__(self) -> str:
        names = ", ".join(n.name for n in self._nodes)
        return f"<Flow [{names}] {'running' if self._running else 'idle'}>"

    @property
    def nodes(self) -> tuple[Node, ...]:
        return tuple(self._nodes)

    @property
    def running(self) -> bool:
        return self._running

    # -- the store (issue 11, docs/reliability.md) ----------------------------------

    @property
    def store(self) -> Store | None:
        """The store durable runs write to (None: memory only)."""
        return None if self._store_runs is None else self._store_runs.writer.store

    async def store_ready(self) -> None:
        """Wait until the store is open and crash recovery has run (at once without a store).

        :raises StoreUnavailable: the store could not be opened.
        """
        self._check_running()
        if self._store_runs is not None:
            await self._store_runs.writer.ready()

    def use_store(self, store: Store) -> None:
        """Keep durable runs in ``store`` (before :meth:`run`; the flow opens and closes it).

        :raises InvalidState: the flow has started, or has a store already.
        """
        if self._running or self._stopped or self._store_runs is not None:
            raise InvalidState("use_store() needs a flow that has not started and has no store")
        if not isinstance(store, Store):
            raise TypeError(f"store must implement icefloe.store.Store, got {store!r}")
        writer = StoreWriter(store)
        self._store_runs = StoreRuns(writer, self._registry, self._nodes)
        self._registry.on_ended = writer.ended
        for runner in self._runners:
            runner.durable_lookup = writer.lookup

    async def _recover(self) -> None:
        assert self._store_runs is not None
        if self.recover_at_start:
            await self._store_runs.recover(self._resume)

    # -- workers (issue 12): runs taken over from another process --
    async def recover_run(self, stream_id: str) -> str | None:
        """Settle one unfinished run of the store now, as crash recovery does
        at start; what was done (``runtime.recovery.RESUMED``, ``DONE``,
        ``INTERRUPTED``, ``CORRUPT``), or None: the store holds no unfinished
        run of that id, the flow runs it already, or it has no store.

        :raises StoreUnavailable: the store did not answer.
        """
        self._check_running()
        if self._store_runs is None:
            return None
        return await self._store_runs.recover_run(stream_id, self._resume)

    def abandon(self, stream_id: str) -> None:
        """Stop a run another process took over: it ends here (``cancelled``)
        and nothing more of it, its end included, is written to the store."""
        if self._store_runs is not None:
            self._store_runs.writer.forget(stream_id)
        self.cancel(stream_id)

    def _resume(self, stored: RunState) -> None:
        """Start a stored ``exactly_once`` run again where the store left it."""
        assert self._store_runs is not None
        state, message, nodes = self._store_runs.resume(stored)
        self._admission.defer(state, self._targets(nodes), message, 0.0)

    # -- end of the store ---------------------------------------------------------------

    # -- life cycle --------------------------------------------------------------

    def run(self) -> None:
        """Start the node workers on the running event loop.

        :raises InvalidState: already running, or stopped (flows are single-use).
        """
        if self._running or self._stopped:
            raise InvalidState(f"flow is {'running' if self._running else 'stopped'}")
        asyncio.get_running_loop()  # fail early, outside a loop, with asyncio's own error
        for runner in self._runners:
            runner.start()
        if self.load is not None:
            self.load.start()
        if self._store_runs is not None:
            self._store_runs.writer.start(self._recover)
        self._running = True

    async def stop(self) -> None:
        """Cancel every stream and stop the workers. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._running = False
        if self.load is not None:
            self.load.close()
        self._admission.close()
        if self._budgets is not None:
            self._budgets.close()
        if self._store_runs is not None:
            # First: durable runs stay unfinished in the store, to be resumed.
            await self._store_runs.writer.close()
        self._registry.cancel_all(ErrorCode.CANCELLED, "the flow stopped")
        for runner in self._runners:
            await runner.stop()
        for inbox in self._inboxes.values():
            inbox.close()
            inbox.clear()
        self._egress.close()

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
        for inbox in self._targets(to):
            await inbox.send(msg)

    def emit_nowait(self, msg: Message, to: Node | Sequence[Node] | None = None) -> None:
        """Like :meth:`emit`, without waiting.

        :raises WouldBlock: an ingress inbox is full (nothing was sent to it).
        :raises InvalidState: the flow is not running.
        """
        self._check_running()
        for inbox in self._targets(to):
            inbox.send_nowait(msg)

    async def fetch(self) -> Message:
        """The next message a sink node sent with ``ctx.emit``; waits when none.

        :raises InvalidState: the flow is not running.
        """
        self._check_running()
        return await self._egress.receive()

    def _targets(self, to: Node | Sequence[Node] | None) -> tuple[Channel[Message], ...]:
        if to is None:
            return self._ingress
        nodes = (to,) if isinstance(to, Node) else tuple(to)
        try:
            return tuple(self._inboxes[n] for n in nodes)
        except KeyError as exc:
            raise ValueError(f"{exc.args[0]!r} is not a node of this flow") from None

    def _reliability(self, to: Node | Sequence[Node] | None) -> str:
        """The strongest guarantee asked for by the nodes a run enters."""
        if to is None:
            nodes: Sequence[Node] = self._ingress_nodes
        else:
            nodes = (to,) if isinstance(to, Node) else to
        return max((n.policy.reliability for n in nodes), key=lambda level: level.rank)

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
        return CongestionState.NORMAL if self.load is None else self.load.state

    def _load_sample(self) -> tuple[float, float]:
        """(queue fill, credit starvation) for the load watch, each 0..1.

        Queue fill is the fullest node inbox, against its configured maxsize
        (an adaptive inbox's window is not: a shrunken window is the inbox
        holding less, not pressure). Starvation is the share of
        running streams whose producer waits for its readers, counted over at
        least STARVATION_FLOOR streams: a few stalled clients are their own
        business, not the server's.
        """
        starved = self._registry.producers_waiting()
        active = max(self._registry.active, STARVATION_FLOOR)
        return self._queue_fill(), starved / active

    def _queue_fill(self) -> float:
        return max((len(q) / q.maxsize for q in self._inboxes.values()), default=0.0)

    def _stop_run(self, trace_id: str) -> bool:
        return sum(runner.cancel_trace(trace_id) for runner in self._runners) > 0

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
        targets = self._targets(to)
        reliability = self._reliability(to)
        state, delay = self._admission.admit(message, reliability)
        if self._store_runs is not None:  # the common case: no store, nothing to pay
            self._store_runs.record_admitted(message, reliability, to, state)
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
        targets = self._targets(to)
        reliability = self._reliability(to)
        store_runs = self._store_runs
        keyed = idempotency_key is not None
        run = (
            None if store_runs is None else store_runs.record(message, reliability, to, keyed=keyed)
        )
        if run is not None and store_runs is not None:
            winner = await store_runs.claim(run, idempotency_key)
            if winner != message.trace_id:
                return winner
        try:
            state, delay = self._admission.admit(
                message, reliability, history=history, window=window
            )
        except StreamError as exc:
            if run is not None and store_runs is not None:
                await store_runs.refused(run, exc)
            raise
        if run is not None and store_runs is not None:
            store_runs.attach(run, state)
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
            tuple(r.statistics() for r in self._runners),
            self._egress.statistics(),
            self._registry.statistics(),
            credit,
            window_totals(running, self.limits.adaptive_window is not None),
            None if self._budgets is None else self._budgets.statistics(),
            None if self._shedder is None else self._shedder.statistics(),
            {
                n.name: w
                for n, q in self._inboxes.items()
                if (w := q.window_statistics()) is not None
            },
            self._admission.deferred,
            self._queue_fill(),
            None if self._store_runs is None else self._store_runs.writer.statistics(),
        )


def _inboxes(
    nodes: Sequence[Node],
    ingress: Sequence[Node],
    queue_maxsize: int,
    window: FlowWindowPolicy | None,
) -> dict[Node, Channel[Message]]:
    """Every node's inbox. Entry nodes share their workers fairly between
    priority classes (runtime/fair.py); inner nodes carry chunks in plain FIFO
    order, in an adaptive window with Limits.inbox_window (runtime/channel.py)."""
    inboxes: dict[Node, Channel[Message]] = {}
    for n in nodes:
        size = n.policy.queue_maxsize or queue_maxsize
        if n in ingress:
            inboxes[n] = Channel(size, FairQueue())
        elif window is not None:
            inboxes[n] = AdaptiveChannel(size, window)
        else:
            inboxes[n] = Channel(size)
    return inboxes


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
