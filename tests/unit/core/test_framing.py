"""Tests for icefloe.core.framing: encode_frame and the sans-I/O FrameReader."""

from __future__ import annotations

import itertools
import struct

import google_crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.core.codec import Format, decode, encode
from icefloe.core.framing import Frame, FrameReader, ReaderState, decode_frame, encode_frame
from icefloe.core.messages import StreamChunk
from icefloe.exceptions import ChecksumMismatch, DecodeError, FrameTooLarge, InvalidState

PROPERTY = settings(max_examples=200, deadline=None)

_frames = st.lists(
    st.builds(Frame, st.sampled_from(Format), st.binary(max_size=300)), min_size=1, max_size=8
)


def _raw_frame(length: int, fmt: int, flags: int, payload: bytes) -> bytes:
    """A frame built by hand, with a correct checksum, for header edge cases."""
    crc = google_crc32c.value(bytes([fmt, flags]) + payload)
    return struct.pack(">IBB", length, fmt, flags) + payload + struct.pack(">I", crc)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _feed(reader: FrameReader, pieces: list[bytes], received: list[Frame]) -> None:
    """Feed every piece then EOF, collecting frames as they complete."""
    for piece in pieces:
        reader.feed_data(piece)
        received.extend(reader.events_received())
    reader.feed_eof()


# -- encode_frame ------------------------------------------------------------


def test_frame_layout() -> None:
    frame = encode_frame(b"hi", Format.MSGPACK)
    crc = google_crc32c.value(b"\x02\x00hi")
    assert frame == b"\x00\x00\x00\x02" + b"\x02\x00" + b"hi" + crc.to_bytes(4, "big")


def test_empty_payload() -> None:
    reader = FrameReader()
    reader.feed_data(encode_frame(b"", Format.JSON))
    assert reader.events_received() == [Frame(Format.JSON, b"")]


def test_encode_frame_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format 3"):
        encode_frame(b"x", 3)  # type: ignore[arg-type]


# -- FrameReader: examples ---------------------------------------------------


def test_reads_frames_fed_one_byte_at_a_time() -> None:
    frames = [Frame(Format.JSON, b'{"a":1}'), Frame(Format.MSGPACK, b"\x80" * 70)]
    stream = b"".join(encode_frame(f.payload, f.fmt) for f in frames)
    reader = FrameReader()
    received: list[Frame] = []
    for byte in stream:
        reader.feed_data(bytes([byte]))
        received.extend(reader.events_received())
    assert received == frames
    reader.feed_eof()
    assert reader.state is ReaderState.CLOSED


def test_events_received_drains() -> None:
    reader = FrameReader()
    reader.feed_data(encode_frame(b"a", Format.JSON) * 2)
    assert len(reader.events_received()) == 2
    assert reader.events_received() == []


def test_carries_a_chunk() -> None:
    chunk = StreamChunk("s", 3, "to\nken")
    reader = FrameReader()
    reader.feed_data(encode_frame(encode(chunk, Format.MSGPACK), Format.MSGPACK))
    (frame,) = reader.events_received()
    assert decode(frame.payload, frame.fmt) == chunk


def test_too_large_is_raised_from_the_header_alone() -> None:
    reader = FrameReader(max_frame=100)
    header = struct.pack(">IBB", 101, Format.JSON, 0)
    for byte in header[:-1]:
        reader.feed_data(bytes([byte]))
    with pytest.raises(FrameTooLarge, match="101 bytes exceeds the limit of 100") as info:
        reader.feed_data(header[-1:])
    assert (info.value.size, info.value.limit) == (101, 100)
    assert reader.state is ReaderState.FAILED
    assert reader.statistics().buffered == 0


def test_frame_at_the_limit_is_accepted() -> None:
    reader = FrameReader(max_frame=4)
    reader.feed_data(encode_frame(b"abcd", Format.JSON))
    assert reader.events_received() == [Frame(Format.JSON, b"abcd")]


