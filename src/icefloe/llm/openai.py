"""OpenAI Chat Completions and Responses streams as chunks (the ``openai`` extra).

Works with any OpenAI-compatible server (vLLM, Ollama, OpenRouter...) through
the official SDK's ``base_url``::

    client = openai.AsyncOpenAI(base_url=..., api_key=...)

    async def llm(msg, ctx):
        await stream_chat(client, ctx, parent=msg, model="gpt-4o-mini",
                          messages=[{"role": "user", "content": msg.payload}])

:func:`stream_chat` and :func:`stream_responses` emit the text deltas as
chunks, reasoning and tool calls as chunk ``data`` (:mod:`icefloe.llm.parts`),
and by default the done chunk with usage and finish reason in its ``meta``;
they return the :class:`~icefloe.llm.parts.Reply`. Provider failures end the
stream with the codes of :mod:`icefloe.llm.errors`.

Only the first choice (``n=1``) of a Chat Completions stream is relayed.
"""

from __future__ import annotations

from typing import Any, Final

from icefloe.core.messages import Message
from icefloe.llm import errors
from icefloe.llm.parts import Reply, usage_counts
from icefloe.llm.relay import DEFAULT_MAX_REPLY_CHARS, Relay, closing
from icefloe.runtime.context import Context

try:
    import openai
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "icefloe.llm.openai needs the openai SDK: pip install 'icefloe[openai]'"
    ) from exc

__all__ = ["stream_chat", "stream_responses"]

PROVIDER: Final = "openai"

#: Chat Completions finish reasons, normalised (anything else: "other")
_CHAT_FINISH: Final = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
    "content_filter": "content-filter",
}
#: Responses ``incomplete_details.reason``, normalised
_INCOMPLETE: Final = {"max_output_tokens": "length", "content_filter": "content-filter"}
#: delta fields OpenAI-compatible servers use for reasoning text (vLLM,
#: DeepSeek: ``reasoning_content``; Ollama, OpenRouter: ``reasoning``)
_REASONING_FIELDS: Final = ("reasoning_content", "reasoning")
_CHAT_REASONING_BLOCK: Final = "reasoning-0"


def _error_kind(body: object) -> str | None:
    if isinstance(body, dict):
        kind = body.get("code") or body.get("type")
        return kind if isinstance(kind, str) else None
    return None


async def stream_chat(
    client: openai.AsyncOpenAI,
    ctx: Context,
    *,
    parent: Message,
    stream_id: str | None = None,
    done: bool = True,
    max_reply_chars: int = DEFAULT_MAX_REPLY_CHARS,
    **request: Any,
) -> Reply:
    """Stream ``client.chat.completions.create(**request)`` into the stream.

    ``stream_id`` defaults to ``parent.trace_id`` (as in ``ctx.emit_chunk``);
    ``done=False`` leaves the stream open for more (a tool loop): the usage and
    finish reason are then only in the returned :class:`Reply`. Usage is asked
    for (``stream_options={"include_usage": True}``) unless ``request`` sets
    ``stream_options`` itself.

    :raises StreamError: the provider failed (the stream ends with its code).
    """
    relay = Relay(
        ctx, parent, provider=PROVIDER, stream_id=stream_id, max_reply_chars=max_reply_chars
    )
    request.setdefault("stream_options", {"include_usage": True})
    finish: str | None = None
    usage: dict[str, int] = {}
    with errors.sdk_errors(PROVIDER, openai, _error_kind):
        stream = await client.chat.completions.create(stream=True, **request)
        async with closing(stream):
            async for chunk in stream:
                relay.model = relay.model or chunk.model
                relay.id = relay.id or chunk.id
                if chunk.usage is not None:
                    usage = _chat_usage(chunk.usage)
                for choice in chunk.choices:
                    if choice.index == 0:
                        await _chat_delta(relay, choice.delta)
                        finish = choice.finish_reason or finish
    if finish is None:
        raise errors.truncated(PROVIDER)
    return await relay.finish(
        finish_reason=_CHAT_FINISH.get(finish, "other"),
        provider_finish_reason=finish,
        usage=usage,
        done=done,
    )


