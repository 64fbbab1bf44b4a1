"""Tests for icefloe.core.codec: chunks to JSON and msgpack and back."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.core.codec import (
    Format,
    decode,
    decode_chunk_json,
    decode_chunk_msgpack,
    encode,
    encode_chunk_json,
    encode_chunk_msgpack,
)
from icefloe.core.messages import StreamChunk
from icefloe.exceptions import DecodeError, EncodeError

PROPERTY = settings(max_examples=200, deadline=None)

_int64 = st.integers(-(2**63), 2**63 - 1)
_scalars = st.one_of(
    st.none(), st.booleans(), _int64, st.floats(allow_nan=False, allow_infinity=False), st.text()
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


@st.composite
def _chunk(draw: st.DrawFn) -> StreamChunk:
    # Built by hand: st.builds would introspect StreamChunk's type hints.
    return StreamChunk(
        stream_id=draw(st.text(max_size=40)),
        seq=draw(st.integers(0, 2**63 - 1)),
        text=draw(st.text()),
        done=draw(st.booleans()),
        meta=draw(st.dictionaries(st.text(max_size=8), _values, max_size=4)),
        data=draw(_values),
        ts=draw(_int64),
    )


_chunks = _chunk()
_CODECS = [
    (encode_chunk_json, decode_chunk_json),
    (encode_chunk_msgpack, decode_chunk_msgpack),
]


def _valid_or_decode_error(data: bytes, fmt: Format) -> None:
    try:
        chunk = decode(data, fmt)
    except DecodeError:
        return
    assert isinstance(chunk, StreamChunk)
    assert chunk.seq >= 0


# -- round trips ---------------------------------------------------------------


@PROPERTY
@given(chunk=_chunks)
def test_json_round_trip_is_one_line(chunk: StreamChunk) -> None:
    data = encode_chunk_json(chunk)
    assert b"\n" not in data
    assert b"\r" not in data
    assert decode_chunk_json(data) == chunk
    assert decode_chunk_json(data.decode()) == chunk
    assert decode(encode(chunk, Format.JSON), Format.JSON) == chunk


@PROPERTY
@given(chunk=_chunks)
def test_msgpack_round_trip(chunk: StreamChunk) -> None:
    assert decode_chunk_msgpack(encode_chunk_msgpack(chunk)) == chunk
    assert decode(encode(chunk, Format.MSGPACK), int(Format.MSGPACK)) == chunk


@pytest.mark.parametrize(("enc", "dec"), _CODECS)
def test_awkward_text_round_trips_exactly(enc: Any, dec: Any) -> None:
    text = "line one\nline two\r\ndata: not a field\r\n\n\u2028é🧊\x00"
    chunk = StreamChunk("s", 7, text, meta={"k": "v\n"})
    assert dec(enc(chunk)) == chunk


def test_json_field_names_are_the_wire_contract() -> None:
    chunk = StreamChunk("abc", 17, "lo", ts=1)
    assert encode_chunk_json(chunk) == (
        b'{"stream_id":"abc","seq":17,"text":"lo","done":false,"meta":{},"data":null,"ts":1}'
    )


def test_defaults_fill_optional_fields() -> None:
    chunk = decode_chunk_json(b'{"stream_id":"s","seq":0,"text":"t"}')
    assert (chunk.done, chunk.meta, chunk.data) == (False, {}, None)
    assert chunk.ts > 0


def test_format_values_are_the_wire_bytes() -> None:
    assert (Format.JSON, Format.MSGPACK) == (1, 2)


# -- decode errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated"),
        (b"{", "truncated"),
        (b"\xff", "malformed"),
        (b"[]", "Expected `object`"),
        (b'{"seq":1,"text":""}', "missing required field `stream_id`"),
        (b'{"stream_id":"s","seq":"1","text":""}', "Expected `int`"),
        (b'{"stream_id":"s","seq":true,"text":""}', "Expected `int`"),
        (b'{"stream_id":"s","seq":1.0,"text":""}', "Expected `int`"),
        (b'{"stream_id":"s","seq":1,"text":5}', "Expected `str`"),
        (b'{"stream_id":"s","seq":1,"text":"","meta":[]}', "Expected `object`"),
    ],
)
def test_invalid_json_raises_decode_error_with_cause(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message) as info:
        decode_chunk_json(data)
    assert isinstance(info.value.__cause__, msgspec.DecodeError)
    assert str(info.value).startswith("invalid JSON chunk")


@pytest.mark.parametrize("seq", [-1, -(2**63), 2**63, 10**30])
@pytest.mark.parametrize("fmt", list(Format))
def test_seq_out_of_range_is_a_decode_error(seq: int, fmt: Format) -> None:
    raw = {"stream_id": "s", "seq": seq, "text": ""}
    data = msgspec.json.encode(raw) if fmt is Format.JSON else _msgpack_any(raw)
    with pytest.raises(DecodeError, match="seq"):
        decode(data, fmt)


def _msgpack_any(obj: dict[str, Any]) -> bytes:
    # msgspec cannot write ints above 2**64 - 1 in msgpack; those cases then
    # are a plain type error on the wire, which we still want to refuse.
    try:
        return msgspec.msgpack.encode(obj)
    except OverflowError:
        return msgspec.msgpack.encode({**obj, "seq": "too big"})


def test_invalid_msgpack_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="invalid MSGPACK chunk: Input data was truncated"):
        decode_chunk_msgpack(encode_chunk_msgpack(StreamChunk("s", 1, "abc"))[:-1])


def test_msgpack_extension_types_are_refused() -> None:
    raw = {"stream_id": "s", "seq": 1, "text": "", "data": msgspec.msgpack.Ext(5, b"x")}
    with pytest.raises(DecodeError, match="extension type 5"):
        decode_chunk_msgpack(msgspec.msgpack.encode(raw))


def test_deep_nesting_is_a_decode_error_in_json() -> None:
    depth = 100_000
    data = b'{"stream_id":"s","seq":1,"text":"","data":' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(DecodeError):
        decode_chunk_json(data)


def test_deep_nesting_is_a_decode_error_in_msgpack() -> None:
    head = msgspec.msgpack.encode({"stream_id": "s", "seq": 1, "text": "", "data": None})
    # drop the trailing nil and nest 100k one-element arrays in its place
    data = head[:-1] + b"\x91" * 100_000 + b"\xc0"
    with pytest.raises(DecodeError):
        decode_chunk_msgpack(data)


def test_unknown_format_byte_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="unknown format 7"):
        decode(b"{}", 7)


def test_unknown_format_cannot_encode() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        encode(StreamChunk("s", 0, ""), 9)  # type: ignore[arg-type]


@PROPERTY
@given(data=st.binary(max_size=200), fmt=st.sampled_from(Format))
def test_arbitrary_bytes_decode_or_raise_decode_error(data: bytes, fmt: Format) -> None:
    _valid_or_decode_error(data, fmt)


@PROPERTY
@given(
    chunk=_chunks,
    fmt=st.sampled_from(Format),
    where=st.integers(0, 10_000),
    byte=st.integers(0, 255),
    mode=st.sampled_from(["replace", "insert", "delete"]),
)
def test_mutated_encodings_decode_or_raise_decode_error(
    chunk: StreamChunk, fmt: Format, where: int, byte: int, mode: str
) -> None:
    data = bytearray(encode(chunk, fmt))
    i = where % len(data)
    if mode == "replace":
        data[i] = byte
    elif mode == "insert":
        data.insert(i, byte)
    else:
        del data[i]
    _valid_or_decode_error(bytes(data), fmt)


@PROPERTY
@given(
    obj=st.dictionaries(
        st.sampled_from(["stream_id", "seq", "text", "done", "meta", "data", "ts", "x"]),
        _values,
        max_size=7,
    ),
    fmt=st.sampled_from(Format),
)
def test_wrong_shapes_decode_or_raise_decode_error(obj: dict[str, Any], fmt: Format) -> None:
    data = msgspec.json.encode(obj) if fmt is Format.JSON else msgspec.msgpack.encode(obj)
    _valid_or_decode_error(data, fmt)


# -- encode errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunk", "fmt"),
    [
        (StreamChunk("s", 0, "", data={None: 1}), Format.JSON),
        (StreamChunk("s", 0, "", data=object()), Format.JSON),
        (StreamChunk("s", 0, "", data=object()), Format.MSGPACK),
        (StreamChunk("s", 0, "", data=2**64), Format.MSGPACK),
        (StreamChunk("s", 0, "\ud800"), Format.JSON),
        (StreamChunk("s", 0, "\ud800"), Format.MSGPACK),
    ],
)
def test_unencodable_values_raise_encode_error(chunk: StreamChunk, fmt: Format) -> None:
    with pytest.raises(EncodeError, match=f"cannot be encoded as {fmt.name}") as info:
        encode(chunk, fmt)
    assert info.value.__cause__ is not None