def test_max_frame_zero_accepts_only_empty_payloads() -> None:
    reader = FrameReader(max_frame=0)
    reader.feed_data(encode_frame(b"", Format.JSON))
    with pytest.raises(FrameTooLarge):
        reader.feed_data(encode_frame(b"x", Format.JSON))


def test_checksum_mismatch() -> None:
    frame = bytearray(encode_frame(b"payload", Format.JSON))
    frame[8] ^= 0x01
    reader = FrameReader()
    with pytest.raises(ChecksumMismatch, match="checksum mismatch"):
        reader.feed_data(bytes(frame))


def test_unknown_flags_are_a_decode_error() -> None:
    reader = FrameReader()
    with pytest.raises(DecodeError, match="unknown flags 0x80"):
        reader.feed_data(_raw_frame(1, Format.JSON, 0x80, b"x"))


def test_unknown_format_is_a_decode_error() -> None:
    reader = FrameReader()
    with pytest.raises(DecodeError, match="unknown format 0"):
        reader.feed_data(_raw_frame(1, 0, 0, b"x"))


@pytest.mark.parametrize("keep", [1, 5, 6, 9, 12])
def test_eof_inside_a_frame_is_a_decode_error(keep: int) -> None:
    reader = FrameReader()
    reader.feed_data(encode_frame(b"abc", Format.JSON)[:keep])
    with pytest.raises(DecodeError, match="input ended inside a frame"):
        reader.feed_eof()
    assert reader.state is ReaderState.FAILED


def test_eof_on_a_boundary_closes() -> None:
    reader = FrameReader()
    reader.feed_data(encode_frame(b"abc", Format.JSON))
    reader.feed_eof()
    assert reader.state is ReaderState.CLOSED
    assert reader.events_received() == [Frame(Format.JSON, b"abc")]
    with pytest.raises(InvalidState, match="in state CLOSED"):
        reader.feed_data(b"x")
    with pytest.raises(InvalidState, match="in state CLOSED"):
        reader.feed_eof()


def test_eof_with_no_input_closes() -> None:
    reader = FrameReader()
    reader.feed_eof()
    assert reader.state is ReaderState.CLOSED


def test_failed_reader_refuses_input_and_names_the_cause() -> None:
    reader = FrameReader()
    good = encode_frame(b"ok", Format.JSON)
    with pytest.raises(DecodeError):
        reader.feed_data(good + _raw_frame(1, Format.JSON, 1, b"x"))
    # the frame before the bad one is still delivered
    assert reader.events_received() == [Frame(Format.JSON, b"ok")]
    assert isinstance(reader.exception, DecodeError)
    with pytest.raises(InvalidState, match="in state FAILED") as info:
        reader.feed_data(good)
    assert info.value.__cause__ is reader.exception
    with pytest.raises(InvalidState, match="in state FAILED"):
        reader.feed_eof()


def test_empty_feed_is_not_eof() -> None:
    reader = FrameReader()
    reader.feed_data(b"")
    assert reader.state is ReaderState.OPEN


def test_buffer_is_compacted_and_stays_correct() -> None:
    frames = [Frame(Format.JSON, bytes([i % 256]) * 1000) for i in range(200)]
    stream = b"".join(encode_frame(f.payload, f.fmt) for f in frames)
    reader = FrameReader()
    received: list[Frame] = []
    for start in range(0, len(stream), 9973):  # a prime, so pieces straddle frames
        reader.feed_data(stream[start : start + 9973])
        received.extend(reader.events_received())
        assert reader.statistics().buffered < 1010
    assert received == frames


def test_statistics() -> None:
    reader = FrameReader(max_frame=10)
    data = encode_frame(b"abc", Format.JSON)
    reader.feed_data(data + data[:3])
    stats = reader.statistics()
    assert stats.state is ReaderState.OPEN
    assert stats.buffered == 3
    assert stats.max_frame == 10
    assert stats.frames_received == 1
    assert stats.bytes_received == len(data) + 3
    assert stats.frames_pending == 1


