"""Nodes, their policies, and the ``a.to(b, c)`` wiring."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from icefloe.core.checks import check_int, check_number
from icefloe.core.reliability import Reliability

if TYPE_CHECKING:
    from icefloe.core.messages import Message
    from icefloe.runtime.context import Context

# Reliability lives in the core (one ranking for the runtime, the hub and
# load shedding); it is re-exported here, where it was first defined.
__all__ = ["Adjacency", "Node", "NodeFunc", "NodePolicy", "Reliability", "graph"]

NodeFunc = Callable[["Message", "Context"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class NodePolicy:
    """How a node runs its invocations.

    * ``timeout_s``: seconds one invocation may take (None: no limit); on expiry
      the attempt fails like an exception would, and the final failure ends the
      message's streams with code ``timeout``.
    * ``max_retries``: extra attempts after a failure (0: none).
    * ``backoff_s`` / ``backoff_factor`` / ``backoff_max_s``: wait before retry k
      is ``min(backoff_s * backoff_factor**k, backoff_max_s)``.
    * ``max_concurrency``: invocations of this node running at once (>= 1).
    * ``queue_maxsize``: capacity of the node's inbox in messages (None: the
      flow's ``queue_maxsize``).
    * ``reliability``: the stream guarantee the node asks for.
    * ``latency_budget_ms``: the longest a reader should wait for each chunk
      this node emits: for the first, from the stream's admission; for the
      rest, from the previous chunk (None: not measured). Observations,
      violations and quantiles are in ``flow.stats()`` and ``/metrics``.
    """

    timeout_s: float | None = None
    max_retries: int = 0
    backoff_s: float = 0.05
    backoff_factor: float = 2.0
    backoff_max_s: float = 5.0
    max_concurrency: int = 1
    queue_maxsize: int | None = None
    reliability: Reliability = Reliability.AT_MOST_ONCE
    latency_budget_ms: float | None = None

    def __post_init__(self) -> None:
        if self.timeout_s is not None:
            check_number("timeout_s", self.timeout_s, 0, strict=True)
        check_int("max_retries", self.max_retries, 0)
        check_number("backoff_s", self.backoff_s, 0)
        check_number("backoff_factor", self.backoff_factor, 1)
        check_number("backoff_max_s", self.backoff_max_s, 0)
        check_int("max_concurrency", self.max_concurrency, 1)
        if self.queue_maxsize is not None:
            check_int("queue_maxsize", self.queue_maxsize, 1)
        object.__setattr__(self, "reliability", Reliability(self.reliability))
        if self.latency_budget_ms is not None:
            check_number("latency_budget_ms", self.latency_budget_ms, 0, strict=True)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        return float(min(self.backoff_s * self.backoff_factor**attempt, self.backoff_max_s))


class Node:
    """A named async function ``func(message, ctx)`` placed in a flow.

    Identity matters: the same ``Node`` object used in several adjacencies is
    one node of the graph.
    """

    __slots__ = ("func", "name", "policy")

    def __init__(
        self, func: NodeFunc, name: str | None = None, policy: NodePolicy | None = None
    ) -> None:
        if not inspect.iscoroutinefunction(func) and not inspect.iscoroutinefunction(
            getattr(func, "__call__", None)  # noqa: B004 - async callables count too
        ):
            raise TypeError(f"node function must be async (async def), got {func!r}")
        self.func = func
        self.name = name or getattr(func, "__name__", None) or "node"
        self.policy = policy or NodePolicy()

    def to(self, *successors: Node) -> Adjacency:
        """Wire this node to ``successors`` (none: a sink that feeds the egress)."""
        for succ in successors:
            if not isinstance(succ, Node):
                raise TypeError(f"{self.name}.to() takes Nodes, got {succ!r}")
        return Adjacency(self, successors)

    def __repr__(self) -> str:
        return f"Node({self.name!r})"


@dataclass(frozen=True, slots=True)
class Adjacency:
    """One ``node -> successors`` edge list, as built by :meth:`Node.to`."""

    node: Node
    successors: tuple[Node, ...]

    def __iter__(self) -> Any:
        # Allows ``node, succs = a.to(b)`` unpacking.
        return iter((self.node, self.successors))


def graph(adjacencies: Sequence[Adjacency]) -> tuple[list[Node], dict[Node, list[Node]]]:
    """The nodes of ``adjacencies`` in order of appearance, and each one's successors.

    :raises TypeError: an item is not an :class:`Adjacency`.
    :raises ValueError: two nodes share a name.
    """
    nodes: list[Node] = []
    succ: dict[Node, list[Node]] = {}

    def add(node: Node) -> None:
        if node not in succ:
            nodes.append(node)
            succ[node] = []

    for adj in adjacencies:
        if not isinstance(adj, Adjacency):
            raise TypeError(f"create() takes node.to(...) adjacencies, got {adj!r}")
        add(adj.node)
        for s in adj.successors:
            add(s)
            if s not in succ[adj.node]:
                succ[adj.node].append(s)
    names = [n.name for n in nodes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"node names must be unique, repeated: {dupes}")
    return nodes, succ
