"""assert_in_order: passes a stream's chunks as the runtime delivers them, and
names the first chunk that breaks a rule, and the rule."""

from __future__ import annotations

import re

import pytest

from icefloe import StreamChunk
from icefloe.testing import assert_in_order


def chunks(*seqs: int, done_last: bool = False, sid: str = "s") -> list[StreamChunk]:
    out = [StreamChunk(stream_id=sid, seq=s, text=f"t{s}") for s in seqs]
    if done_last:
        last = out[-1]
        out[-1] = StreamChunk(stream_id=sid, seq=last.seq, text=last.text, done=True)
    return out


def test_a_stream_in_order_passes() -> None:
    assert_in_order(chunks(0, 1, 2, done_last=True), complete=True)
    assert_in_order(chunks(0, 1, 2))  # still going: no done needed
    assert_in_order(chunks(5, 6), start=5)
    assert_in_order([])


def test_a_duplicate_names_both_chunks() -> None:
    with pytest.raises(
        AssertionError,
        match=re.escape("chunk #2 (seq 1, text 't1') is a duplicate of chunk #1: expected seq 2"),
    ):
        assert_in_order(chunks(0, 1, 1, 2))


def test_out_of_order_names_where_the_missing_seq_arrives() -> None:
    with pytest.raises(
        AssertionError,
        match=re.escape(
            "chunk #1 (seq 2, text 't2'): expected seq 1; "
            "out of order: seq 1 arrives later, as chunk #2"
        ),
    ):
        assert_in_order(chunks(0, 2, 1))


def test_a_gap_names_the_missing_seqs() -> None:
    with pytest.raises(
        AssertionError,
        match=re.escape(
            "chunk #2 (seq 5, text 't5'): expected seq 2; a gap: seq 2..4 never arrive"
        ),
    ):
        assert_in_order(chunks(0, 1, 5))


def test_a_seq_before_the_start_is_out_of_order() -> None:
    with pytest.raises(AssertionError, match="out of order: it comes after a later seq"):
        assert_in_order(chunks(3), start=4)


def test_nothing_may_follow_the_done_chunk() -> None:
    done = chunks(0, 1, done_last=True)
    with pytest.raises(
        AssertionError, match=re.escape("chunk #2 (seq 2, text 't2') comes after the done chunk #1")
    ):
        assert_in_order([*done, *chunks(2)])


def test_chunks_of_another_stream_are_named() -> None:
    with pytest.raises(AssertionError, match=r"chunk #1 .* is of stream 'b'; chunk #0 is of 'a'"):
        assert_in_order([*chunks(0, sid="a"), *chunks(1, sid="b")])


def test_complete_wants_the_done_chunk_last() -> None:
    with pytest.raises(
        AssertionError, match=re.escape("no done chunk: the last is chunk #1 (seq 1)")
    ):
        assert_in_order(chunks(0, 1), complete=True)
    with pytest.raises(AssertionError, match="no chunks"):
        assert_in_order([], complete=True)