@pytest.mark.parametrize("max_frame", [-1, 2**32])
def test_rejects_invalid_max_frame(max_frame: int) -> None:
    with pytest.raises(ValueError, match="max_frame"):
        FrameReader(max_frame=max_frame)


# -- FrameReader: properties -------------------------------------------------


@PROPERTY
@given(frames=_frames, cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_any_split_yields_the_same_frames(frames: list[Frame], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(f.payload, f.fmt) for f in frames)
    reader = FrameReader()
    received: list[Frame] = []
    _feed(reader, _split(stream, cuts), received)
    assert received == frames
    assert reader.state is ReaderState.CLOSED
    assert reader.statistics().buffered == 0


@PROPERTY
@given(
    frames=_frames,
    where=st.integers(0, 10_000),
    flip=st.integers(1, 255),
    cuts=st.lists(st.integers(0, 10_000), max_size=5),
)
def test_a_corrupted_byte_is_always_detected(
    frames: list[Frame], where: int, flip: int, cuts: list[int]
) -> None:
    encoded = [encode_frame(f.payload, f.fmt) for f in frames]
    stream = bytearray(b"".join(encoded))
    where %= len(stream)
    stream[where] ^= flip
    intact = 0  # frames that end before the corrupted byte
    end = 0
    for frame_bytes in encoded:
        end += len(frame_bytes)
        if end > where:
            break
        intact += 1
    reader = FrameReader(max_frame=1000)
    received: list[Frame] = []
    # ChecksumMismatch or FrameTooLarge usually; both are DecodeErrors
    with pytest.raises(DecodeError):
        _feed(reader, _split(bytes(stream), cuts), received)
    received.extend(reader.events_received())
    assert received[:intact] == frames[:intact]
    assert reader.state is ReaderState.FAILED


@PROPERTY
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 10_000), max_size=5))
def test_arbitrary_bytes_give_frames_or_decode_error(data: bytes, cuts: list[int]) -> None:
    reader = FrameReader(max_frame=200)
    try:
        for piece in _split(data, cuts):
            reader.feed_data(piece)
        reader.feed_eof()
    except DecodeError:
        assert reader.state is ReaderState.FAILED
    else:
        assert reader.state is ReaderState.CLOSED
    for frame in reader.events_received():
        assert frame.fmt in Format
        assert len(frame.payload) <= 200


# -- decode_frame: one whole frame, the same checks as the reader ---------------------


@PROPERTY
@given(st.sampled_from(Format), st.binary(max_size=300))
def test_decode_frame_round_trips_one_frame(fmt: Format, payload: bytes) -> None:
    assert decode_frame(encode_frame(payload, fmt)) == Frame(fmt, payload)


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (b"", DecodeError, "at least 10 bytes"),
        (_raw_frame(3, 2, 0, b"abc")[:-1], DecodeError, "at least|carries"),
        (_raw_frame(3, 2, 0, b"abc") + b"x", DecodeError, "declares a payload of 3 bytes"),
        (_raw_frame(3, 9, 0, b"abc"), DecodeError, "unknown format 9"),
        (_raw_frame(3, 2, 1, b"abc"), DecodeError, "unknown flags"),
        (_raw_frame(3, 2, 0, b"abc")[:-1] + b"\x00", ChecksumMismatch, "checksum"),
    ],
)
def test_decode_frame_refuses_what_is_not_one_whole_frame(
    data: bytes, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        decode_frame(data)
    assert len(_reader_frames(data)) != 1  # the reader does not see one whole frame either


def _reader_frames(data: bytes) -> list[Frame]:
    """The frames a reader parses from ``data`` then EOF; none when it fails."""
    reader = FrameReader()
    try:
        reader.feed_data(data)
        reader.feed_eof()
    except DecodeError:
        return []
    return reader.events_received()


def test_decode_frame_applies_its_size_limit_before_anything_else() -> None:
    with pytest.raises(FrameTooLarge):
        decode_frame(encode_frame(b"x" * 11, Format.MSGPACK), max_frame=10)
