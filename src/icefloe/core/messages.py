"""The values that travel through a flow: headers, messages and stream chunks.

They are msgspec Structs: cheap to build on the hot path, and encodable to
JSON and msgpack without adapters (see :mod:`icefloe.core.codec`).
"""

import time
import uuid
from typing import Any

import msgspec

__all__ = ["NO_META", "Headers", "Message", "ReadOnlyDict", "StreamChunk", "new_id"]


class ReadOnlyDict(dict[str, Any]):
    """A dict that refuses changes: the shared ``meta`` of chunks emitted without one.

    Chunks are shared by every reader of a stream, so their ``meta`` must not
    be changed in place; sharing one empty mapping also saves an allocation
    per token on the hot path.
    """

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("chunk meta is read-only; build a new dict instead")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only


#: the ``meta`` of every chunk emitted without one
NO_META: dict[str, Any] = ReadOnlyDict()


def new_id() -> str:
    """A fresh identifier with 122 random bits (uuid4, hex)."""
    return uuid.uuid4().hex


class Headers(msgspec.Struct, frozen=True):
    """Routing facts every message carries; immutable so it can be shared."""

    #: the owning tenant; every stream and topic belongs to one
    tenant: str
    #: optional hub topic the message relates to
    topic: str | None = None
    #: scheduling class; higher is more urgent
    priority: int = 0


class Message(msgspec.Struct):
    """A unit of work moving between nodes.

    ``deadline_s`` is an absolute wall-clock time (``time.time()`` seconds):
    past it, the message's stream ends with the ``timeout`` terminal.
    """

    payload: Any
    headers: Headers
    trace_id: str = msgspec.field(default_factory=new_id)
    deadline_s: float | None = None
    meta: dict[str, Any] = {}


class StreamChunk(msgspec.Struct, frozen=True, gc=False):
    """One ordered piece of a stream.

    ``seq`` starts at 0 and grows by exactly one per chunk of a ``stream_id``;
    the chunk with ``done=True`` is the last one. ``ts`` is the creation time
    in unix nanoseconds.

    Chunks are shared by every reader and are not tracked by the cyclic
    garbage collector (``gc=False``: one per token adds up): ``meta`` and
    ``data`` must not refer back to the chunk itself.
    """

    stream_id: str
    seq: int
    text: str
    done: bool = False
    meta: dict[str, Any] = {}
    data: Any = None
    ts: int = msgspec.field(default_factory=time.time_ns)
