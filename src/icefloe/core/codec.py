"""Stream chunks to bytes and back, as JSON or msgpack.

The encoders and decoders are msgspec instances built once at import, so a
call costs one C-level encode or decode. JSON output is a single line (string
newlines are escaped), which is what SSE ``data:`` fields and NDJSON need.

Decoding is strict: malformed input, wrong types, missing required fields and
a ``seq`` outside ``0 <= seq < 2**63`` all raise
:exc:`~icefloe.exceptions.DecodeError`, with msgspec's error as the cause. No
other exception escapes a decode, whatever the bytes.

Who uses what: :class:`Format` is the product's wire-format enum (the
WebSocket subprotocols, the op encoders, hub events, the format byte of a
:mod:`icefloe.core.framing` frame). The chunk functions are not called by
the product today (the edge encodes chunks with the op encoders of
:mod:`icefloe.core.ops`); they are kept, tested, for the next issues. The
durable store writes each chunk as a CRC32C-checked frame with
:func:`encode` and reads it back with :func:`decode` by the frame's format
byte (an unknown byte, say from a newer writer, is a ``DecodeError``); the
broker connectors carry chunks as JSON or msgpack messages with the
``*_chunk_json`` / ``*_chunk_msgpack`` pairs.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, NoReturn

import msgspec

from icefloe.core.messages import StreamChunk
from icefloe.exceptions import DecodeError, EncodeError

__all__ = [
    "Format",
    "decode",
    "decode_chunk_json",
    "decode_chunk_msgpack",
    "encode",
    "encode_chunk_json",
    "encode_chunk_msgpack",
]

# Seqs are stored as signed 64-bit integers by stores and brokers; a larger
# one cannot be a genuine position in a stream.
_MAX_SEQ = 2**63 - 1


class Format(enum.IntEnum):
    """A wire format; the value is the format byte of a binary frame."""

    JSON = 1
    MSGPACK = 2


def _reject_ext(code: int, data: memoryview) -> NoReturn:
    # Application-defined msgpack extension types have no JSON form, so a
    # chunk carrying one could not be relayed to an SSE or JSON consumer.
    raise DecodeError(f"msgpack extension type {code} is not allowed in a chunk")


_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder(StreamChunk)
_msgpack_encoder = msgspec.msgpack.Encoder()
_msgpack_decoder = msgspec.msgpack.Decoder(StreamChunk, ext_hook=_reject_ext)

# What a value the format cannot carry raises inside msgspec: an unsupported
# type or dict key (TypeError), an integer beyond 64 bits in msgpack
# (OverflowError), a lone surrogate (UnicodeEncodeError).
_ENCODE_FAILURES = (msgspec.EncodeError, TypeError, OverflowError, UnicodeEncodeError)


# What malformed input raises inside msgspec: its own DecodeError (and
# ValidationError, a subclass), UnicodeDecodeError for invalid UTF-8 inside a
# JSON string, RecursionError for absurdly deep nesting in ``meta``/``data``.
_DECODE_FAILURES = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def _encode_failed(fmt: Format, exc: Exception) -> NoReturn:
    raise EncodeError(f"chunk cannot be encoded as {fmt.name}: {exc}") from exc


def _decode_failed(fmt: Format, exc: Exception) -> NoReturn:
    raise DecodeError(f"invalid {fmt.name} chunk: {exc}") from exc


def _checked(chunk: StreamChunk, fmt: Format) -> StreamChunk:
    seq = chunk.seq
    if not 0 <= seq <= _MAX_SEQ:
        raise DecodeError(f"invalid {fmt.name} chunk: seq must be in [0, 2**63), got {seq}")
    return chunk


def encode_chunk_json(chunk: StreamChunk) -> bytes:
    """Encode ``chunk`` as one line of UTF-8 JSON (no trailing newline).

    :raises EncodeError: if ``meta`` or ``data`` holds a value JSON cannot
        carry (e.g. an arbitrary object, a non-string dict key).
    """
    try:
        return _json_encoder.encode(chunk)
    except _ENCODE_FAILURES as exc:
        _encode_failed(Format.JSON, exc)


def decode_chunk_json(data: bytes | str) -> StreamChunk:
    """Decode one JSON object into a :class:`StreamChunk`.

    :raises DecodeError: if ``data`` is not a valid chunk.
    """
    try:
        chunk = _json_decoder.decode(data)
    except _DECODE_FAILURES as exc:
        _decode_failed(Format.JSON, exc)
    return _checked(chunk, Format.JSON)


def encode_chunk_msgpack(chunk: StreamChunk) -> bytes:
    """Encode ``chunk`` as a msgpack map.

    :raises EncodeError: if ``meta`` or ``data`` holds a value msgpack cannot
        carry (e.g. an arbitrary object, an integer beyond 64 bits).
    """
    try:
        return _msgpack_encoder.encode(chunk)
    except _ENCODE_FAILURES as exc:
        _encode_failed(Format.MSGPACK, exc)


def decode_chunk_msgpack(data: bytes) -> StreamChunk:
    """Decode one msgpack map into a :class:`StreamChunk`.

    :raises DecodeError: if ``data`` is not a valid chunk, or carries a
        msgpack extension type.
    """
    try:
        chunk = _msgpack_decoder.decode(data)
    except _DECODE_FAILURES as exc:
        _decode_failed(Format.MSGPACK, exc)
    return _checked(chunk, Format.MSGPACK)


_ENCODERS: dict[int, Callable[[StreamChunk], bytes]] = {
    Format.JSON: encode_chunk_json,
    Format.MSGPACK: encode_chunk_msgpack,
}
_DECODERS: dict[int, Callable[[Any], StreamChunk]] = {
    Format.JSON: decode_chunk_json,
    Format.MSGPACK: decode_chunk_msgpack,
}


def encode(chunk: StreamChunk, fmt: Format) -> bytes:
    """Encode ``chunk`` in format ``fmt``.

    :raises ValueError: if ``fmt`` is not a :class:`Format`.
    :raises EncodeError: if the chunk holds a value ``fmt`` cannot carry.
    """
    try:
        encoder = _ENCODERS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}") from None
    return encoder(chunk)


def decode(data: bytes, fmt: Format | int) -> StreamChunk:
    """Decode ``data`` from format ``fmt``.

    ``fmt`` may be a raw format byte read off the wire.

    :raises DecodeError: if ``fmt`` is not a known format or ``data`` is not
        a valid chunk in it.
    """
    try:
        decoder = _DECODERS[fmt]
    except (KeyError, TypeError):
        raise DecodeError(f"unknown format {fmt!r}") from None
    return decoder(data)
