"""The record codec: round trips, and every corruption caught as CorruptRecord."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from icefloe.core.codec import Format
from icefloe.core.framing import encode_frame
from icefloe.core.messages import Headers, Message, StreamChunk
from icefloe.exceptions import CorruptRecord, EncodeError, ErrorCode
from icefloe.store import records
from icefloe.store.types import StoredChunk

_INT64 = st.integers(-(2**63), 2**63 - 1)
_SCALARS = st.none() | st.booleans() | _INT64 | st.floats(allow_nan=False) | st.text()
# msgpack values as they come back from a decode: lists, str-keyed dicts.
VALUES = st.recursive(
    _SCALARS | st.binary(max_size=32),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
CHUNKS = st.builds(
    StreamChunk,
    stream_id=st.text(min_size=1, max_size=16),
    seq=st.integers(0, 2**63 - 1),
    text=st.text(max_size=64),
    done=st.booleans(),
    meta=st.dictionaries(st.text(max_size=8), _SCALARS, max_size=3),
    data=VALUES,
    ts=_INT64,
)
MESSAGES = st.builds(
    Message,
    payload=VALUES,
    headers=st.builds(
        Headers,
        tenant=st.text(max_size=12),
        topic=st.none() | st.text(max_size=12),
        priority=_INT64,
    ),
    trace_id=st.text(max_size=32),
    deadline_s=st.none() | st.floats(allow_nan=False),
    meta=st.dictionaries(st.text(max_size=8), _SCALARS, max_size=3),
)


@given(CHUNKS)
def test_a_chunk_round_trips(chunk: StreamChunk) -> None:
    record = records.encode_chunk(chunk)
    assert records.decode_chunk(record) == chunk
    assert records.decode_chunk(record, stream_id=chunk.stream_id, seq=chunk.seq) == chunk


@given(st.lists(CHUNKS, max_size=8))
def test_a_batch_encodes_to_the_records_of_its_chunks(chunks: list[StreamChunk]) -> None:
    stored = records.encode_chunks(chunks)
    assert [(s.seq, s.record) for s in stored] == [(c.seq, records.encode_chunk(c)) for c in chunks]
    assert all(type(s) is StoredChunk for s in stored)


@given(
    st.lists(CHUNKS, min_size=1, max_size=8),
    st.text(min_size=1, max_size=16),
    st.integers(0, 2**63 - 9),
)
def test_a_segment_round_trips_its_chunks(chunks: list[StreamChunk], sid: str, first: int) -> None:
    # The generated chunks, renumbered into one stream's consecutive seqs.
    run = [
        StreamChunk(sid, first + i, c.text, c.done, c.meta, c.data, c.ts)
        for i, c in enumerate(chunks)
    ]
    record = records.encode_segment(run)
    assert records.decode_segment(record) == run
    assert records.decode_segment(record, stream_id=sid, first_seq=first) == run


def test_a_segment_of_plain_tokens_is_their_texts_and_stamps() -> None:
    tokens = [StreamChunk("stream-" + "x" * 25, i, "tok") for i in range(512)]
    record = records.encode_segment(tokens)
    # about 14 bytes a token (3 of text, 9 of stamp), against ~96 for a record each
    assert len(record) < 16 * len(tokens)
    assert sum(len(r) for _, r in records.encode_chunks(tokens)) > 90 * len(tokens)
    decoded = records.decode_segment(record)
    assert decoded == tokens
    assert all(c.meta == {} and c.data is None and not c.done for c in decoded)


@pytest.mark.parametrize(
    "chunks",
    [
        [],
        [StreamChunk("s", 0, "a"), StreamChunk("s", 2, "b")],
        [StreamChunk("s", 1, "a"), StreamChunk("s", 0, "b")],
        [StreamChunk("s", 0, "a"), StreamChunk("t", 1, "b")],
    ],
    ids=["empty", "gap", "descending", "two-streams"],
)
def test_a_segment_holds_consecutive_seqs_of_one_stream(chunks: list[StreamChunk]) -> None:
    with pytest.raises(ValueError, match="segment holds"):
        records.encode_segment(chunks)


def test_a_segment_filed_under_the_wrong_key_is_corrupt() -> None:
    record = records.encode_segment([StreamChunk("s", 4, "a"), StreamChunk("s", 5, "b")])
    with pytest.raises(CorruptRecord, match="under 't'"):
        records.decode_segment(record, stream_id="t")
    with pytest.raises(CorruptRecord, match="under seq 5"):
        records.decode_segment(record, first_seq=5)


@pytest.mark.parametrize(
    "body",
    [
        ["s", 0, [], None, None, None, []],
        ["s", 0, ["a", "b"], None, None, None, [1]],
        ["s", 0, ["a"], [True, False], None, None, [1]],
        ["s", -1, ["a"], None, None, None, [1]],
        ["s", 2**63 - 1, ["a", "b"], None, None, None, [1, 2]],
        ["s", 0, ["a"], None, [5], None, [1]],
        ["s", 0, "a", None, None, None, [1]],
    ],
    ids=["no-chunk", "short-stamps", "long-dones", "negative", "past-2**63", "bad-meta", "no-list"],
)
def test_a_well_sealed_segment_with_a_bad_body_is_corrupt(body: list[Any]) -> None:
    payload = bytes((records.RECORD_VERSION, records.RecordKind.SEGMENT)) + msgspec.msgpack.encode(
        body
    )
    sealed = encode_frame(payload, Format.MSGPACK)
    with pytest.raises(CorruptRecord) as caught:
        records.decode_segment(sealed)
    assert caught.value.kind == "segment"


def test_a_chunk_record_is_not_a_segment_nor_a_segment_a_chunk() -> None:
    chunk = StreamChunk("s", 0, "a")
    with pytest.raises(CorruptRecord, match="kind 1"):
        records.decode_segment(records.encode_chunk(chunk))
    with pytest.raises(CorruptRecord, match="kind 5"):
        records.decode_chunk(records.encode_segment([chunk]))


def test_a_batch_with_a_chunk_msgpack_cannot_carry_fails_whole() -> None:
    good = StreamChunk("s", 0, "a")
    bad = StreamChunk("s", 1, "b", data=object())
    with pytest.raises(EncodeError, match="MSGPACK"):
        records.encode_chunks([good, bad])


@given(MESSAGES)
def test_a_start_message_round_trips_with_its_headers(message: Message) -> None:
    assert records.decode_message(records.encode_message(message)) == message


@given(VALUES)
def test_a_checkpoint_state_round_trips(state: Any) -> None:
    assert records.decode_state(records.encode_state(state)) == state


@given(st.binary(max_size=256))
def test_a_session_blob_round_trips(blob: bytes) -> None:
    assert records.decode_session(records.encode_session(blob)) == blob


def test_tuples_come_back_as_lists() -> None:
    assert records.decode_state(records.encode_state({"pos": (1, 2)})) == {"pos": [1, 2]}


def _sample_records() -> list[tuple[str, bytes]]:
    chunk = StreamChunk("s-1", 7, "hello", meta={"m": 1}, data={"k": [1, 2]}, ts=5)
    message = Message({"prompt": "hi"}, Headers("acme", "t", 2), trace_id="tr", deadline_s=9.5)
    return [
        ("chunk", records.encode_chunk(chunk)),
        ("message", records.encode_message(message)),
        ("state", records.encode_state({"pos": 16, "text": "abc"})),
        ("session", records.encode_session(b"\x00session-blob\xff")),
        ("segment", records.encode_segment([chunk, StreamChunk("s-1", 8, "!", True, ts=6)])),
    ]


_DECODERS = {
    "chunk": records.decode_chunk,
    "message": records.decode_message,
    "state": records.decode_state,
    "session": records.decode_session,
    "segment": records.decode_segment,
}


@pytest.mark.parametrize(("kind", "record"), _sample_records(), ids=lambda v: str(v)[:8])
def test_every_single_bit_flip_is_detected_and_none_decodes(kind: str, record: bytes) -> None:
    decode = _DECODERS[kind]
    decode(record)  # the intact record decodes
    flips = detected = 0
    for bit in range(len(record) * 8):
        damaged = bytearray(record)
        damaged[bit // 8] ^= 1 << (bit % 8)
        flips += 1
        with pytest.raises(CorruptRecord) as caught:
            decode(bytes(damaged))
        assert caught.value.code is ErrorCode.CORRUPT
        assert caught.value.kind == kind
        detected += 1
    assert flips == len(record) * 8
    assert detected == flips


@pytest.mark.parametrize(("kind", "record"), _sample_records(), ids=lambda v: str(v)[:8])
def test_truncated_and_extended_records_are_corrupt(kind: str, record: bytes) -> None:
    decode = _DECODERS[kind]
    for cut in range(len(record)):
        with pytest.raises(CorruptRecord):
            decode(record[:cut])
    with pytest.raises(CorruptRecord, match="carries"):
        decode(record + b"\x00")


def test_a_record_of_another_kind_is_corrupt() -> None:
    state = records.encode_state({"a": 1})
    with pytest.raises(CorruptRecord, match="kind 3"):
        records.decode_chunk(state)


def test_a_chunk_filed_under_the_wrong_key_is_corrupt() -> None:
    record = records.encode_chunk(StreamChunk("s-1", 3, "x"))
    with pytest.raises(CorruptRecord, match="seq 3 under seq 4"):
        records.decode_chunk(record, seq=4)
    with pytest.raises(CorruptRecord, match="under 's-2'"):
        records.decode_chunk(record, stream_id="s-2")


def test_an_unknown_version_is_corrupt_even_with_a_good_checksum() -> None:
    record = encode_frame(bytes((9, records.RecordKind.STATE)) + b"\xc0", Format.MSGPACK)
    with pytest.raises(CorruptRecord, match="version 9"):
        records.decode_state(record)


def test_a_json_frame_is_not_a_record() -> None:
    record = encode_frame(bytes((1, records.RecordKind.STATE)) + b"\xc0", Format.JSON)
    with pytest.raises(CorruptRecord, match="JSON"):
        records.decode_state(record)


def test_an_extension_type_is_refused() -> None:
    body = bytes((1, records.RecordKind.STATE)) + b"\xd4\x05\x00"  # fixext1, type 5
    with pytest.raises(CorruptRecord, match="extension"):
        records.decode_state(encode_frame(body, Format.MSGPACK))


def test_a_value_msgpack_cannot_carry_is_an_encode_error() -> None:
    with pytest.raises(EncodeError, match="state"):
        records.encode_state({"x": object()})
    with pytest.raises(TypeError, match="bytes"):
        records.encode_session("text")  # type: ignore[arg-type]


def test_non_bytes_input_is_corrupt_not_a_crash() -> None:
    with pytest.raises(CorruptRecord, match="expected bytes"):
        records.decode_state(None)  # type: ignore[arg-type]
