"""Tests for icefloe.core.uimessage: chunks as AI SDK UI message stream parts."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.core.uimessage import DONE_EVENT, UiMessageMapper, encode_parts
from icefloe.core.wire_errors import ErrorCode

PROPERTY = settings(max_examples=300, deadline=None)

Chunk = tuple[str, Any]  # (text, data)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
call_ids = st.sampled_from(["c1", "c2", "c3"])
names = st.sampled_from(["weather", "search", ""])
# The typed ``data`` vocabulary (the LLM adapters' parts), with fields left
# out or wrong now and then: the mapper must keep the grammar whatever comes.
typed = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("reasoning"), "delta": st.text(max_size=6)},
        optional={"id": st.sampled_from(["r0", "r1"])},
    ),
    st.fixed_dictionaries(
        {"type": st.just("tool-input-delta"), "id": call_ids, "delta": st.text(max_size=4)},
        optional={"name": names},
    ),
    st.fixed_dictionaries(
        {"type": st.just("tool-input-available"), "id": call_ids},
        optional={"name": names, "input": json_values},
    ),
    st.fixed_dictionaries(
        {"type": st.just("tool-input-error"), "id": call_ids, "input": st.text(max_size=4)},
        optional={"name": names, "error": st.text(max_size=4)},
    ),
    st.fixed_dictionaries(
        {"type": st.just("tool-output-available"), "id": call_ids},
        optional={"output": json_values},
    ),
    st.fixed_dictionaries(
        {"type": st.just("tool-output-error"), "id": call_ids},
        optional={"error": st.text(max_size=4)},
    ),
    st.just({"type": "step"}),
    st.fixed_dictionaries({"type": st.text(max_size=4)}),
)
chunks = st.lists(st.tuples(st.text(max_size=6), st.none() | typed | json_values), max_size=30)


def run(items: list[Chunk], meta: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    mapper = UiMessageMapper("m1")
    parts = mapper.begin()
    for text, data in items:
        parts += mapper.chunk(text, data, None, done=False)
    parts += mapper.chunk("", None, meta, done=True)
    return parts


def check_well_formed(parts: list[dict[str, Any]]) -> None:
    """The grammar the AI SDK reads: blocks open before their deltas and close
    before the message ends, tool calls start before their input and output,
    steps alternate, and the last part is ``finish`` / ``abort``."""
    assert parts[:2] == [{"type": "start", "messageId": "m1"}, {"type": "start-step"}]
    open_blocks: dict[str, str] = {}
    tools: dict[str, str] = {}  # call id -> streaming / input / answered
    in_step = True
    ids: set[str] = set()
    for part in parts[2:-1]:
        kind = part["type"]
        family, _, phase = kind.rpartition("-")
        if family in ("text", "reasoning"):
            if phase == "start":
                assert not open_blocks  # one block at a time
                assert part["id"] not in ids  # ids are unique within the message
                ids.add(part["id"])
                open_blocks[family] = part["id"]
            elif phase == "delta":
                assert open_blocks.get(family) == part["id"]
                assert part["delta"]
            else:
                assert open_blocks.pop(family) == part["id"]
            continue
        if kind == "tool-input-start":
            assert part["toolCallId"] not in tools
            assert part["toolName"]
            tools[part["toolCallId"]] = "streaming"
        elif kind == "tool-input-delta":
            assert tools[part["toolCallId"]] == "streaming"
            assert part["inputTextDelta"]
        elif kind in ("tool-input-available", "tool-input-error"):
            assert tools[part["toolCallId"]] == "streaming"
            assert part["toolName"]
            tools[part["toolCallId"]] = "input" if kind == "tool-input-available" else "answered"
        elif kind in ("tool-output-available", "tool-output-error"):
            assert tools[part["toolCallId"]] == "input"
            tools[part["toolCallId"]] = "answered"
        elif kind == "finish-step":
            assert in_step
            in_step = False
        elif kind == "start-step":
            assert not in_step
            in_step = True
        elif kind == "error":
            assert part["errorText"]
        else:
            raise AssertionError(f"unexpected part {part}")
        if kind.startswith("tool-") or kind.endswith("-step"):
            assert not open_blocks  # a tool part or a step boundary closes the blocks
    assert not open_blocks
    assert parts[-1]["type"] in ("finish", "abort")


def joined(parts: list[dict[str, Any]], kind: str) -> str:
    return "".join(p["delta"] for p in parts if p["type"] == f"{kind}-delta")


@PROPERTY
@given(chunks)
def test_text_and_reasoning_arrive_whole_in_a_well_formed_message(items: list[Chunk]) -> None:
    parts = run(items)
    check_well_formed(parts)
    assert joined(parts, "text") == "".join(text for text, _ in items)
    reasoning = [
        d["delta"] for _, d in items if isinstance(d, dict) and d.get("type") == "reasoning"
    ]
    assert joined(parts, "reasoning") == "".join(reasoning)


@PROPERTY
@given(chunks)
def test_a_replay_maps_exactly_as_the_first_reading(items: list[Chunk]) -> None:
    # A resume reads the stream again from seq 0 with a fresh mapper.
    assert run(items) == run(items)


@PROPERTY
@given(chunks, st.sampled_from(list(ErrorCode)), st.text(max_size=10))
def test_an_abnormal_end_closes_everything(items: list[Chunk], code: ErrorCode, text: str) -> None:
    mapper = UiMessageMapper("m1")
    parts = mapper.begin()
    for chunk_text, data in items:
        parts += mapper.chunk(chunk_text, data, None, done=False)
    parts += mapper.end(code, text)
    if code is ErrorCode.CANCELLED:
        assert parts[-1] == {"type": "abort", "reason": text}
    else:
        assert parts[-2:] == [
            {"type": "error", "errorText": f"{code.value}: {text}"},
            {"type": "finish", "finishReason": "error"},
        ]
    check_well_formed(parts)
    assert mapper.closed
    assert mapper.chunk("more", None, None, done=False) == []
    assert mapper.end(code, text) == []


@PROPERTY
@given(chunks)
def test_encoding_is_one_data_line_per_part(items: list[Chunk]) -> None:
    parts = run(items)
    events = encode_parts(parts).split(b"\n\n")
    assert events.pop() == b""
    assert [json.loads(e.removeprefix(b"data: ")) for e in events] == parts
    assert all(e.count(b"\n") == 0 and e.startswith(b"data: ") for e in events)
    assert DONE_EVENT == b"data: [DONE]\n\n"


def test_a_tool_call_streams_its_input_then_its_output() -> None:
    parts = run(
        [
            ("", {"type": "tool-input-delta", "id": "c1", "name": "weather", "delta": '{"city":'}),
            ("", {"type": "tool-input-delta", "id": "c1", "name": "weather", "delta": '"Oslo"}'}),
            (
                "",
                {
                    "type": "tool-input-available",
                    "id": "c1",
                    "name": "weather",
                    "input": {"city": "Oslo"},
                },
            ),
            ("", {"type": "tool-input-delta", "id": "c1", "name": "weather", "delta": "late"}),
            ("", {"type": "tool-output-available", "id": "c1", "output": {"celsius": -3}}),
            ("", {"type": "tool-output-available", "id": "c1", "output": "twice"}),
            ("", {"type": "tool-output-available", "id": "unknown", "output": 1}),
        ]
    )
    assert parts[2:7] == [
        {"type": "tool-input-start", "toolCallId": "c1", "toolName": "weather"},
        {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": '{"city":'},
        {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": '"Oslo"}'},
        {
            "type": "tool-input-available",
            "toolCallId": "c1",
            "toolName": "weather",
            "input": {"city": "Oslo"},
        },
        {"type": "tool-output-available", "toolCallId": "c1", "output": {"celsius": -3}},
    ]
    assert parts[7:] == [{"type": "finish-step"}, {"type": "finish"}]


def test_a_call_with_no_arguments_and_a_call_with_bad_ones() -> None:
    # Adapters send no delta for an empty argument list, and tool-input-error
    # with the raw text for arguments that are not JSON.
    parts = run(
        [
            ("", {"type": "tool-input-available", "id": "c1", "name": "now", "input": {}}),
            ("", {"type": "tool-output-error", "id": "c1", "error": "clock broken"}),
            ("", {"type": "tool-input-delta", "id": "c2", "name": "f", "delta": '{"x": '}),
            (
                "",
                {
                    "type": "tool-input-error",
                    "id": "c2",
                    "name": "f",
                    "input": '{"x": ',
                    "error": "bad",
                },
            ),
            ("", {"type": "tool-output-available", "id": "c2", "output": 1}),
        ]
    )
    assert parts[2:-2] == [
        {"type": "tool-input-start", "toolCallId": "c1", "toolName": "now"},
        {"type": "tool-input-available", "toolCallId": "c1", "toolName": "now", "input": {}},
        {"type": "tool-output-error", "toolCallId": "c1", "errorText": "clock broken"},
        {"type": "tool-input-start", "toolCallId": "c2", "toolName": "f"},
        {"type": "tool-input-delta", "toolCallId": "c2", "inputTextDelta": '{"x": '},
        {
            "type": "tool-input-error",
            "toolCallId": "c2",
            "toolName": "f",
            "input": '{"x": ',
            "errorText": "bad",
        },
    ]


def test_reasoning_then_text_switches_blocks() -> None:
    parts = run(
        [
            ("", {"type": "reasoning", "id": "r", "delta": "think"}),
            ("say", {"type": "reasoning", "id": "r", "delta": "more"}),
        ]
    )
    assert [p["type"] for p in parts[2:-2]] == [
        "reasoning-start",
        "reasoning-delta",
        "reasoning-delta",
        "reasoning-end",
        "text-start",
        "text-delta",
        "text-end",
    ]


def test_a_new_reasoning_block_id_is_a_new_reasoning_part() -> None:
    parts = run(
        [
            ("", {"type": "reasoning", "id": "rs_1", "delta": "a"}),
            ("", {"type": "reasoning", "id": "rs_1", "delta": "b"}),
            ("", {"type": "reasoning", "id": "rs_2", "delta": "c"}),
        ]
    )
    assert parts[2:-2] == [
        {"type": "reasoning-start", "id": "reasoning-1"},
        {"type": "reasoning-delta", "id": "reasoning-1", "delta": "a"},
        {"type": "reasoning-delta", "id": "reasoning-1", "delta": "b"},
        {"type": "reasoning-end", "id": "reasoning-1"},
        {"type": "reasoning-start", "id": "reasoning-2"},
        {"type": "reasoning-delta", "id": "reasoning-2", "delta": "c"},
        {"type": "reasoning-end", "id": "reasoning-2"},
    ]


def test_the_older_keys_are_not_read() -> None:
    # One vocabulary: the untyped keys of earlier versions map to nothing.
    old = {"reasoning": "x", "tool_call": {"id": "c1", "name": "f", "input": {}}, "step": True}
    assert run([("", old)])[2:] == [{"type": "finish-step"}, {"type": "finish"}]


def test_the_done_meta_is_the_finish() -> None:
    meta = {"finish_reason": "length", "usage": {"output_tokens": 5}}
    assert run([], meta)[-1] == {
        "type": "finish",
        "finishReason": "length",
        "messageMetadata": meta,
    }
    odd = {"finish_reason": "no-such-reason"}
    assert run([], odd)[-1] == {"type": "finish", "messageMetadata": odd}


def test_a_step_boundary_ends_and_starts_a_step() -> None:
    parts = run([("a", None), ("b", {"type": "step"})])
    assert [p["type"] for p in parts] == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "finish-step",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
    ]
