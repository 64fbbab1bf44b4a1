"""A flow's graph made runnable: an inbox and workers per node, the ingress and the egress.

:func:`~icefloe.runtime.node.graph` says which node feeds which; a
:class:`Wiring` turns that into the moving parts a
:class:`~icefloe.runtime.flow.Flow` runs: one :class:`Channel` inbox and one
:class:`NodeRunner` per node, the entry inboxes a run's message enters, and
the egress ``flow.fetch`` reads. It exists so the flow's own calls (runs,
streams, the store) stay apart from how messages are carried: the wiring is
built once, then only started, addressed, measured and stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from icefloe.core.flowwindow import FlowWindowPolicy, FlowWindowStatistics
from icefloe.core.messages import Message
from icefloe.runtime.channel import AdaptiveChannel, Channel
from icefloe.runtime.context import Context
from icefloe.runtime.fair import FairQueue
from icefloe.runtime.node import Adjacency, Node, graph
from icefloe.runtime.runner import NodeRunner, NodeStatistics

if TYPE_CHECKING:
    from icefloe.runtime.budgets import Budgets
    from icefloe.runtime.durable import DurableRun
    from icefloe.runtime.registry import StreamRegistry

__all__ = ["Wiring"]


class Wiring:
    """The inboxes, workers, ingress and egress of a graph of nodes.

    ``queue_maxsize`` bounds every inbox (unless a node's policy sets its
    own) and the egress; ``window`` makes inner inboxes adaptive
    (``Limits.inbox_window``).

    :raises ValueError: no node, or ``queue_maxsize`` is not an int >= 1.
    """

    __slots__ = ("_inboxes", "_ingress", "_ingress_nodes", "_runners", "egress", "nodes")

    def __init__(
        self,
        adjacencies: Sequence[Adjacency],
        queue_maxsize: int,
        window: FlowWindowPolicy | None,
        registry: StreamRegistry,
        budgets: Budgets | None,
    ) -> None:
        if not adjacencies:
            raise ValueError("create() needs at least one node: create(Node(f).to())")
        if not isinstance(queue_maxsize, int) or queue_maxsize < 1:
            raise ValueError(f"queue_maxsize must be an int >= 1, got {queue_maxsize!r}")
        nodes, succ = graph(adjacencies)
        #: every node, in graph order
        self.nodes: tuple[Node, ...] = tuple(nodes)
        #: where sink nodes' ``ctx.emit`` messages wait for ``flow.fetch``
        self.egress: Channel[Message] = Channel(queue_maxsize)
        has_pred = {s for n in nodes for s in succ[n]}
        ingress = [n for n in nodes if n not in has_pred] or [nodes[0]]
        self._inboxes = _inboxes(nodes, ingress, queue_maxsize, window)
        self._runners: list[NodeRunner] = []
        for node in nodes:
            ctx = Context(
                node,
                registry,
                {s: self._inboxes[s] for s in succ[node]},
                self.egress,
                budgets,
            )
            self._runners.append(NodeRunner(node, self._inboxes[node], ctx, registry))
        self._ingress = tuple(self._inboxes[n] for n in ingress)
        self._ingress_nodes = tuple(ingress)

    def targets(self, to: Node | Sequence[Node] | None) -> tuple[Channel[Message], ...]:
        """The inboxes a message sent ``to`` enters (None: the ingress).

        :raises ValueError: a node is not in this graph.
        """
        if to is None:
            return self._ingress
        nodes = (to,) if isinstance(to, Node) else tuple(to)
        try:
            return tuple(self._inboxes[n] for n in nodes)
        except KeyError as exc:
            raise ValueError(f"{exc.args[0]!r} is not a node of this flow") from None

    def reliability(self, to: Node | Sequence[Node] | None) -> str:
        """The strongest guarantee asked for by the nodes a run enters."""
        if to is None:
            nodes: Sequence[Node] = self._ingress_nodes
        else:
            nodes = (to,) if isinstance(to, Node) else to
        return max((n.policy.reliability for n in nodes), key=lambda level: level.rank)

    def queue_fill(self) -> float:
        """The fullest inbox against its configured maxsize, 0..1 (an adaptive
        inbox's shrunken window is the inbox holding less, not pressure)."""
        return max((len(q) / q.maxsize for q in self._inboxes.values()), default=0.0)

    def cancel_trace(self, trace_id: str) -> bool:
        """Skip the queued messages of ``trace_id`` and interrupt its running
        invocations; whether anything was hit."""
        return sum(runner.cancel_trace(trace_id) for runner in self._runners) > 0

    def use_durable_lookup(self, lookup: Callable[[str], DurableRun | None]) -> None:
        """The workers find a trace's durable run with ``lookup`` (the flow has a store)."""
        for runner in self._runners:
            runner.durable_lookup = lookup

    def start(self) -> None:
        """Start every node's workers on the running loop."""
        for runner in self._runners:
            runner.start()

    async def stop(self) -> None:
        """Stop the workers, then close and empty every inbox and close the egress."""
        for runner in self._runners:
            await runner.stop()
        for inbox in self._inboxes.values():
            inbox.close()
            inbox.clear()
        self.egress.close()

    def node_statistics(self) -> tuple[NodeStatistics, ...]:
        """One entry per node, in graph order."""
        return tuple(r.statistics() for r in self._runners)

    def inbox_windows(self) -> Mapping[str, FlowWindowStatistics]:
        """The adaptive inbox windows, by node name (empty: fixed inboxes)."""
        return {
            n.name: w for n, q in self._inboxes.items() if (w := q.window_statistics()) is not None
        }


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
