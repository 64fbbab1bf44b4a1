"""How durable streams turn chunks, start messages and checkpoint states into records.

The one place the runtime encodes what it stores, so switching to the
CRC32C-framed records of :mod:`icefloe.store.records` is a change here only.
"""

# TODO(records): encode with icefloe.store.records (CRC32C frames) once it exists.

from __future__ import annotations

from typing import Any

import msgspec

from icefloe.core.messages import Message, StreamChunk
from icefloe.exceptions import DecodeError

__all__ = [
    "decode_chunk",
    "decode_message",
    "decode_state",
    "encode_chunk",
    "encode_message",
    "encode_state",
]

_encoder = msgspec.msgpack.Encoder()
_chunk_decoder = msgspec.msgpack.Decoder(StreamChunk)
_message_decoder = msgspec.msgpack.Decoder(Message)
_any_decoder = msgspec.msgpack.Decoder()


def encode_chunk(chunk: StreamChunk) -> bytes:
    return _encoder.encode(chunk)


def decode_chunk(record: bytes) -> StreamChunk:
    """:raises DecodeError: not a chunk record."""
    try:
        return _chunk_decoder.decode(record)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"bad chunk record: {exc}") from exc


def encode_message(message: Message) -> bytes:
    return _encoder.encode(message)


def decode_message(record: bytes) -> Message:
    """:raises DecodeError: not a message record."""
    try:
        return _message_decoder.decode(record)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"bad message record: {exc}") from exc


def encode_state(state: Any) -> bytes:
    """A checkpoint's state (anything msgpack encodes: dicts, lists, str, numbers...).

    :raises TypeError: the state is not encodable.
    """
    try:
        return _encoder.encode(state)
    except (msgspec.EncodeError, TypeError) as exc:
        raise TypeError(f"checkpoint state must be msgpack-encodable: {exc}") from exc


def decode_state(record: bytes) -> Any:
    """:raises DecodeError: not a state record."""
    try:
        return _any_decoder.decode(record)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"bad checkpoint record: {exc}") from exc
