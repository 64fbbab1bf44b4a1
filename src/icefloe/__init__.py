"""icefloe: real-time token streaming for agent and LLM flows.

``import icefloe`` loads the core and the asyncio runtime only; the hub
(:mod:`icefloe.hub`) is loaded on first use of one of its names (PEP 562),
and the HTTP and WebSocket edge (:mod:`icefloe.transport`, the ``server``
extra) and the command line (:mod:`icefloe.cli`) are imported on demand.
"""

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from icefloe.core.filters import FilterError
    from icefloe.core.ring import Overflow
    from icefloe.core.topics import TopicError
    from icefloe.hub import (
        Hub,
        HubEvent,
        HubLimits,
        HubStatistics,
        HubSubscription,
        SubscriptionStatistics,
    )

#: names loaded on first use, and the module each lives in
_LAZY = {
    "FilterError": "icefloe.core.filters",
    "Hub": "icefloe.hub",
    "HubEvent": "icefloe.hub",
    "HubLimits": "icefloe.hub",
    "HubStatistics": "icefloe.hub",
    "HubSubscription": "icefloe.hub",
    "Overflow": "icefloe.core.ring",
    "SubscriptionStatistics": "icefloe.hub",
    "TopicError": "icefloe.core.topics",
}

__all__ = [
    "BrokenResourceError",
    "ClosedResourceError",
    "Context",
    "EndOfStream",
    "ErrorCode",
    "FilterError",
    "Flow",
    "FlowStatistics",
    "Headers",
    "Hub",
    "HubEvent",
    "HubLimits",
    "HubStatistics",
    "HubSubscription",
    "IcefloeError",
    "InvalidState",
    "Limits",
    "Message",
    "Node",
    "NodePolicy",
    "Overflow",
    "Reliability",
    "StreamChunk",
    "StreamClosedError",
    "StreamError",
    "StreamStatistics",
    "StreamWriter",
    "Subscription",
    "SubscriptionStatistics",
    "TopicError",
    "WouldBlock",
    "__version__",
    "create",
]

for _name in __all__:
    if _name in _LAZY:
        continue
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("icefloe."):
        try:
            _obj.__module__ = "icefloe"
        except (AttributeError, TypeError):  # pragma: no cover - builtins
            pass
del _name, _obj


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'icefloe' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(where), name)
    if getattr(value, "__module__", "").startswith("icefloe."):
        try:
            value.__module__ = "icefloe"
        except (AttributeError, TypeError):  # pragma: no cover - builtins
            pass
    globals()[name] = value
    return value
