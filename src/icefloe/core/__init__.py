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
    from icefloe.core.badmeter import BadMessageMeter, BadMessageMeterStatistics
    from icefloe.core.breaker import (
        BreakerPolicy,
        BreakerState,
        BreakerStatistics,
        CircuitBreaker,
    )
    from icefloe.core.bytecount import ByteCount, chunk_size
    from icefloe.core.codec import (
        Format,
        decode,
        decode_chunk_json,
        decode_chunk_msgpack,
        encode,
        encode_chunk_json,
        encode_chunk_msgpack,
    )
    from icefloe.core.congestion import (
        CongestionMonitor,
        CongestionPolicy,
        CongestionState,
        CongestionStatistics,
        Thresholds,
        shed,
        shed_order,
    )
    from icefloe.core.credit import CreditWindow, CreditWindowStatistics
    from icefloe.core.cursor import Cursor, CursorSet
    from icefloe.core.dedup import DedupWindow, DedupWindowStatistics
    from icefloe.core.drr import DeficitRoundRobin, DeficitRoundRobinStatistics, DrrKeyStatistics
    from icefloe.core.filters import Filter, FilterError, compile_filter
    from icefloe.core.flowwindow import FlowWindow, FlowWindowPolicy, FlowWindowStatistics
    from icefloe.core.framing import (
        Frame,
        FrameReader,
        FrameReaderStatistics,
        ReaderState,
        decode_frame,
        encode_frame,
    )
    from icefloe.core.intake import Intake
    from icefloe.core.latency import LatencyBudget, LatencyBudgetStatistics
    from icefloe.core.loglimits import LogLimits
    from icefloe.core.messages import Headers, Message, StreamChunk, new_id
    from icefloe.core.ops import BadRequest, decode_client, encode_chunk, encode_server
    from icefloe.core.reliability import Reliability
    from icefloe.core.ring import ByteLedger, OfferResult, Outcome, Overflow, Ring, RingStatistics
    from icefloe.core.sequencer import ReorderBuffer, ReorderBufferStatistics
    from icefloe.core.sessions import (
        SessionInfo,
        SessionState,
        SessionTable,
        SessionTableStatistics,
    )
    from icefloe.core.streamlog import LogState, StreamLog, StreamLogStatistics
    from icefloe.core.token_bucket import TokenBucket, TokenBucketStatistics
    from icefloe.core.topics import Pattern, TopicError, TopicIndex, validate_topic
    from icefloe.core.wire_errors import (
        WIRE_ERRORS,
        CloseCode,
        CloseReason,
        ErrorCode,
        WireError,
        close_frame,
        http_status,
    )

_WHERE = {
    "BreakerPolicy": "breaker",
    "BreakerState": "breaker",
    "BreakerStatistics": "breaker",
    "CircuitBreaker": "breaker",
    "ByteCount": "bytecount",
    "Cursor": "cursor",
    "CursorSet": "cursor",
    "Intake": "intake",
    "LogLimits": "loglimits",
    "LogState": "streamlog",
    "StreamLog": "streamlog",
    "StreamLogStatistics": "streamlog",
    "chunk_size": "bytecount",
    "ByteLedger": "ring",
    "OfferResult": "ring",
    "Outcome": "ring",
    "Overflow": "ring",
    "Ring": "ring",
    "RingStatistics": "ring",
    "Pattern": "topics",
    "TopicError": "topics",
    "TopicIndex": "topics",
    "validate_topic": "topics",
    "Filter": "filters",
    "FlowWindow": "flowwindow",
    "FlowWindowPolicy": "flowwindow",
    "FlowWindowStatistics": "flowwindow",
    "FilterError": "filters",
    "compile_filter": "filters",
    "encode_chunk": "ops",
    "BadMessageMeter": "badmeter",
    "BadMessageMeterStatistics": "badmeter",
    "CongestionMonitor": "congestion",
    "CongestionPolicy": "congestion",
    "CongestionState": "congestion",
    "CongestionStatistics": "congestion",
    "Thresholds": "congestion",
    "shed": "congestion",
    "shed_order": "congestion",
    "DeficitRoundRobin": "drr",
    "DeficitRoundRobinStatistics": "drr",
    "DrrKeyStatistics": "drr",
    "LatencyBudget": "latency",
    "LatencyBudgetStatistics": "latency",
    "BadRequest": "ops",
    "decode_client": "ops",
    "encode_server": "ops",
    "SessionInfo": "sessions",
    "SessionState": "sessions",
    "SessionTable": "sessions",
    "SessionTableStatistics": "sessions",
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
    "StreamChunk": "messages",
    "TokenBucket": "token_bucket",
    "TokenBucketStatistics": "token_bucket",
    "decode": "codec",
    "decode_chunk_json": "codec",
    "decode_chunk_msgpack": "codec",
    "encode": "codec",
    "encode_chunk_json": "codec",
    "encode_chunk_msgpack": "codec",
    "decode_frame": "framing",
    "encode_frame": "framing",
    "new_id": "messages",
    "Reliability": "reliability",
    "WIRE_ERRORS": "wire_errors",
    "CloseCode": "wire_errors",
    "CloseReason": "wire_errors",
    "ErrorCode": "wire_errors",
    "WireError": "wire_errors",
    "close_frame": "wire_errors",
    "http_status": "wire_errors",
}

__all__ = [
    "WIRE_ERRORS",
    "AimdWindow",
    "AimdWindowStatistics",
    "BadMessageMeter",
    "BadMessageMeterStatistics",
    "BadRequest",
    "BreakerPolicy",
    "BreakerState",
    "BreakerStatistics",
    "ByteCount",
    "ByteLedger",
    "CircuitBreaker",
    "CloseCode",
    "CloseReason",
    "CongestionMonitor",
    "CongestionPolicy",
    "CongestionState",
    "CongestionStatistics",
    "CreditWindow",
    "CreditWindowStatistics",
    "Cursor",
    "CursorSet",
    "DedupWindow",
    "DedupWindowStatistics",
    "DeficitRoundRobin",
    "DeficitRoundRobinStatistics",
    "DrrKeyStatistics",
    "ErrorCode",
    "Filter",
    "FilterError",
    "FlowWindow",
    "FlowWindowPolicy",
    "FlowWindowStatistics",
    "Format",
    "Frame",
    "FrameReader",
    "FrameReaderStatistics",
    "Headers",
    "Intake",
    "LatencyBudget",
    "LatencyBudgetStatistics",
    "LogLimits",
    "LogState",
    "Message",
    "OfferResult",
    "Outcome",
    "Overflow",
    "Pattern",
    "ReaderState",
    "Reliability",
    "ReorderBuffer",
    "ReorderBufferStatistics",
    "Ring",
    "RingStatistics",
    "SessionInfo",
    "SessionState",
    "SessionTable",
    "SessionTableStatistics",
    "StreamChunk",
    "StreamLog",
    "StreamLogStatistics",
    "Thresholds",
    "TokenBucket",
    "TokenBucketStatistics",
    "TopicError",
    "TopicIndex",
    "WireError",
    "chunk_size",
    "close_frame",
    "compile_filter",
    "decode",
    "decode_chunk_json",
    "decode_chunk_msgpack",
    "decode_client",
    "decode_frame",
    "encode",
    "encode_chunk",
    "encode_chunk_json",
    "encode_chunk_msgpack",
    "encode_frame",
    "encode_server",
    "http_status",
    "new_id",
    "shed",
    "shed_order",
    "validate_topic",
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
