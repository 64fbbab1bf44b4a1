"""icefloe: real-time token streaming for agent and LLM flows.

``import icefloe`` loads the core and the asyncio runtime only; the HTTP and
WebSocket edge, the CLI and broker connectors are imported on demand.
"""

from icefloe._version import __version__
from icefloe.core.messages import Headers, Message, StreamChunk
from icefloe.exceptions import (
    BrokenResourceError,
    ClosedResourceError,
    EndOfStream,
    ErrorCode,
    IcefloeError,
    InvalidState,
    StreamClosedError,
    StreamError,
    WouldBlock,
)
from icefloe.runtime.context import Context
from icefloe.runtime.flow import Flow, FlowStatistics, create
from icefloe.runtime.limits import Limits
from icefloe.runtime.node import Node, NodePolicy, Reliability
from icefloe.runtime.stream_types import StreamStatistics
from icefloe.runtime.subscription import Subscription
from icefloe.runtime.writer import StreamWriter

__all__ = [
    "BrokenResourceError",
    "ClosedResourceError",
    "Context",
    "EndOfStream",
    "ErrorCode",
    "Flow",
    "FlowStatistics",
    "Headers",
    "IcefloeError",
    "InvalidState",
    "Limits",
    "Message",
    "Node",
    "NodePolicy",
    "Reliability",
    "StreamChunk",
    "StreamClosedError",
    "StreamError",
    "StreamStatistics",
    "StreamWriter",
    "Subscription",
    "WouldBlock",
    "__version__",
    "create",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("icefloe."):
        try:
            _obj.__module__ = "icefloe"
        except (AttributeError, TypeError):  # pragma: no cover - builtins
            pass
del _name, _obj
