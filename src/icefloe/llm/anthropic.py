"""Anthropic Messages streams as chunks (the ``anthropic`` extra).

::

    client = anthropic.AsyncAnthropic(api_key=...)

    async def llm(msg, ctx):
        await stream_messages(client, ctx, parent=msg, model="claude-sonnet-4-5",
                              max_tokens=1024,
                              messages=[{"role": "user", "content": msg.payload}])

:func:`stream_messages` emits text deltas as chunks, thinking and tool use as
chunk ``data`` (:mod:`icefloe.llm.parts`; one reasoning block per thinking
content block, ids ``reasoning-<index>``), and by default the done chunk with
usage and stop reason in its ``meta``; it returns the
:class:`~icefloe.llm.parts.Reply` (with the thinking signatures). Provider
failures, including ``error`` events mid-stream such as ``overloaded_error``,
end the stream with the codes of :mod:`icefloe.llm.errors`.
"""

from __future__ import annotations

from typing import Any, Final

from icefloe.core.messages import Message
from icefloe.llm import errors
from icefloe.llm.parts import Reply, usage_counts
from icefloe.llm.relay import DEFAULT_MAX_REPLY_CHARS, Relay, closing
from icefloe.runtime.context import Context

try:
    import anthropic
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "icefloe.llm.anthropic needs the anthropic SDK: pip install 'icefloe[anthropic]'"
    ) from exc

__all__ = ["stream_messages"]

PROVIDER: Final = "anthropic"

#: stop reasons, normalised (anything else: "other")
_STOP: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool-calls",
    "refusal": "content-filter",
}


def _error_kind(body: object) -> str | None:
    if isinstance(body, dict):
        error = body.get("error")
        kind = error.get("type") if isinstance(error, dict) else None
        return kind if isinstance(kind, str) else None
    return None


class _Progress:
    """What the message's events said so far, besides its content."""

    __slots__ = ("input", "stop", "stopped", "usage")

    def __init__(self) -> None:
        self.input: dict[str, int | None] = {}
        self.usage: dict[str, int] = {}
        self.stop: str | None = None
        self.stopped = False


async def stream_messages(
    client: anthropic.AsyncAnthropic,
    ctx: Context,
    *,
    parent: Message,
    stream_id: str | None = None,
    done: bool = True,
    max_reply_chars: int = DEFAULT_MAX_REPLY_CHARS,
    **request: Any,
) -> Reply:
    """Stream ``client.messages.create(**request)`` into the stream.

    ``stream_id`` defaults to ``parent.trace_id`` (as in ``ctx.emit_chunk``);
    ``done=False`` leaves the stream open for more (a tool loop): the usage and
    stop reason are then only in the returned :class:`Reply`.

    :raises StreamError: the provider failed (the stream ends with its code).
    """
    relay = Relay(
        ctx, parent, provider=PROVIDER, stream_id=stream_id, max_reply_chars=max_reply_chars
    )
    progress = _Progress()
    with errors.sdk_errors(PROVIDER, anthropic, _error_kind):
        stream = await client.messages.create(stream=True, **request)
        async with closing(stream):
            async for event in stream:
                await _on_event(relay, progress, event)
                if progress.stopped:
                    break
    if not progress.stopped:
        raise errors.truncated(PROVIDER)
    return await relay.finish(
        finish_reason=_STOP.get(progress.stop or "", "other"),
        provider_finish_reason=progress.stop,
        usage=progress.usage,
        done=done,
    )


async def _on_event(relay: Relay, progress: _Progress, event: Any) -> None:
    # The raw event union is dispatched on ``event.type``.
    kind = event.type
    if kind == "content_block_delta":
        await _on_delta(relay, event.index, event.delta)
    elif kind == "content_block_start":
        block = event.content_block
        if block.type == "tool_use":
            relay.tool_start(event.index, block.id, block.name)
        elif block.type == "text":
            await relay.text(block.text)
        elif block.type == "thinking":
            await relay.reasoning(f"reasoning-{event.index}", block.thinking)
    elif kind == "content_block_stop":
        await relay.tool_end(event.index)
    elif kind == "message_start":
        message = event.message
        relay.model = message.model
        relay.id = message.id
        usage = message.usage
        progress.input = {
            "input_tokens": usage.input_tokens,
            "cached_input_tokens": usage.cache_read_input_tokens,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        }
        progress.usage = usage_counts(**progress.input, output_tokens=usage.output_tokens)
    elif kind == "message_delta":
        progress.stop = event.delta.stop_reason or progress.stop
        usage = event.usage
        counts = dict(progress.input)
        if usage.input_tokens is not None:
            counts["input_tokens"] = usage.input_tokens
        progress.usage = usage_counts(**counts, output_tokens=usage.output_tokens)
    elif kind == "message_stop":
        progress.stopped = True


async def _on_delta(relay: Relay, index: int, delta: Any) -> None:
    kind = delta.type
    if kind == "text_delta":
        await relay.text(delta.text)
    elif kind == "input_json_delta":
        await relay.tool_delta(index, delta.partial_json)
    elif kind == "thinking_delta":
        await relay.reasoning(f"reasoning-{index}", delta.thinking)
    elif kind == "signature_delta":
        relay.signature(delta.signature)
