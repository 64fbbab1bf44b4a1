"""Stream chunks as AI SDK UI message stream parts (sans-I/O, pure).

The Vercel AI SDK's ``useChat`` reads a reply as a sequence of JSON parts
(``start``, ``text-delta``, ``finish``...), each an SSE ``data:`` line, the
whole closed by ``data: [DONE]``. :class:`UiMessageMapper` turns one stream's
chunks, in seq order, into those parts; docs/ai-sdk.md is the contract:

* the first parts are ``start`` (``messageId`` = the stream id) and ``start-step``;
* a chunk's ``text`` is a ``text-delta`` of the open text block (``text-start``
  opens one when none is);
* a chunk's ``data``, when it is an object, may carry ``reasoning`` (a string:
  a ``reasoning-delta``), ``tool_call`` and ``tool_result`` (an object or a
  list of them: ``tool-input-start`` / ``tool-input-delta`` /
  ``tool-input-available`` and ``tool-output-available``) and ``step: true``
  (``finish-step`` then ``start-step``); anything else in it is ignored;
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
    "DONE_EVENT",
    "FINISH_REASONS",
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

_encode = msgspec.json.Encoder().encode

Part = dict[str, Any]


def encode_parts(parts: list[Part]) -> bytes:
    """Each part as one SSE ``data:`` event (JSON escapes every newline, so one line)."""
    return b"".join(b"data: %s\n\n" % _encode(p) for p in parts)


class UiMessageMapper:
    """One reader's mapping of one stream (the message ``message_id``) to parts.

    Feed it the stream's chunks in seq order from seq 0 (:meth:`chunk`), and
    :meth:`end` for an abnormal end; :meth:`begin` gives the opening parts.
    After ``done`` or :meth:`end` it is :attr:`closed` and maps nothing more.
    """

    __slots__ = ("_blocks", "_opened", "_tools", "closed", "message_id")

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.closed = False
        #: the open text / reasoning block: kind -> its part id
        self._blocks: dict[str, str] = {}
        #: tool call id -> tool name, for every call announced so far
        self._tools: dict[str, str] = {}
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
        fields = data if isinstance(data, dict) else {}
        if fields.get("step") is True:
            self._close_blocks(parts)
            parts += [{"type": "finish-step"}, {"type": "start-step"}]
        reasoning = fields.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self._delta(parts, "reasoning", reasoning)
        if isinstance(text, str) and text:
            self._delta(parts, "text", text)
        for call in _objects(fields.get("tool_call")):
            self._tool_call(parts, call)
        for result in _objects(fields.get("tool_result")):
            self._tool_result(parts, result)
        if done:
            self._close_blocks(parts)
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
        self._close_blocks(parts)
        if code is ErrorCode.CANCELLED:
            parts.append({"type": "abort", "reason": message})
        else:
            parts.append({"type": "error", "errorText": f"{code.value}: {message}"})
            parts.append({"type": "finish", "finishReason": "error"})
        return parts

    def _delta(self, parts: list[Part], kind: str, delta: str) -> None:
        """A delta of the open ``kind`` block, closing the other kind's and opening one."""
        block = self._blocks.get(kind)
        if block is None:
            self._close_blocks(parts)
            self._opened += 1
            block = self._blocks[kind] = f"{kind}-{self._opened}"
            parts.append({"type": f"{kind}-start", "id": block})
        parts.append({"type": f"{kind}-delta", "id": block, "delta": delta})

    def _close_blocks(self, parts: list[Part]) -> None:
        for kind, block in self._blocks.items():
            parts.append({"type": f"{kind}-end", "id": block})
        self._blocks.clear()

    def _tool_call(self, parts: list[Part], call: Mapping[str, Any]) -> None:
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            return
        out: list[Part] = []
        name = self._tools.get(call_id)
        if name is None:
            name = call.get("name")
            if not isinstance(name, str) or not name:
                return  # the first mention of a call must name its tool
            self._tools[call_id] = name
            out.append({"type": "tool-input-start", "toolCallId": call_id, "toolName": name})
        delta = call.get("input_delta")
        if isinstance(delta, str) and delta:
            out.append({"type": "tool-input-delta", "toolCallId": call_id, "inputTextDelta": delta})
        if "input" in call:
            out.append(
                {
                    "type": "tool-input-available",
                    "toolCallId": call_id,
                    "toolName": name,
                    "input": call["input"],
                }
            )
        if out:
            # A tool part ends the text or reasoning before it: the message
            # shows them in the order the node streamed them.
            self._close_blocks(parts)
            parts += out

    def _tool_result(self, parts: list[Part], result: Mapping[str, Any]) -> None:
        call_id = result.get("id")
        if not isinstance(call_id, str) or call_id not in self._tools or "output" not in result:
            return  # a result of a call never announced would be an orphan in the message
        self._close_blocks(parts)
        parts.append(
            {"type": "tool-output-available", "toolCallId": call_id, "output": result["output"]}
        )


def _objects(value: Any) -> list[Mapping[str, Any]]:
    """``value`` as a list of objects: one object, or the objects of a list."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []
