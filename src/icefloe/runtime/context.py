"""What a node sees of its flow: ``ctx.emit`` and ``ctx.emit_chunk``.

Chunks travel like messages. A node with successors (or ``to=``) sends each
chunk to them wrapped in a :class:`Message` whose payload is the chunk; a node
without successors releases it into the stream's log, where ``flow.stream``,
``flow.subscribe`` and the transports read.

Sequence numbers belong to the stream, per producing node: each node keeps,
for every stream it writes, the next seq to assign. The retry rule follows
from it (see :meth:`Context.rewind`): a retried invocation restarts its
automatic numbering where the failed attempt started, and the stream drops
every seq it has already released, so consumers never see a duplicate or a
gap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from icefloe.core.latency import LatencyBudget, LatencyBudgetStatistics
from icefloe.core.messages import NO_META, Message, StreamChunk
from icefloe.exceptions import (
    ErrorCode,
    InvalidState,
    ReorderOverflow,
    StreamClosedError,
    StreamError,
)
from icefloe.runtime.channel import Channel
from icefloe.runtime.durable import current_run
from icefloe.runtime.inputs import StreamInputs
from icefloe.runtime.node import Node
from icefloe.runtime.stream_types import chunk_size
from icefloe.store.types import NO_SEQ

if TYPE_CHECKING:
    from icefloe.runtime.budgets import Budgets, Gate
    from icefloe.runtime.durable import DurableRun
    from icefloe.runtime.registry import StreamRegistry
    from icefloe.runtime.stream import StreamState

__all__ = ["Context"]


class _Emitter:
    """One node's write position in one stream."""

    __slots__ = (
        "byte_count",
        "closed",
        "done_seq",
        "durable",
        "gate",
        "last_ns",
        "log",
        "mark",
        "mark_seq",
        "next_seq",
        "state",
    )

    def __init__(self, state: StreamState, gate: Gate | None) -> None:
        self.state = state
        self.log = state.log  # the per-token path appends here directly
        self.byte_count = state.log.byte_count  # the same object for the log's life
        #: the stream's byte budgets (None: the flow has none, the common case)
        self.gate = gate
        self.last_ns = state.created_ns  # for latency budgets
        #: the stream's durable run (None: at_most_once, the common case)
        self.durable: DurableRun | None = state.durable
        # A resumed run renumbers from its checkpoint; the replayed seqs the
        # store holds are dropped (runtime/durable.py).
        self.next_seq = state.start_seq if self.durable is None else self.durable.replay_from
        self.closed = False
        self.done_seq = 0  # the seq of this node's done chunk, once closed
        # The message of the invocation that last wrote here, and the seq it
        # started at: what a retry of that invocation rewinds to.
        self.mark: Message | None = None
        self.mark_seq = 0


