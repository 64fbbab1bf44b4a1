"""The sans-I/O core: pure values and state machines, no asyncio, no sockets.

Names are re-exported lazily (PEP 562): ``import icefloe`` needs only the
messages and the sequencer, and should not pay for the codec, the framing
(google-crc32c) or the policy objects until they are used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from icefloe.core.aimd import AimdWindow, AimdWindowStatistics
    from icefloe.core.codec import (
        Format,
        decode,
        decode_chunk_json,
        decode_chunk_msgpack,
        encode,
        encode_chunk_json,
        encode_chunk_msgpack,
    )
    from icefloe.core.credit import CreditWindow, CreditWindowStatistics
    from icefloe.core.dedup import DedupWindow, DedupWindowStatistics
    from icefloe.core.framing import (
        Frame,
        FrameReader,
        FrameReaderStatistics,
        ReaderState,
        encode_frame,
    )
    from icefloe.core.messages import Headers, Message, StreamChunk, new_id
    from icefloe.core.sequencer import ReorderBuffer, ReorderBufferStatistics, Sequencer
    from icefloe.core.token_bucket import TokenBucket, TokenBucketStatistics

_WHERE = {
    "AimdWindow": "aimd",
    "AimdWindowStatistics": "aimd",
    "CreditWindow": "credit",
    "CreditWindowStatistics": "credit",
    "DedupWindow": "dedup",
    "DedupWindowStatistics": "dedup",
    "Format": "codec",
    "Frame": "framing",
    "FrameReader": "framing",
    "FrameReaderStatistics": "framing",
    "Headers": "messages",
    "Message": "messages",
    "ReaderState": "framing",
    "ReorderBuffer": "sequencer",
    "ReorderBufferStatistics": "sequencer",
    "Sequencer": "sequencer",
    "StreamChunk": "messages",
    "TokenBucket": "token_bucket",
    "TokenBucketStatistics": "token_bucket",
    "decode": "codec",
    "decode_chunk_json": "codec",
    "decode_chunk_msgpack": "codec",
    "encode": "codec",
    "encode_chunk_json": "codec",
    "encode_chunk_msgpack": "codec",
    "encode_frame": "framing",
    "new_id": "messages",
}

__all__ = [
    "AimdWindow",
    "AimdWindowStatistics",
    "CreditWindow",
    "CreditWindowStatistics",
    "DedupWindow",
    "DedupWindowStatistics",
    "Format",
    "Frame",
    "FrameReader",
    "FrameReaderStatistics",
    "Headers",
    "Message",
    "ReaderState",
    "ReorderBuffer",
    "ReorderBufferStatistics",
    "Sequencer",
    "StreamChunk",
    "TokenBucket",
    "TokenBucketStatistics",
    "decode",
    "decode_chunk_json",
    "decode_chunk_msgpack",
    "encode",
    "encode_chunk_json",
    "encode_chunk_msgpack",
    "encode_frame",
    "new_id",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'icefloe.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"icefloe.core.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
