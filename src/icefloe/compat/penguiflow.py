"""Run node functions written for penguiflow unchanged, as icefloe nodes.

A penguiflow node function is ``async def f(message, ctx)``: it streams with
``await ctx.emit_chunk(parent=message, text=..., stream_id=None, seq=None,
done=False, meta=None, to=None)`` (which returns the ``StreamChunk``), sends
with ``await ctx.emit(value, to=None)``, and whatever it *returns*, when not
``None``, goes to its successors. Only the import line changes::

    # from penguiflow import Headers, Message, Node, StreamChunk, create
    from icefloe.compat.penguiflow import Headers, Message, Node, StreamChunk, create

What this module adds to icefloe's own API (which already shares the
``emit_chunk`` keywords and the ``Message`` / ``StreamChunk`` field names):

* :class:`Node` wraps the function: a returned value is emitted to the
  successors (icefloe nodes return nothing), and the context it gets is a
  :class:`PenguiflowContext`.
* penguiflow lets a node emit any value, not only a ``Message`` (a ``WM``, a
  ``FinalAnswer``...). Such a value travels as the ``payload`` of a
  ``Message`` with the parent's headers and trace, marked in its ``meta``
  under :data:`BARE_KEY`; the next compat node receives the bare value again,
  as it would in penguiflow, and ``flow.fetch`` returns the carrying message.

Not provided: penguiflow's ``emit_nowait``/``fetch`` on the context, playbooks,
its middlewares and registry-based validation, and ``Message.ts``; chunks and
messages are icefloe's msgspec Structs, not pydantic models (attribute access
and keyword construction are the same; ``model_dump()`` is not).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from icefloe.core.messages import Headers, Message, StreamChunk
from icefloe.runtime.context import Context
from icefloe.runtime.flow import create
from icefloe.runtime.node import Node as IcefloeNode
from icefloe.runtime.node import NodePolicy

__all__ = [
    "BARE_KEY",
    "Headers",
    "Message",
    "Node",
    "NodePolicy",
    "PenguiflowContext",
    "StreamChunk",
    "create",
]

#: ``Message.meta`` key marking a message that carries a bare penguiflow value
BARE_KEY: Final = "icefloe.compat.penguiflow.bare"

PenguiflowFunc = Callable[[Any, "PenguiflowContext"], Awaitable[Any]]
Targets = IcefloeNode | Sequence[IcefloeNode] | None


class PenguiflowContext:
    """The ``ctx`` a penguiflow node function gets: ``emit_chunk`` and ``emit``."""

    __slots__ = ("_ctx", "_parent")

    def __init__(self, ctx: Context, parent: Message) -> None:
        self._ctx = ctx
        self._parent = parent

    async def emit_chunk(
        self,
        *,
        parent: Message,
        text: str,
        stream_id: str | None = None,
        seq: int | None = None,
        done: bool = False,
        meta: dict[str, Any] | None = None,
        to: Targets = None,
    ) -> StreamChunk:
        """Emit one chunk of ``stream_id`` (default: the parent's trace id); see icefloe's."""
        return await self._ctx.emit_chunk(
            parent=parent,
            text=text,
            stream_id=stream_id,
            seq=seq,
            done=done,
            meta=dict(meta) if meta else None,
            to=to,
        )

    async def emit(self, msg: Any, to: Targets = None) -> None:
        """Send ``msg`` (a ``Message``, or any value as penguiflow allows) on."""
        await self._ctx.emit(carry(msg, self._parent), to)


def carry(value: Any, parent: Message) -> Message:
    """``value`` as a message: itself if it is one, else a carrier marked :data:`BARE_KEY`."""
    if isinstance(value, Message):
        return value
    return Message(
        value,
        parent.headers,
        trace_id=parent.trace_id,
        deadline_s=parent.deadline_s,
        meta={**parent.meta, BARE_KEY: True},
    )


def unwrap(msg: Message) -> Any:
    """What a penguiflow node receives for ``msg``: a carried bare value, or the message."""
    return msg.payload if msg.meta.get(BARE_KEY) else msg


class Node(IcefloeNode):
    """A penguiflow-style node function as an icefloe node.

    ``Node(func, name=None, policy=None)`` as in penguiflow; ``policy`` is
    icefloe's :class:`~icefloe.runtime.node.NodePolicy` (timeout, retries).
    """

    def __init__(
        self, func: PenguiflowFunc, name: str | None = None, policy: NodePolicy | None = None
    ) -> None:
        self.penguiflow_func = func

        async def run(msg: Message, ctx: Context) -> None:
            out = await func(unwrap(msg), PenguiflowContext(ctx, msg))
            if out is not None:
                await ctx.emit(carry(out, msg))

        super().__init__(run, name or getattr(func, "__name__", None), policy)
