"""The sans-I/O core: pure values and state machines, no asyncio, no sockets."""

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
