"""The chunk shapes of icefloe.llm.parts: what docs/llm.md promises a mapper."""

from __future__ import annotations

import msgspec

from icefloe.core.uimessage import DATA_TYPES, UiMessageMapper
from icefloe.llm.parts import (
    Reply,
    ToolCall,
    done_meta,
    parse_arguments,
    reasoning_part,
    step_part,
    tool_delta_part,
    tool_end_part,
    tool_output_error_part,
    tool_output_part,
    usage_counts,
)


def test_parts_have_the_documented_keys() -> None:
    assert reasoning_part("r0", "hm") == {"type": "reasoning", "id": "r0", "delta": "hm"}
    assert tool_delta_part("c1", "f", "{") == {
        "type": "tool-input-delta",
        "id": "c1",
        "name": "f",
        "delta": "{",
    }
    call = ToolCall("c1", "f", '{"a": 1}', {"a": 1})
    assert tool_end_part(call) == {
        "type": "tool-input-available",
        "id": "c1",
        "name": "f",
        "input": {"a": 1},
    }
    bad = ToolCall("c2", "g", "{", None)
    assert tool_end_part(bad)["type"] == "tool-input-error"
    assert tool_end_part(bad)["input"] == "{"


def test_arguments_parse_to_json_or_none() -> None:
    assert parse_arguments("") == {}
    assert parse_arguments("  ") == {}
    assert parse_arguments('{"x": [1]}') == {"x": [1]}
    assert parse_arguments('{"x": ') is None


def test_usage_keeps_the_given_counts_and_sums_a_missing_total() -> None:
    assert usage_counts(input_tokens=3, output_tokens=4, reasoning_tokens=None) == {
        "input_tokens": 3,
        "output_tokens": 4,
        "total_tokens": 7,
    }
    assert usage_counts(input_tokens=3, output_tokens=4, total_tokens=9)["total_tokens"] == 9
    assert usage_counts(output_tokens=4) == {"output_tokens": 4}


def test_the_done_meta_encodes_as_json() -> None:
    reply = Reply("hi", "", (), "stop", "end_turn", {"input_tokens": 1}, "m", "id1")
    meta = done_meta("anthropic", reply)
    assert msgspec.json.decode(msgspec.json.encode(meta)) == {
        "provider": "anthropic",
        "model": "m",
        "finish_reason": "stop",
        "provider_finish_reason": "end_turn",
        "usage": {"input_tokens": 1},
    }


def test_every_part_an_adapter_or_tool_loop_emits_maps_to_ai_sdk_parts() -> None:
    # The one vocabulary: each helper's part is read by the /v1/chat mapper.
    good = ToolCall("c1", "weather", '{"city": "Oslo"}', {"city": "Oslo"})
    bad = ToolCall("c2", "f", '{"x": ', None)
    reply = Reply(
        "It is", "hm", (good, bad), "tool-calls", "tool_calls", {"input_tokens": 1}, "m", "r"
    )
    items = [
        reasoning_part("reasoning-0", "hm"),
        tool_delta_part("c1", "weather", '{"city": "Oslo"}'),
        tool_end_part(good),
        tool_delta_part("c2", "f", '{"x": '),
        tool_end_part(bad),
        tool_output_part("c1", {"celsius": -3}),
        step_part(),
    ]
    assert {item["type"] for item in items} == DATA_TYPES - {"tool-output-error"}
    assert tool_output_error_part("c1", "no")["type"] in DATA_TYPES
    mapper = UiMessageMapper("m")
    parts = mapper.begin()
    for item in items:
        parts += mapper.chunk("", item, None, done=False)
    parts += mapper.chunk("It is", None, None, done=False)
    parts += mapper.chunk("", None, done_meta("openai", reply), done=True)
    assert [p["type"] for p in parts] == [
        "start",
        "start-step",
        "reasoning-start",
        "reasoning-delta",
        "reasoning-end",
        "tool-input-start",
        "tool-input-delta",
        "tool-input-available",
        "tool-input-start",
        "tool-input-delta",
        "tool-input-error",
        "tool-output-available",
        "finish-step",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
    ]
    assert parts[10]["errorText"] == "the tool arguments are not valid JSON"
    assert parts[-1] == {
        "type": "finish",
        "finishReason": "tool-calls",
        "messageMetadata": done_meta("openai", reply),
    }
