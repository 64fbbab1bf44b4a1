"""SseParser: WHATWG framing, incremental feeding, limits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.core.messages import StreamChunk
from icefloe.core.sse import SseEvent, SseParser
from icefloe.exceptions import FrameTooLarge
from icefloe.transport.encoding import sse_chunk, sse_error, sse_retry


def parse(data: bytes, *, step: int | None = None) -> tuple[list[SseEvent], SseParser]:
    parser = SseParser()
    if step is None:
        parser.feed_data(data)
    else:
        for i in range(0, len(data), step):
            parser.feed_data(data[i : i + step])
    return parser.events_received(), parser


def test_fields_comments_and_retry() -> None:
    events, parser = parse(b"retry: 1500\n\n: ping\n\nid: 3\nevent: end\ndata: a\ndata: b\n\n")
    assert events == [SseEvent("end", "a\nb", "3")]
    assert parser.retry_ms == 1500
    assert parser.comments == 1
    assert parser.last_event_id == "3"


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_every_line_ending(eol: bytes) -> None:
    events, _ = parse(b"data: x" + eol + eol, step=1)
    assert events == [SseEvent("message", "x", None)]


def test_events_are_drained_once() -> None:
    parser = SseParser()
    parser.feed_data(b"data: 1\n\n")
    assert len(parser.events_received()) == 1
    assert parser.events_received() == []


def test_an_event_over_the_limit_is_refused() -> None:
    parser = SseParser(max_event=100)
    with pytest.raises(FrameTooLarge):
        parser.feed_data(b"data: " + b"x" * 200)


chunks = st.builds(
    StreamChunk,
    stream_id=st.text(min_size=1, max_size=20),
    seq=st.integers(min_value=0, max_value=2**40),
    text=st.text(max_size=50),
    done=st.booleans(),
    ts=st.integers(min_value=0, max_value=2**62),
)


@given(st.lists(chunks, max_size=8), st.integers(min_value=1, max_value=17))
@settings(max_examples=200, deadline=None)
def test_encoded_chunks_round_trip_through_any_split(items: list[StreamChunk], step: int) -> None:
    """Any token text (newlines, CR, 'data:') survives SSE framing and splitting."""
    import json

    wire = sse_retry(2000) + b"".join(map(sse_chunk, items)) + sse_error("failed", "x\ny")
    events, _ = parse(wire, step=step)
    assert [e.event for e in events] == [("end" if c.done else "chunk") for c in items] + ["error"]
    for event, chunk in zip(events, items, strict=False):
        decoded = json.loads(event.data)
        assert event.id == str(chunk.seq)
        assert decoded["text"] == chunk.text
        assert decoded["seq"] == chunk.seq
    assert json.loads(events[-1].data) == {"code": "failed", "message": "x\ny"}


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    parser = SseParser(max_event=128)
    try:
        parser.feed_data(data)
    except FrameTooLarge:
        return
    for event in parser.events_received():
        assert isinstance(event.data, str)