async def _chat_delta(relay: Relay, delta: Any) -> None:
    # ``delta`` is the SDK's ChoiceDelta; compatible servers add fields to it.
    extra = delta.model_extra or {}
    for field in _REASONING_FIELDS:
        thought = extra.get(field)
        if isinstance(thought, str):
            await relay.reasoning(_CHAT_REASONING_BLOCK, thought)
            break
    if delta.content:
        await relay.text(delta.content)
    for call in delta.tool_calls or ():
        function = call.function
        if call.id and not relay.tool_open(call.index):
            # A call's first delta names it; some servers repeat the id later.
            relay.tool_start(call.index, call.id, (function and function.name) or "")
        if function is not None and function.arguments:
            await relay.tool_delta(call.index, function.arguments)


def _chat_usage(usage: Any) -> dict[str, int]:
    completion = usage.completion_tokens_details
    prompt = usage.prompt_tokens_details
    return usage_counts(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        reasoning_tokens=completion.reasoning_tokens if completion is not None else None,
        cached_input_tokens=prompt.cached_tokens if prompt is not None else None,
    )


async def stream_responses(
    client: openai.AsyncOpenAI,
    ctx: Context,
    *,
    parent: Message,
    stream_id: str | None = None,
    done: bool = True,
    max_reply_chars: int = DEFAULT_MAX_REPLY_CHARS,
    **request: Any,
) -> Reply:
    """Stream ``client.responses.create(**request)`` into the stream.

    The same rules as :func:`stream_chat`. Reasoning is relayed from
    ``response.reasoning_summary_text.delta`` and ``response.reasoning_text.delta``
    events, one reasoning block per output item.

    :raises StreamError: the provider failed (the stream ends with its code).
    """
    relay = Relay(
        ctx, parent, provider=PROVIDER, stream_id=stream_id, max_reply_chars=max_reply_chars
    )
    ended: tuple[str, str, dict[str, int]] | None = None
    with errors.sdk_errors(PROVIDER, openai, _error_kind):
        stream = await client.responses.create(stream=True, **request)
        async with closing(stream):
            async for event in stream:
                ended = await _responses_event(relay, event) or ended
                if ended is not None:
                    break
    if ended is None:
        raise errors.truncated(PROVIDER)
    finish, provider_finish, usage = ended
    return await relay.finish(
        finish_reason=finish, provider_finish_reason=provider_finish, usage=usage, done=done
    )


async def _responses_event(relay: Relay, event: Any) -> tuple[str, str, dict[str, int]] | None:
    """Relay one Responses event; returns (finish, provider finish, usage) at the end.

    The event union is large and compatible servers vary: dispatch is on ``event.type``.
    """
    kind = event.type
    if kind == "response.output_text.delta":
        await relay.text(event.delta)
    elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
        await relay.reasoning(event.item_id, event.delta)
    elif kind == "response.output_item.added" and event.item.type == "function_call":
        relay.tool_start(event.output_index, event.item.call_id, event.item.name)
    elif kind == "response.function_call_arguments.delta":
        await relay.tool_delta(event.output_index, event.delta)
    elif kind == "response.output_item.done" and event.item.type == "function_call":
        await relay.tool_end(event.output_index, event.item.arguments)
    elif kind == "response.created":
        relay.model = event.response.model
        relay.id = event.response.id
    elif kind in ("response.completed", "response.incomplete"):
        return _responses_end(relay, event.response)
    elif kind == "response.failed":
        error = event.response.error
        raise errors.error_event(
            PROVIDER, error.code if error is not None else None, error and error.message
        )
    elif kind == "error":
        raise errors.error_event(PROVIDER, event.code, event.message)
    return None


def _responses_end(relay: Relay, response: Any) -> tuple[str, str, dict[str, int]]:
    relay.model = response.model or relay.model
    relay.id = response.id or relay.id
    usage = response.usage
    counts: dict[str, int] = {}
    if usage is not None:
        details = usage.output_tokens_details
        cached = usage.input_tokens_details
        counts = usage_counts(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
            reasoning_tokens=details.reasoning_tokens if details is not None else None,
            cached_input_tokens=cached.cached_tokens if cached is not None else None,
        )
    status = response.status or "completed"
    if status == "incomplete":
        details = response.incomplete_details
        reason = details.reason if details is not None else None
        return _INCOMPLETE.get(reason or "", "other"), reason or status, counts
    return ("tool-calls" if relay.made_tool_calls else "stop"), status, counts