class Context:
    """Handed to every invocation of one node."""

    __slots__ = (
        "_budget",
        "_budgets",
        "_cache_em",
        "_cache_sid",
        "_egress",
        "_key",
        "_registry",
        "_replay",
        "_sink",
        "_succ",
        "_targets",
        "node",
    )

    def __init__(
        self,
        node: Node,
        registry: StreamRegistry,
        successors: dict[Node, Channel[Message]],
        egress: Channel[Message],
        budgets: Budgets | None = None,
    ) -> None:
        self.node = node
        #: the flow's byte budgets (None: no byte limit is set)
        self._budgets = budgets
        budget_ms = node.policy.latency_budget_ms
        #: the node's latency budget tracker (None: not measured)
        self._budget = None if budget_ms is None else LatencyBudget(budget_ms)
        self._registry = registry
        self._key = id(node)
        self._succ = successors
        self._targets: tuple[Channel[Message], ...] = tuple(successors.values())
        self._egress = egress
        self._sink = not successors
        # Only a node that can be retried needs to know where each
        # invocation started writing (see rewind).
        self._replay = node.policy.max_retries > 0
        # The emitter last written, by stream id: consecutive chunks of one
        # stream skip the registry lookup. Unset until the first emit.
        self._cache_sid: str | None = None
        self._cache_em: _Emitter = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Context of {self.node.name!r}>"

    # -- messages --------------------------------------------------------------

    async def emit(self, msg: Message, to: Node | Sequence[Node] | None = None) -> None:
        """Send ``msg`` to the successors (or ``to``), or to the flow's egress.

        Awaiting it applies backpressure: it waits while a target inbox is full.
        """
        targets = self._resolve(to)
        if not targets:
            await self._egress.send(msg)
            return
        for inbox in targets:
            await inbox.send(msg)

    def _resolve(self, to: Node | Sequence[Node] | None) -> tuple[Channel[Message], ...]:
        if to is None:
            return self._targets
        nodes: Iterable[Node] = (to,) if isinstance(to, Node) else to
        inboxes = []
        for node in nodes:
            inbox = self._succ.get(node)
            if inbox is None:
                raise ValueError(f"{node!r} is not a successor of {self.node!r}")
            inboxes.append(inbox)
        return tuple(inboxes)

    # -- chunks ----------------------------------------------------------------

    async def emit_chunk(
        self,
        *,
        parent: Message,
        text: str,
        stream_id: str | None = None,
        seq: int | None = None,
        done: bool = False,
        meta: dict[str, Any] | None = None,
        data: Any = None,
        to: Node | Sequence[Node] | None = None,
    ) -> StreamChunk:
        """Emit one chunk of ``stream_id`` (default: ``parent.trace_id``).

        ``seq`` is assigned when omitted. Headers and trace come from
        ``parent``. Awaiting applies backpressure: it waits while the
        stream's slowest reader (or a successor's inbox) is full.

        :raises StreamClosedError: this node already sent ``done`` on the
            stream, or the stream ended (cancelled, failed, timed out).
        """
        if to is not None:
            # Resolved before any state changes: a refused emit uses no seq.
            targets = self._resolve(to)
        sid = parent.trace_id if stream_id is None else stream_id
        if sid is self._cache_sid or sid == self._cache_sid:
            em = self._cache_em
        else:
            em = self._emitter(sid, parent)
        state = em.state
        if em.closed or state.phase:
            if seq is not None and seq < state.next_seq:
                # Already released (a retry replaying, fan-in): dropped.
                return _replayed(sid, seq, text, done, meta, data)
            if state.phase or seq is None or seq >= em.done_seq:
                raise StreamClosedError(sid, state.code)
            # A lower seq overtaken by this node's done (max_concurrency > 1):
            # it still belongs to the stream.
        if seq is None:
            seq = em.next_seq
            em.next_seq = seq + 1
        elif seq.__class__ is not int or seq < 0:
            raise ValueError(f"seq must be an int >= 0, got {seq!r}")
        elif seq >= em.next_seq:
            em.next_seq = seq + 1
        if self._replay and em.mark is not parent:
            em.mark = parent
            em.mark_seq = seq
        if done:
            em.closed = True
            em.done_seq = seq
        chunk = StreamChunk(sid, seq, text, done, NO_META if meta is None else meta, data)
        if self._budget is not None:
            self._budget.record((chunk.ts - em.last_ns) / 1e9)
            em.last_ns = chunk.ts
        gate = em.gate
        if (
            gate is not None
            and ((to is None and self._sink) or (to is not None and not targets))
            and seq >= state.next_seq  # replays are dropped by the stream: free
        ):
            # Bytes/s and in-flight budgets, paid where the chunk enters the
            # stream (a pipeline's upstream stages are paced by its inboxes).
            await gate.acquire(len(text) if data is None else chunk_size(chunk))
            if state.phase:
                raise StreamClosedError(sid, state.code)  # it ended while we waited
        if to is None:
            if self._sink:
                durable = em.durable
                if durable is not None:  # durable streams (issue 11): via the store
                    writer = durable.writer
                    if not writer.offer(durable, chunk):
                        await writer.settle(durable, chunk)
                    return chunk
                # StreamState.publish, with its phase check done above. The
                # in-order case is the log's producer fast path (the
                # StreamLog module docstring), written out: measured on
                # bench/scenarios.py icefloe_one_hop (CPU time per chunk, best
                # of interleaved runs), one StreamLog.append call per chunk
                # costs ~2.5% (961 -> 938 ns); with the per-window calls
                # trimmed too, 898 ns against 894 ns for the code before the
                # log moved into the core (which wrote its privates here).
                log = em.log
                if seq == log.next_seq and log.in_order:
                    queue = log.queue
                    queue.append(chunk)
                    log.next_seq = seq + 1
                    count = em.byte_count
                    count.bound += len(text) if data is None else chunk_size(chunk)
                    if done or log.data_wanted:
                        log.appended(chunk)
                    elif len(queue) < log.room_len and count.bound < count.limit:
                        return chunk
                    else:
                        # Room may be short, and nothing else to settle (no
                        # reader waits, the log is open): wait_room decides.
                        await state.wait_room()
                        return chunk
                else:
                    try:
                        if log.append(chunk):
                            return chunk
                    except ReorderOverflow as exc:
                        state.reorder_overflow(exc)
                if not state.settle():
                    await state.wait_room()
                return chunk
            targets = self._targets
        elif not targets:
            durable = em.durable
            if durable is not None:  # durable streams (issue 11): via the store
                writer = durable.writer
                if not writer.offer(durable, chunk):
                    await writer.settle(durable, chunk)
                return chunk
            if not state.publish(chunk):
                await state.wait_room()
            return chunk
        wrapped = Message(chunk, parent.headers, parent.trace_id, parent.deadline_s, parent.meta)
        for inbox in targets:
            await inbox.send(wrapped)
        return chunk

    def _emitter(self, sid: str, parent: Message) -> _Emitter:
        state = self._registry.get(sid)
        budgets = self._budgets
        if state is None:
            refused = None if budgets is None else budgets.refusal(parent.headers.tenant)
            if refused is not None:
                self._registry.refused += 1
                raise StreamClosedError(sid, refused[0])
            try:
                state = self._registry.admit(sid, parent.trace_id, parent.headers)
            except StreamError as exc:
                raise StreamClosedError(sid, ErrorCode.OVERLOADED) from exc
        em: _Emitter | None = state.emitters.get(self._key)
        if em is None:
            gate = None if budgets is None else budgets.gate(state)
            em = state.emitters[self._key] = _Emitter(state, gate)
        self._cache_sid = sid
        self._cache_em = em
        return em

    def rewind(self, msg: Message) -> None:
        """Prepare a retry of the invocation that handled ``msg`` (the runner calls it).

        Every stream that invocation wrote gets its automatic numbering reset
        to where the failed attempt started. A deterministic retry therefore
        re-emits the same seqs, which the stream drops as duplicates, and
        carries on from where the first attempt stopped: consumers see no
        duplicate and no gap. A node that cannot replay identically should
        read :meth:`stream_progress` and skip what was already delivered.
        """
        for state in self._registry.by_trace(msg.trace_id):
            em = state.emitters.get(self._key)
            if em is not None and em.mark is msg:
                em.next_seq = em.mark_seq
                em.closed = em.closed and em.done_seq < em.mark_seq
        self._cache_sid = None

    def inputs(self, *, parent: Message, stream_id: str | None = None) -> StreamInputs:
        """The interactive inputs sent to a stream this node produces.

        An async iterator of the ``data`` of each input (``flow.send_input``,
        the WebSocket ``input`` op), in arrival order; it ends when the stream
        ends. ``stream_id`` defaults to the parent's trace_id, as in
        :meth:`emit_chunk`. Poll without waiting with ``get_nowait()``.

        :raises StreamClosedError: the stream already ended.
        """
        sid = parent.trace_id if stream_id is None else stream_id
        state = self._emitter(sid, parent).state
        return state.input_queue(self._registry.limits.stream_inputs)

    def latency(self) -> LatencyBudgetStatistics | None:
        """The node's latency budget figures (None without ``latency_budget_ms``)."""
        return None if self._budget is None else self._budget.statistics()

    # -- durable runs (issue 11, docs/reliability.md) ----------------------------

    @property
    def restored_state(self) -> Any:
        """The state of the running invocation's last :meth:`checkpoint`.

        ``None`` on a first run, outside an ``exactly_once`` run, or when the
        run was resumed before its first checkpoint.
        """
        run = current_run()
        return None if run is None else run.restored_state

    @property
    def resumed_from(self) -> int:
        """The last seq the store held when this run was resumed after a restart.

        ``-1`` on a first run (so ``ctx.resumed_from + 1`` is always the
        first seq still to emit), and outside a durable run.
        """
        run = current_run()
        return NO_SEQ if run is None else run.resumed_from

    async def checkpoint(self, state: Any) -> None:
        """Store ``state`` with the last seq this run emitted, atomically with
        the chunks up to it. After a restart the run is called again with it
        as :attr:`restored_state`, and its automatic seqs restart after it.

        Returns once queued (backpressure only); it becomes durable together
        with the chunks it covers, never before them.

        :raises InvalidState: not in an ``exactly_once`` run of a flow with a store.
        :raises EncodeError: ``state`` is not msgpack-encodable.
        """
        run = current_run()
        if run is None or not run.exactly_once:
            raise InvalidState(
                "ctx.checkpoint needs an exactly_once run in a flow with a store "
                "(NodePolicy(reliability='exactly_once'), create(..., store=...))"
            )
        await run.writer.checkpoint(run, state)

    # -- end of durable runs ------------------------------------------------------

    def stream_progress(self, stream_id: str) -> int | None:
        """How many chunks of ``stream_id`` were released to readers so far.

        ``None`` if the stream is unknown. After a retry, a node can resume
        from here instead of replaying.
        """
        state = self._registry.get(stream_id)
        return None if state is None else state.next_seq - state.start_seq


def _replayed(
    sid: str, seq: int, text: str, done: bool, meta: dict[str, Any] | None, data: Any
) -> StreamChunk:
    # A seq the ended stream already released: a replay, dropped silently.
    return StreamChunk(sid, seq, text, done, NO_META if meta is None else meta, data)
