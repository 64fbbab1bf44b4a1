"""What the adapters put in a chunk: the ``data`` parts, the done chunk's ``meta``, the reply.

A text delta is a chunk's ``text`` (``data`` is ``None``). Everything else a
model streams travels as a chunk with ``text=""`` and one of these ``data``
dicts, shaped so that they map one to one onto the Vercel AI SDK's UI message
parts (docs/llm.md has the table):

========================  =====================================================
``type``                  other keys
========================  =====================================================
``reasoning``             ``id`` (one per reasoning block), ``delta`` (text)
``tool-input-delta``      ``id`` (the provider's call id), ``name``, ``delta``
                          (a piece of the arguments' JSON text)
``tool-input-available``  ``id``, ``name``, ``input`` (the parsed arguments)
``tool-input-error``      ``id``, ``name``, ``input`` (the raw text), ``error``
========================  =====================================================

A node that runs the tools itself (a tool loop, ``done=False``) adds, with the
helpers below, ``tool-output-available`` (``id``, ``output``),
``tool-output-error`` (``id``, ``error``) and ``step`` (a step boundary before
the model's next call). The type names are those of
:mod:`icefloe.core.uimessage`, which maps them to the AI SDK's parts behind
``POST /v1/chat`` (docs/ai-sdk.md).

The done chunk's ``meta`` has ``provider``, ``model``, ``finish_reason`` (one
of :data:`FINISH_REASONS`), ``provider_finish_reason`` (the provider's own
word) and ``usage`` (token counts, see :func:`usage_counts`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

# One vocabulary: the edge's AI SDK mapper reads exactly these types.
from icefloe.core.uimessage import (
    REASONING,
    STEP,
    TOOL_INPUT_AVAILABLE,
    TOOL_INPUT_DELTA,
    TOOL_INPUT_ERROR,
    TOOL_OUTPUT_AVAILABLE,
    TOOL_OUTPUT_ERROR,
)

__all__ = [
    "FINISH_REASONS",
    "REASONING",
    "STEP",
    "TOOL_INPUT_AVAILABLE",
    "TOOL_INPUT_DELTA",
    "TOOL_INPUT_ERROR",
    "TOOL_OUTPUT_AVAILABLE",
    "TOOL_OUTPUT_ERROR",
    "Reply",
    "ToolCall",
    "done_meta",
    "parse_arguments",
    "reasoning_part",
    "step_part",
    "tool_delta_part",
    "tool_end_part",
    "tool_output_error_part",
    "tool_output_part",
    "usage_counts",
]


#: the normalised finish reasons (the AI SDK's words)
FINISH_REASONS: Final = ("stop", "length", "tool-calls", "content-filter", "other")


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call the model made."""

    #: the provider's call id (what the tool result must name)
    id: str
    name: str
    #: the arguments as the model wrote them (JSON text)
    arguments: str
    #: the parsed arguments; ``None`` when ``arguments`` is not valid JSON
    input: Any


@dataclass(frozen=True, slots=True)
class Reply:
    """What an adapter returns once the provider's stream finished."""

    text: str
    reasoning: str
    tool_calls: tuple[ToolCall, ...]
    #: one of :data:`FINISH_REASONS`
    finish_reason: str
    #: the provider's own finish word (``"end_turn"``, ``"tool_calls"``...)
    provider_finish_reason: str | None
    usage: Mapping[str, int]
    model: str | None
    #: the provider's id of the response or message
    id: str | None
    #: Anthropic thinking signatures, in block order (needed to send thinking back)
    signatures: tuple[str, ...] = ()


def reasoning_part(block: str, delta: str) -> dict[str, Any]:
    return {"type": REASONING, "id": block, "delta": delta}


def tool_delta_part(call_id: str, name: str, delta: str) -> dict[str, Any]:
    return {"type": TOOL_INPUT_DELTA, "id": call_id, "name": name, "delta": delta}


def tool_end_part(call: ToolCall) -> dict[str, Any]:
    if call.input is None:
        return {
            "type": TOOL_INPUT_ERROR,
            "id": call.id,
            "name": call.name,
            "input": call.arguments,
            "error": "the tool arguments are not valid JSON",
        }
    return {"type": TOOL_INPUT_AVAILABLE, "id": call.id, "name": call.name, "input": call.input}


def tool_output_part(call_id: str, output: Any) -> dict[str, Any]:
    """A tool's result, for a node that runs the tool itself (a tool loop)."""
    return {"type": TOOL_OUTPUT_AVAILABLE, "id": call_id, "output": output}


def tool_output_error_part(call_id: str, error: str) -> dict[str, Any]:
    """A tool that failed, for a node that runs the tool itself."""
    return {"type": TOOL_OUTPUT_ERROR, "id": call_id, "error": error}


def step_part() -> dict[str, Any]:
    """A step boundary: between the tool results and the model's next call."""
    return {"type": STEP}


def parse_arguments(text: str) -> Any:
    """The parsed arguments of a tool call (``{}`` for none), or ``None`` if not JSON."""
    if not text.strip():
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return None


def usage_counts(**counts: int | None) -> dict[str, int]:
    """The usage dict of the done chunk's ``meta``: only the counts the provider gave.

    Keys: ``input_tokens``, ``output_tokens``, ``total_tokens`` (their sum when
    the provider does not say), and when known ``reasoning_tokens``,
    ``cached_input_tokens``, ``cache_creation_input_tokens``.
    """
    usage = {key: int(value) for key, value in counts.items() if isinstance(value, int)}
    if "total_tokens" not in usage and {"input_tokens", "output_tokens"} <= usage.keys():
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
    return usage


def done_meta(provider: str, reply: Reply) -> dict[str, Any]:
    return {
        "provider": provider,
        "model": reply.model,
        "finish_reason": reply.finish_reason,
        "provider_finish_reason": reply.provider_finish_reason,
        "usage": dict(reply.usage),
    }
