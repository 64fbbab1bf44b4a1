"""The provider-neutral half of an adapter: deltas in, chunks out, the reply kept.

A provider module decodes its SDK's events and calls :class:`Relay` once per
delta; every call awaits ``ctx.emit_chunk``, so while the stream's slowest
reader is behind, the adapter does not ask the SDK for the next event, the SDK
does not read its socket, and TCP flow control stops the provider (docs/llm.md,
"Backpressure").

The reply is also kept for the adapter's return value (a node that calls tools
needs the calls and the text it answers). That copy is bounded by
``max_reply_chars``: text, reasoning and tool arguments together; past it the
stream fails with ``too_large``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final, Protocol

from icefloe.core.messages import Message
from icefloe.exceptions import ErrorCode, StreamError
from icefloe.llm.parts import (
    Reply,
    ToolCall,
    done_meta,
    parse_arguments,
    reasoning_part,
    tool_delta_part,
    tool_end_part,
)
from icefloe.runtime.context import Context

__all__ = ["DEFAULT_MAX_REPLY_CHARS", "Closable", "Relay", "closing"]

#: the default bound of the reply an adapter keeps (characters)
DEFAULT_MAX_REPLY_CHARS: Final = 1_000_000


class Closable(Protocol):
    async def close(self) -> None: ...


@asynccontextmanager
async def closing(stream: Closable) -> AsyncIterator[None]:
    """Close an SDK stream however the block ends: this closes its HTTP response.

    Cancelled mid-stream (the reader left, ``flow.cancel``), the SDK's response
    is closed here, before the cancellation goes on: an unfinished HTTP/1.1
    response is not reusable, so its connection is closed and the provider
    sees the disconnect.
    """
    try:
        yield
    finally:
        await stream.close()


class _Call:
    __slots__ = ("arguments", "id", "name")

    def __init__(self, call_id: str, name: str) -> None:
        self.id = call_id
        self.name = name
        self.arguments: list[str] = []


class Relay:
    """One adapter call's emitting side."""

    def __init__(
        self,
        ctx: Context,
        parent: Message,
        *,
        provider: str,
        stream_id: str | None,
        max_reply_chars: int,
    ) -> None:
        if max_reply_chars < 1:
            raise ValueError(f"max_reply_chars must be >= 1, got {max_reply_chars!r}")
        self._ctx = ctx
        self._parent = parent
        self._sid = stream_id
        self.provider = provider
        self._room = max_reply_chars
        self._max = max_reply_chars
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._open: dict[object, _Call] = {}
        self._calls: list[ToolCall] = []
        self.signatures: list[str] = []
        self.model: str | None = None
        self.id: str | None = None

    def _keep(self, size: int) -> None:
        self._room -= size
        if self._room < 0:
            raise StreamError(
                ErrorCode.TOO_LARGE,
                f"the {self.provider} reply passed max_reply_chars={self._max}",
            )

    async def _emit(self, text: str, data: Any = None) -> None:
        await self._ctx.emit_chunk(parent=self._parent, stream_id=self._sid, text=text, data=data)

    async def text(self, delta: str) -> None:
        if delta:
            self._keep(len(delta))
            self._text.append(delta)
            await self._emit(delta)

    async def reasoning(self, block: str, delta: str) -> None:
        if delta:
            self._keep(len(delta))
            self._reasoning.append(delta)
            await self._emit("", reasoning_part(block, delta))

    def signature(self, signature: str) -> None:
        self._keep(len(signature))
        self.signatures.append(signature)

    def tool_open(self, key: object) -> bool:
        return key in self._open

    def tool_start(self, key: object, call_id: str, name: str) -> None:
        self._keep(1 + len(call_id) + len(name))
        self._open[key] = _Call(call_id, name)

    async def tool_delta(self, key: object, delta: str) -> None:
        call = self._open.get(key)
        if call is None or not delta:
            return  # arguments of a call that never started: nothing to name them by
        self._keep(len(delta))
        call.arguments.append(delta)
        await self._emit("", tool_delta_part(call.id, call.name, delta))

    async def tool_end(self, key: object, arguments: str | None = None) -> None:
        """End a call; ``arguments``: the provider's full text, when it sends one."""
        call = self._open.pop(key, None)
        if call is None:
            return
        text = "".join(call.arguments)
        if arguments is not None and not text:
            self._keep(len(arguments))
            text = arguments
        done = ToolCall(call.id, call.name, text, parse_arguments(text))
        self._calls.append(done)
        await self._emit("", tool_end_part(done))

    async def tools_end(self) -> None:
        for key in list(self._open):
            await self.tool_end(key)

    @property
    def made_tool_calls(self) -> bool:
        return bool(self._calls or self._open)

    async def finish(
        self,
        *,
        finish_reason: str,
        provider_finish_reason: str | None,
        usage: dict[str, int],
        done: bool,
    ) -> Reply:
        await self.tools_end()
        reply = Reply(
            text="".join(self._text),
            reasoning="".join(self._reasoning),
            tool_calls=tuple(self._calls),
            finish_reason=finish_reason,
            provider_finish_reason=provider_finish_reason,
            usage=usage,
            model=self.model,
            id=self.id,
            signatures=tuple(self.signatures),
        )
        if done:
            await self._ctx.emit_chunk(
                parent=self._parent,
                stream_id=self._sid,
                text="",
                done=True,
                meta=done_meta(self.provider, reply),
            )
        return reply
