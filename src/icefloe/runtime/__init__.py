"""The asyncio runtime: flows, nodes, contexts, streams and their limits."""

from icefloe.runtime.context import Context
from icefloe.runtime.flow import Flow, FlowStatistics, create
from icefloe.runtime.limits import Limits
from icefloe.runtime.node import Adjacency, Node, NodePolicy, Reliability
from icefloe.runtime.stream_types import StreamStatistics
from icefloe.runtime.subscription import Subscription
from icefloe.runtime.writer import StreamWriter

__all__ = [
    "Adjacency",
    "Context",
    "Flow",
    "FlowStatistics",
    "Limits",
    "Node",
    "NodePolicy",
    "Reliability",
    "StreamStatistics",
    "StreamWriter",
    "Subscription",
    "create",
]
