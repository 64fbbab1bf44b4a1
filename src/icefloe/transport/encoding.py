"""How chunks are written on HTTP: SSE events and NDJSON lines (pure functions).

SSE (WHATWG): one event per chunk, ``id`` = seq, ``event`` = ``chunk`` /
``end`` / ``error``, and ``data`` = one JSON line. JSON escapes every newline
and carriage return inside strings, so a token containing ``\\n``, ``\\r`` or
``data:`` cannot break the framing, and the ``data`` field is always a single
line. An ``error`` terminal has an id too (:func:`terminal_seq`), so that a
browser's reconnect after it resumes past it and gets ``204`` instead of the
terminal again. NDJSON: one JSON object per line; an abnormal end is the line
``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import enum

import msgspec

from icefloe.core.messages import StreamChunk
from icefloe.core.wire_errors import ErrorCode

__all__ = [
    "NDJSON_HEARTBEAT",
    "SSE_PING",
    "WireFormat",
    "error_body",
    "ndjson_chunk",
    "ndjson_error",
    "ndjson_reconnect",
    "parse_query_int",
    "parse_resume_point",
    "sse_chunk",
    "sse_error",
    "sse_reconnect",
    "sse_retry",
    "terminal_seq",
]

_encode = msgspec.json.Encoder().encode

#: SSE comment line sent as a heartbeat; ignored by EventSource
SSE_PING = b": ping\n\n"
#: NDJSON heartbeat: an empty line, which NDJSON readers skip
NDJSON_HEARTBEAT = b"\n"


class WireFormat(enum.StrEnum):
    """The body formats of ``GET /v1/streams/{id}``."""

    SSE = "text/event-stream"
    NDJSON = "application/x-ndjson"

    @classmethod
    def negotiate(cls, accept: str | None) -> WireFormat:
        """NDJSON when the client asks for it, else SSE (the default)."""
        if accept and "application/x-ndjson" in accept.lower():
            return cls.NDJSON
        return cls.SSE


def sse_retry(ms: int) -> bytes:
    """The ``retry:`` hint sent first: how long EventSource waits to reconnect."""
    return b"retry: %d\n\n" % ms


def sse_chunk(chunk: StreamChunk) -> bytes:
    """One chunk as an SSE event (``end`` for the done chunk)."""
    event = b"end" if chunk.done else b"chunk"
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (chunk.seq, event, _encode(chunk))


def error_body(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def sse_error(code: str, message: str, seq: int | None = None) -> bytes:
    """An abnormal end as an SSE ``error`` event, with ``id: seq`` unless None.

    Without an id a browser's EventSource reconnects with its last chunk's
    id and, if the stream's chunks were discarded, gets the terminal again,
    every ``retry`` interval for as long as the tab is open.
    """
    event = b"event: error\ndata: %s\n\n" % _encode(error_body(code, message))
    return event if seq is None else b"id: %d\n%s" % (seq, event)


def terminal_seq(code: ErrorCode, next_seq: int) -> int | None:
    """The id of the terminal a stream reader stopped at ``next_seq`` gets.

    * A stream's own end (``cancelled``, ``failed``, ``timeout``...): the
      reader has drained to the end (a cancel moves every reader there), so
      ``next_seq`` is the stream's last seq + 1, the seq the terminal takes.
      A reconnect with it asks for what follows the terminal: ``204``.
    * ``history_gone`` (this reader fell behind; the stream may go on): the
      seq before the gap, the id of the last chunk it could have had, so a
      reconnect resumes exactly there (``410`` if history no longer holds it).
      None when the gap starts at seq 0: there is no id to give.
    """
    if code is ErrorCode.HISTORY_GONE:
        return next_seq - 1 if next_seq > 0 else None
    return next_seq


def sse_reconnect(retry_ms: int, *, event: bool = True) -> bytes:
    """The last bytes of a response a draining gateway hands off (issue 12):
    a ``retry:`` hint, then an ``event: reconnect`` (no id, so the resume
    point stays the last chunk's) or, for a body whose parser takes no
    unknown events (the AI SDK's), a ``: reconnect`` comment."""
    body = _encode({"reason": "draining", "retry_ms": retry_ms})
    if not event:
        return b"retry: %d\n: reconnect\n\n" % retry_ms
    return b"retry: %d\n\nevent: reconnect\ndata: %s\n\n" % (retry_ms, body)


def ndjson_reconnect(retry_ms: int) -> bytes:
    """The NDJSON twin of :func:`sse_reconnect`: ``{"reconnect": {...}}``."""
    return _encode({"reconnect": {"reason": "draining", "retry_ms": retry_ms}}) + b"\n"


def ndjson_chunk(chunk: StreamChunk) -> bytes:
    return _encode(chunk) + b"\n"


def ndjson_error(code: str, message: str) -> bytes:
    return _encode({"error": error_body(code, message)}) + b"\n"


def parse_resume_point(
    from_seq: str | None, last_event_id: str | None, *, name: str = "from_seq"
) -> int:
    """The first seq to send: ``?from_seq=N``, else ``Last-Event-ID: N`` + 1, else 0.

    ``name`` is the query parameter ``from_seq`` came from, for the error
    (topics call theirs ``from_offset``).

    :raises ValueError: a value that is not a non-negative decimal integer.
    """
    if from_seq is not None:
        return _seq(from_seq, name)
    if last_event_id is not None and last_event_id.strip():
        return _seq(last_event_id, "Last-Event-ID") + 1
    return 0


def parse_query_int(raw: str, name: str) -> int:
    """A query parameter's integer: ASCII digits with an optional leading ``-``.

    int() would accept "+1", "1_000", non-ASCII digits and surrounding
    whitespace; the wire spells an integer one way only, so each parameter
    has one canonical form (and one cache key, one log line).

    :raises ValueError: naming ``name``, for anything else (or over 19 digits).
    """
    digits = raw[1:] if raw.startswith("-") else raw
    if not digits.isascii() or not digits.isdigit() or len(digits) > 19:
        raise ValueError(f"{name} must be an integer, got {raw[:40]!r}")
    return int(raw)


def _seq(raw: str, name: str) -> int:
    text = raw.strip()
    # int() would accept "+1", "1_000" and other spellings; a seq is plain digits.
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise ValueError(f"{name} must be a non-negative integer, got {raw[:40]!r}")
    return int(text)
