"""A chunk's record layout, and its reading back with checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icefloe.connectors import Record, Sink, Source, chunk_record, record_chunk
from icefloe.core.codec import Format
from icefloe.core.messages import StreamChunk
from icefloe.core.reliability import Reliability
from icefloe.exceptions import DecodeError

texts = st.text(max_size=40)


@given(
    sid=st.text(min_size=1, max_size=20),
    seq=st.integers(0, 2**40),
    text=texts,
    done=st.booleans(),
    fmt=st.sampled_from(list(Format)),
    level=st.sampled_from(list(Reliability)),
)
def test_a_chunk_round_trips_through_its_record(
    sid: str, seq: int, text: str, done: bool, fmt: Format, level: Reliability
) -> None:
    chunk = StreamChunk(sid, seq, text, done, {"k": 1}, {"d": [1, 2]})
    record = chunk_record(chunk, trace_id="tr", tenant="acme", reliability=level, fmt=fmt)
    assert record.key == sid.encode()
    assert record.header("icefloe-seq") == str(seq).encode()
    back = record_chunk(record)
    assert back.chunk == chunk
    assert (back.trace_id, back.tenant, back.reliability) == ("tr", "acme", level)


def _record() -> Record:
    return chunk_record(StreamChunk("s", 3, "hi"), trace_id="t", tenant="a")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda r: r._replace(headers=r.headers[1:]), "no icefloe-seq header"),
        (lambda r: r._replace(headers=(("icefloe-seq", b"4"), *r.headers[1:])), "disagrees"),
        (lambda r: r._replace(key=b"other"), "key disagrees"),
        (lambda r: r._replace(value=b"\xc1garbage"), None),
        (
            lambda r: r._replace(
                headers=(*r.headers[:3], ("icefloe-reliability", b"maybe"), r.headers[4])
            ),
            "reliability",
        ),
    ],
)
def test_a_bad_record_is_a_decode_error(change, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DecodeError, match=match):
        record_chunk(change(_record()))


def test_the_protocols_are_runtime_checkable() -> None:
    assert not isinstance(object(), Source)
    assert not isinstance(object(), Sink)
