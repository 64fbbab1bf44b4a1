"""Resume-point parsing and content negotiation of the HTTP edge."""

from __future__ import annotations

import pytest

from icefloe.transport.encoding import WireFormat, parse_resume_point


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


def test_negotiation_defaults_to_sse() -> None:
    assert WireFormat.negotiate(None) is WireFormat.SSE
    assert WireFormat.negotiate("text/event-stream") is WireFormat.SSE
    assert WireFormat.negotiate("application/x-ndjson, */*") is WireFormat.NDJSON
