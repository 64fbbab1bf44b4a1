"""The store side of a flow's runs: their records, idempotency claims and resumes.

A :class:`~icefloe.runtime.flow.Flow` with a store keeps one
:class:`StoreRuns`: it decides which runs the store records (the durable
ones, and keyed ones so their key outlives a restart), claims idempotency
keys, re-admits the runs crash recovery resumes, and settles the runs a
worker takes over (``Flow.recover_run``). The chunks themselves travel
through the :class:`~icefloe.runtime.durable.StoreWriter`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from icefloe.core.messages import Message
from icefloe.core.reliability import Reliability
from icefloe.exceptions import StreamError
from icefloe.runtime.durable import DurableRun, StoreWriter
from icefloe.runtime.node import Node
from icefloe.runtime.recovery import recover, settle
from icefloe.runtime.stream_types import StreamPhase
from icefloe.store.types import NO_SEQ, RunRecord, RunState, Terminal

if TYPE_CHECKING:
    from icefloe.runtime.registry import StreamRegistry
    from icefloe.runtime.stream import StreamState

__all__ = ["StoreRuns"]


class StoreRuns:
    """What a flow records of its runs in its store."""

    def __init__(self, writer: StoreWriter, registry: StreamRegistry, nodes: Sequence[Node]):
        self.writer = writer
        self._registry = registry
        self._by_name = {n.name: n for n in nodes}

    async def recover(self, resume: Callable[[RunState], None]) -> None:
        """Settle every unfinished run of the store (crash recovery at start)."""
        await recover(self.writer, resume)

    async def recover_run(self, stream_id: str, resume: Callable[[RunState], None]) -> str | None:
        """Settle the store's unfinished run ``stream_id`` now; what was done, or
        None: the store holds no unfinished run of that id, or the flow runs it.

        :raises StoreUnavailable: the store did not answer.
        """
        if self._registry.get(stream_id) is not None:
            return None
        await self.writer.ready()
        stored = await self.writer.store.get_run(stream_id)
        if stored is None or stored.terminal is not None:
            return None
        if self._registry.get(stream_id) is not None:
            return None  # admitted here while the store answered
        return await settle(self.writer, stored, resume)

    def record(
        self, message: Message, reliability: str, to: Node | Sequence[Node] | None, *, keyed: bool
    ) -> DurableRun | None:
        """The store record of a new run, when the store keeps it."""
        level = Reliability.parse(reliability)
        if level is Reliability.AT_MOST_ONCE and not keyed:
            return None
        from icefloe.store.records import encode_message

        names = () if to is None else tuple(n.name for n in ((to,) if isinstance(to, Node) else to))
        run = RunRecord(
            message.trace_id,
            message.trace_id,
            message.headers.tenant,
            level,
            names,
            encode_message(message),
            time.time(),
        )
        return DurableRun(self.writer, run)

    def record_admitted(
        self,
        message: Message,
        reliability: str,
        to: Node | Sequence[Node] | None,
        state: StreamState,
    ) -> None:
        """Record the run of an admitted stream, when the store keeps it (``flow.stream``)."""
        run = self.record(message, reliability, to, keyed=False)
        if run is not None:
            self.attach(run, state)

    def attach(self, run: DurableRun, state: StreamState) -> None:
        """``run`` produces ``state``; only a durable run's chunks go through the store."""
        state.durable = run if run.stores_chunks else None
        self.writer.track(run, state)

    async def claim(self, run: DurableRun, key: str | None) -> str:
        """Create ``run`` in the store; the stream id holding ``key`` (``run``'s, if new).

        :raises StoreUnavailable: the store did not answer.
        """
        await self.writer.ready()
        winner = await self.writer.store.create_run(run.record, idempotency_key=key)
        run.created = True
        return winner

    async def refused(self, run: DurableRun, exc: StreamError) -> None:
        """Admission refused a run the store holds already: end it there too."""
        terminal = Terminal(StreamPhase.FAILED.label, exc.code.value, exc.message, time.time())
        await self.writer.store.end_run(run.stream_id, terminal)

    def resume(self, stored: RunState) -> tuple[StreamState, Message, list[Node] | None]:
        """Re-admit a stored run where the store left it: its stream (starting
        after the last stored seq), its start message and the nodes it entered
        (None: the flow's entry).

        :raises ValueError: a node it entered is no longer in the flow.
        :raises CorruptRecord: its start message or checkpoint does not decode.
        """
        from icefloe.store.records import decode_message, decode_state

        record = stored.run
        message = decode_message(record.message)
        missing = [name for name in record.targets if name not in self._by_name]
        if missing:
            raise ValueError(f"its nodes {missing} are not in this flow")
        nodes = [self._by_name[name] for name in record.targets] or None
        cp = stored.checkpoint
        run = DurableRun(
            self.writer,
            record,
            created=True,
            stored_seq=stored.last_seq,
            checkpoint_seq=NO_SEQ if cp is None else cp.seq,
            restored_state=None if cp is None else decode_state(cp.state),
        )
        state = self._registry.admit(
            record.stream_id,
            record.trace_id,
            message.headers,
            reliability=record.reliability,
            start_seq=stored.last_seq + 1,
        )
        self.attach(run, state)
        if message.deadline_s is not None:
            self._registry.set_deadline(state, message.deadline_s)
        return state, message, nodes
