"""Resume-point parsing, content negotiation and terminal ids of the HTTP edge."""

from __future__ import annotations

import pytest

from icefloe.core.sse import SseParser
from icefloe.core.wire_errors import ErrorCode
from icefloe.transport.encoding import (
    WireFormat,
    parse_query_int,
    parse_resume_point,
    sse_error,
    terminal_seq,
)


@pytest.mark.parametrize(
    ("from_seq", "last_event_id", "expected"),
    [(None, None, 0), ("5", None, 5), (None, "17", 18), ("3", "17", 3), (None, " ", 0)],
)
def test_resume_point(from_seq: str | None, last_event_id: str | None, expected: int) -> None:
    assert parse_resume_point(from_seq, last_event_id) == expected


@pytest.mark.parametrize("bad", ["-1", "+1", "1_0", "abc", "1.5", "٣", "9" * 20, ""])
def test_bad_resume_points_are_value_errors(bad: str) -> None:
    with pytest.raises(ValueError, match="non-negative integer"):
        parse_resume_point(bad, None)


@pytest.mark.parametrize(("raw", "expected"), [("0", 0), ("256", 256), ("-1", -1), ("007", 7)])
def test_query_integers(raw: str, expected: int) -> None:
    assert parse_query_int(raw, "buffer") == expected


# Issue 15, item 11: int() accepts every one of these but the first three.
@pytest.mark.parametrize(
    "bad", ["", "-", "abc", "1_0", "+1", " 1", "1 ", "--1", "1.0", "\u0663", "9" * 20]
)
def test_bad_query_integers_are_value_errors_naming_the_parameter(bad: str) -> None:
    with pytest.raises(ValueError, match=r"^buffer must be an integer"):
        parse_query_int(bad, "buffer")


def test_a_resume_point_error_names_the_parameter_it_came_from() -> None:
    with pytest.raises(ValueError, match=r"^from_offset must be"):
        parse_resume_point("x", None, name="from_offset")


def test_negotiation_defaults_to_sse() -> None:
    assert WireFormat.negotiate(None) is WireFormat.SSE
    assert WireFormat.negotiate("text/event-stream") is WireFormat.SSE
    assert WireFormat.negotiate("application/x-ndjson, */*") is WireFormat.NDJSON


@pytest.mark.parametrize(
    "code", [ErrorCode.CANCELLED, ErrorCode.FAILED, ErrorCode.TIMEOUT, ErrorCode.INTERRUPTED]
)
def test_a_stream_terminal_takes_the_seq_after_the_last_chunk(code: ErrorCode) -> None:
    # The reader drained to the end: its next seq is the stream's last seq + 1.
    assert terminal_seq(code, 18) == 18
    # Resuming after it asks for more than the stream has: the edge answers 204.
    assert parse_resume_point(None, str(terminal_seq(code, 18))) == 19


def test_history_gone_keeps_the_seq_before_the_gap() -> None:
    # A reconnect resumes exactly at the gap, never past chunks the reader missed.
    assert terminal_seq(ErrorCode.HISTORY_GONE, 18) == 17
    assert parse_resume_point(None, "17") == 18
    assert terminal_seq(ErrorCode.HISTORY_GONE, 0) is None


def test_sse_error_has_an_id_when_given_one() -> None:
    parser = SseParser()
    parser.feed_data(sse_error("cancelled", "stop", 18) + sse_error("failed", "x\ny"))
    with_id, without = parser.events_received()
    assert (with_id.id, with_id.event) == ("18", "error")
    assert (without.id, without.event) == (None, "error")
    assert without.data == '{"code":"failed","message":"x\\ny"}'
