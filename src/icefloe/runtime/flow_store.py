"""A flow's store, once attached: wired into the flow, and its runs started or resumed.

A :class:`~icefloe.runtime.flow.Flow` without a store pays nothing for one;
with one (``create(store=...)`` or ``flow.use_store``) it keeps a
:class:`FlowStore`. It exists to hold, in one place, everything a store
adds to a flow's life: the :class:`~icefloe.runtime.durable.StoreWriter`
wired into the registry (runs that end) and the node workers (checkpoints,
restored state); a new run recorded and its idempotency key claimed before
admission, and ended in the store if admission refuses it; and a run crash
recovery resumes re-entering the flow through admission. What is recorded
of a run is :class:`~icefloe.runtime.store_runs.StoreRuns`' business.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from icefloe.core.messages import Message
from icefloe.exceptions import StreamError
from icefloe.runtime.durable import DurableRun, DurableStatistics, StoreWriter
from icefloe.runtime.node import Node
from icefloe.runtime.store_runs import StoreRuns
from icefloe.store.protocol import Store
from icefloe.store.types import RunState

if TYPE_CHECKING:
    from icefloe.runtime.admission import Admission
    from icefloe.runtime.registry import StreamRegistry
    from icefloe.runtime.stream import StreamState
    from icefloe.runtime.wiring import Wiring

__all__ = ["FlowStore"]

#: the nodes a run enters (None: the flow's entry nodes)
Entry = Node | Sequence[Node] | None


class FlowStore:
    """The store side of one flow (made before the flow starts)."""

    __slots__ = ("_admission", "_runs", "_wiring", "_writer")

    def __init__(
        self, store: Store, registry: StreamRegistry, wiring: Wiring, admission: Admission
    ) -> None:
        writer = StoreWriter(store)
        self._writer = writer
        self._runs = StoreRuns(writer, registry, wiring.nodes)
        self._wiring = wiring
        self._admission = admission
        registry.on_ended = writer.ended
        wiring.use_durable_lookup(writer.lookup)

    @property
    def store(self) -> Store:
        return self._writer.store

    # -- life cycle -------------------------------------------------------------

    def start(self, on_open: Callable[[], Awaitable[None]]) -> None:
        """Open the store in the background; ``on_open`` runs once it is open."""
        self._writer.start(on_open)

    async def ready(self) -> None:
        """Wait until the store is open and ``on_open`` has run.

        :raises StoreUnavailable: the store could not be opened.
        """
        await self._writer.ready()

    async def close(self) -> None:
        """Stop writing; durable runs stay unfinished in the store, to be resumed."""
        await self._writer.close()

    def statistics(self) -> DurableStatistics:
        return self._writer.statistics()

    # -- recovery ---------------------------------------------------------------

    async def recover(self) -> None:
        """Settle every unfinished run of the store (crash recovery at start)."""
        await self._runs.recover(self._resume)

    async def recover_run(self, stream_id: str) -> str | None:
        """Settle the store's unfinished run ``stream_id`` now (``Flow.recover_run``).

        :raises StoreUnavailable: the store did not answer.
        """
        return await self._runs.recover_run(stream_id, self._resume)

    def forget(self, stream_id: str) -> None:
        """Write nothing more of ``stream_id`` (another process took it over)."""
        self._writer.forget(stream_id)

    def _resume(self, stored: RunState) -> None:
        """Start a stored ``exactly_once`` run again where the store left it."""
        state, message, nodes = self._runs.resume(stored)
        self._admission.defer(state, self._wiring.targets(nodes), message, 0.0)

    # -- new runs ---------------------------------------------------------------

    def admitted(self, message: Message, reliability: str, to: Entry, state: StreamState) -> None:
        """Record the run of a stream admitted already (``flow.stream``), if the store keeps it."""
        self._runs.record_admitted(message, reliability, to, state)

    async def claim(
        self, message: Message, reliability: str, to: Entry, idempotency_key: str | None
    ) -> tuple[DurableRun | None, str]:
        """Record a run about to be admitted (``flow.start``), claiming its key.

        Returns its store record (None: the store does not keep this run) and
        the stream id holding the key: the run's own, or that of the run that
        claimed the key first (then nothing must start).

        :raises StoreUnavailable: the store did not answer.
        """
        keyed = idempotency_key is not None
        run = self._runs.record(message, reliability, to, keyed=keyed)
        if run is None:
            return None, message.trace_id
        return run, await self._runs.claim(run, idempotency_key)

    async def refused(self, run: DurableRun, exc: StreamError) -> None:
        """Admission refused a run claimed in the store: end it there too."""
        await self._runs.refused(run, exc)

    def attach(self, run: DurableRun, state: StreamState) -> None:
        """The claimed ``run`` was admitted as ``state``."""
        self._runs.attach(run, state)
