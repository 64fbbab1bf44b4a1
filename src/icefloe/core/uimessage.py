"""Stream chunks as AI SDK UI message stream parts (sans-I/O, pure).

The Vercel AI SDK's ``useChat`` reads a reply as a sequence of JSON parts
(``start``, ``text-delta``, ``finish``...), each an SSE ``data:`` line, the
whole closed by ``data: [DONE]``. :class:`UiMessageMapper` turns one stream's
chunks, in seq order, into those parts; docs/ai-sdk.md is the contract:

* the first parts are ``start`` (``messageId`` = the stream id) and ``start-step``;
* a chunk's ``data``, when it is an object with a known ``type`` (the one
  vocabulary the LLM adapters emit, :data:`DATA_TYPES`), maps first:
  ``reasoning`` (``id``, ``delta``) is a ``reasoning-delta``;
  ``tool-input-delta`` / ``tool-input-available`` / ``tool-input-error``
  (``id``, ``name``, then ``delta`` / ``input`` / ``input`` and ``error``) are
  the tool parts of the same names, after a ``tool-input-start`` for a new
  call; ``tool-output-available`` (``id``, ``output``) and
  ``tool-output-error`` (``id``, ``error``) answer a call whose input is
  complete; ``step`` is ``finish-step`` then ``start-step``. Anything else in
  ``data`` is ignored, as is a part that breaks the grammar (a delta of a
  call whose input is complete, an output of an unknown call...);
* then the chunk's ``text`` is a ``text-delta`` of the open text block
  (``text-start`` opens one when none is);
* the done chunk closes the open blocks and the step, then ``finish``, with
  ``finishReason`` from its ``meta["finish_reason"]`` (when it is one the
  SDK knows) and ``messageMetadata`` = its ``meta`` (when not empty);
* an abnormal end closes the open blocks, then ``abort`` for ``cancelled``,
  else ``error`` (``errorText`` = ``"<code>: <message>"``) and ``finish``
  with ``finishReason: "error"``.

The mapping depends only on the chunks, so a reader that replays a stream
from seq 0 (a resume) gets exactly the parts the first reader got.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

from icefloe.core.wire_errors import ErrorCode

__all__ = [
    "DATA_TYPES",
    "DONE_EVENT",
    "FINISH_REASONS",
    "REASONING",
    "STEP",
    "TOOL_INPUT_AVAILABLE",
    "TOOL_INPUT_DELTA",
    "TOOL_INPUT_ERROR",
    "TOOL_OUTPUT_AVAILABLE",
    "TOOL_OUTPUT_ERROR",
    "UI_MESSAGE_STREAM_HEADER",
    "UiMessageMapper",
    "encode_parts",
]

#: the response header that marks a UI message stream, and its value
UI_MESSAGE_STREAM_HEADER: Final = ("x-vercel-ai-ui-message-stream", "v1")
#: the SSE event that ends a UI message stream
DONE_EVENT: Final = b"data: [DONE]\n\n"
#: the ``finishReason`` values the AI SDK accepts on ``finish``
FINISH_REASONS: Final = frozenset(
    {"stop", "length", "content-filter", "tool-calls", "error", "other"}
)

# The ``type`` of a chunk's ``data``: the vocabulary the LLM adapters emit
# (icefloe.llm.parts) and any node may use.
REASONING: Final = "reasoning"
TOOL_INPUT_DELTA: Final = "tool-input-delta"
TOOL_INPUT_AVAILABLE: Final = "tool-input-available"
TOOL_INPUT_ERROR: Final = "tool-input-error"
TOOL_OUTPUT_AVAILABLE: Final = "tool-output-available"
TOOL_OUTPUT_ERROR: Final = "tool-output-error"
STEP: Final = "step"
#: every ``data["type"]`` the mapper reads
DATA_TYPES: Final = frozenset(
    {
        REASONING,
        TOOL_INPUT_DELTA,
        TOOL_INPUT_AVAILABLE,
        TOOL_INPUT_ERROR,
        TOOL_OUTPUT_AVAILABLE,
        TOOL_OUTPUT_ERROR,
        STEP,
    }
)

#: a tool call's state: its input still streaming, complete, or answered
_STREAMING, _INPUT, _ANSWERED = "streaming", "input", "answered"

_encode = msgspec.json.Encoder().encode

Part = dict[str, Any]


def encode_parts(parts: list[Part]) -> bytes:
    """Each part as one SSE ``data:`` event (JSON escapes every newline, so one line)."""
    return b"".join(b"data: %s\n\n" % _encode(p) for p in parts)


class _Call:
    """A tool call the message announced: its tool and how far it got."""

    __slots__ = ("name", "state")

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = _STREAMING


class UiMessageMapper:
    """One reader's mapping of one stream (the message ``message_id``) to parts.

    Feed it the stream's chunks in seq order from seq 0 (:meth:`chunk`), and
    :meth:`end` for an abnormal end; :meth:`begin` gives the opening parts.
    After ``done`` or :meth:`end` it is :attr:`closed` and maps nothing more.
    """

    __slots__ = ("_block", "_calls", "_opened", "closed", "message_id")

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.closed = False
        #: the open text / reasoning block: (kind, its part id, the node's block id)
        self._block: tuple[str, str, str] | None = None
        #: tool call id -> the call, for every call announced so far
        self._calls: dict[str, _Call] = {}
        #: blocks opened so far, numbering their ids (unique within the message)
        self._opened = 0

    def begin(self) -> list[Part]:
        """The opening parts: ``start`` with the message id, then ``start-step``."""
        return [{"type": "start", "messageId": self.message_id}, {"type": "start-step"}]

    def chunk(
        self, text: str, data: Any = None, meta: Mapping[str, Any] | None = None, *, done: bool
    ) -> list[Part]:
        """The parts of one chunk (with the closing ones for the done chunk)."""
        if self.closed:
            return []
        parts: list[Part] = []
        if isinstance(data, dict):
            self._data(parts, data)
        if isinstance(text, str) and text:
            self._delta(parts, "text", "", text)
        if done:
            self._close_block(parts)
            parts.append({"type": "finish-step"})
            finish: Part = {"type": "finish"}
            reason = meta.get("finish_reason") if meta else None
            if reason in FINISH_REASONS:
                finish["finishReason"] = reason
            if meta:
                finish["messageMetadata"] = dict(meta)
            parts.append(finish)
            self.closed = True
        return parts

    def end(self, code: ErrorCode, message: str) -> list[Part]:
        """The closing parts of a stream that ended with ``code`` (no done chunk)."""
        if self.closed:
            return []
        self.closed = True
        parts: list[Part] = []
        self._close_block(parts)
        if code is ErrorCode.CANCELLED:
            parts.append({"type": "abort", "reason": message})
        else:
            parts.append({"type": "error", "errorText": f"{code.value}: {message}"})
            parts.append({"type": "finish", "finishReason": "error"})
        return parts

    def _data(self, parts: list[Part], data: Mapping[str, Any]) -> None:
        kind = data.get("type")
        if kind == STEP:
            self._close_block(parts)
            parts += [{"type": "finish-step"}, {"type": "start-step"}]
        elif kind == REASONING:
            block, delta = data.get("id", ""), data.get("delta")
            if isinstance(block, str) and isinstance(delta, str) and delta:
                self._delta(parts, "reasoning", block, delta)
        elif kind in (TOOL_INPUT_DELTA, TOOL_INPUT_AVAILABLE, TOOL_INPUT_ERROR):
            self._tool_input(parts, kind, data)
        elif kind in (TOOL_OUTPUT_AVAILABLE, TOOL_OUTPUT_ERROR):
            self._tool_output(parts, kind, data)

    def _delta(self, parts: list[Part], kind: str, source: str, delta: str) -> None:
        """A delta of the open ``kind`` block from the node's block ``source``.

        Another kind, or another reasoning block, closes the open block and opens one.
        """
        block = self._block
        if block is None or block[0] != kind or block[2] != source:
            self._close_block(parts)
            self._opened += 1
            block = self._block = (kind, f"{kind}-{self._opened}", source)
            parts.append({"type": f"{kind}-start", "id": block[1]})
        parts.append({"type": f"{kind}-delta", "id": block[1], "delta": delta})

    def _close_block(self, parts: list[Part]) -> None:
        if self._block is not None:
            kind, block, _ = self._block
            parts.append({"type": f"{kind}-end", "id": block})
            self._block = None

    def _tool_input(self, parts: list[Part], kind: str, data: Mapping[str, Any]) -> None:
        call_id, name = data.get("id"), data.get("name")
        if not isinstance(call_id, str) or not call_id:
            return
        out: list[Part] = []
        call = self._calls.get(call_id)
        if call is None:
            if not isinstance(name, str) or not name:
                return  # the first mention of a call must name its tool
            call = self._calls[call_id] = _Call(name)
            out.append({"type": "tool-input-start", "toolCallId": call_id, "toolName": name})
        if call.state != _STREAMING:
            return  # its input is complete: more of it would contradict the message
        if kind == TOOL_INPUT_DELTA:
            delta = data.get("delta")
            if isinstance(delta, str) and delta:
                out.append(
                    {"type": "tool-input-delta", "toolCallId": call_id, "inputTextDelta": delta}
                )
        elif "input" in data and (
            kind == TOOL_INPUT_AVAILABLE or isinstance(data.get("error"), str)
        ):
            # The AI SDK shows a tool-input-error as the call's failed output: nothing answers it.
            call.state = _INPUT if kind == TOOL_INPUT_AVAILABLE else _ANSWERED
            part: Part = {
                "type": kind,
                "toolCallId": call_id,
                "toolName": call.name,
                "input": data["input"],
            }
            if kind == TOOL_INPUT_ERROR:
                part["errorText"] = data["error"]
            out.append(part)
        if out:
            # A tool part ends the text or reasoning before it: the message
            # shows them in the order the node streamed them.
            self._close_block(parts)
            parts += out

    def _tool_output(self, parts: list[Part], kind: str, data: Mapping[str, Any]) -> None:
        call_id = data.get("id")
        if not isinstance(call_id, str):
            return
        call = self._calls.get(call_id)
        if call is None or call.state != _INPUT:
            return  # an answer to a call whose input is not complete would be an orphan
        if kind == TOOL_OUTPUT_AVAILABLE and "output" in data:
            part: Part = {"type": kind, "toolCallId": call_id, "output": data["output"]}
        elif kind == TOOL_OUTPUT_ERROR and isinstance(data.get("error"), str):
            part = {"type": kind, "toolCallId": call_id, "errorText": data["error"]}
        else:
            return
        call.state = _ANSWERED
        self._close_block(parts)
        parts.append(part)
