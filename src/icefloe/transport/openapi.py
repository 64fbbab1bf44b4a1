"""The OpenAPI 3.1 description of the HTTP API, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from icefloe._version import __version__
from icefloe.core.wire_errors import ErrorCode
from icefloe.runtime.stream_types import StreamPhase

__all__ = ["OPENAPI"]


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


_STREAM_ID = {
    "name": "stream_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": 200},
}
_TOPIC = {
    "name": "topic",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": 256},
}
_CHAT_ID = {
    "name": "chat_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": 200},
}
_CHAT_TENANT = {"name": "tenant", "in": "query", "schema": {"type": "string", "maxLength": 200}}
#: a UI message stream (docs/ai-sdk.md): SSE ``data:`` JSON parts, then ``[DONE]``
_UI_STREAM = {
    "description": "the reply as an AI SDK UI message stream (x-vercel-ai-ui-message-stream: v1)",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}
_COMMON_ERRORS = {
    "401": _error("missing or bad credentials"),
    "403": _error("missing scope or foreign tenant"),
    "429": _error("rate or connection limit; see Retry-After"),
    # The connection layer answers these before any route runs (docs/security.md,
    # "Connections and headers"), so any operation may see them.
    "408": _error("the request head did not arrive within --header-timeout"),
    "431": _error("the request line and headers are over --max-header-bytes or --max-headers"),
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "icefloe", "version": __version__},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            # every code of the wire-error table (docs/wire-protocol.md)
                            "code": {"type": "string", "enum": [c.value for c in ErrorCode]},
                            "message": {"type": "string"},
                        },
                    }
                },
            },
            "Publish": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "data": {},
                    "headers": {
                        "type": "object",
                        "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
                    },
                    "tenant": {"type": "string", "minLength": 1, "maxLength": 200},
                },
            },
            "Published": {
                "type": "object",
                "required": ["topic", "offset", "epoch"],
                "properties": {
                    "topic": {"type": "string"},
                    "offset": {"type": "integer"},
                    "epoch": {"type": "string"},
                },
            },
            "Headers": {
                "type": "object",
                "required": ["tenant"],
                "additionalProperties": False,
                "properties": {
                    "tenant": {"type": "string", "minLength": 1, "maxLength": 200},
                    "topic": {"type": ["string", "null"]},
                    "priority": {"type": "integer", "minimum": -1000, "maximum": 1000},
                },
            },
            "StartRequest": {
                "type": "object",
                "required": ["headers"],
                "additionalProperties": False,
                "properties": {
                    "payload": {},
                    "headers": {"$ref": "#/components/schemas/Headers"},
                    "idempotency_key": {"type": ["string", "null"], "maxLength": 200},
                },
            },
            "ChatRequest": {
                "type": "object",
                "required": ["id", "messages"],
                "additionalProperties": True,
                "properties": {
                    "id": {"type": "string", "minLength": 1, "maxLength": 200},
                    "messages": {"type": "array", "items": {"type": "object"}},
                    "trigger": {"enum": ["submit-message", "regenerate-message"]},
                    "messageId": {"type": ["string", "null"]},
                    "tenant": {"type": "string", "minLength": 1, "maxLength": 200},
                },
            },
            "ChatStopped": {
                "type": "object",
                "required": ["chat_id", "stream_id", "state"],
                "properties": {
                    "chat_id": {"type": "string"},
                    "stream_id": {"type": "string"},
                    "state": {"enum": [p.label for p in StreamPhase]},
                },
            },
            "Started": {
                "type": "object",
                "required": ["stream_id", "trace_id"],
                "properties": {"stream_id": {"type": "string"}, "trace_id": {"type": "string"}},
            },
            "StreamStatus": {
                "type": "object",
                "required": ["stream_id", "state", "last_seq", "subscribers"],
                "properties": {
                    "stream_id": {"type": "string"},
                    "tenant": {"type": "string"},
                    # queued: a --no-runs gateway's start no worker took yet (issue 12)
                    "state": {"enum": [p.label for p in StreamPhase] + ["queued"]},
                    "last_seq": {"type": "integer"},
                    "subscribers": {"type": "integer"},
                    "code": {"type": ["string", "null"]},
                },
            },
            "StreamList": {
                "type": "object",
                "required": ["streams"],
                "properties": {
                    "streams": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/StreamStatus"},
                    }
                },
            },
            "Chunk": {
                "type": "object",
                "required": ["stream_id", "seq", "text", "done"],
                "properties": {
                    "stream_id": {"type": "string"},
                    "seq": {"type": "integer", "minimum": 0},
                    "text": {"type": "string"},
                    "done": {"type": "boolean"},
                    "meta": {"type": "object"},
                    "data": {},
                    "ts": {"type": "integer"},
                },
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/v1/streams": {
            "post": {
                "summary": "Start a run and its stream",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/StartRequest"}
                        }
                    },
                },
                "responses": {
                    "201": _json("Started", "started"),
                    "200": _json("Started", "the stream this idempotency key started"),
                    "400": _error("invalid body"),
                    "413": _error("body too large"),
                    "503": _error("overloaded; see Retry-After"),
                    **_COMMON_ERRORS,
                },
            },
            "get": {
                "summary": "Streams of the caller's tenant",
                "responses": {"200": _json("StreamList", "registered streams"), **_COMMON_ERRORS},
            },
        },
        "/v1/streams/{stream_id}": {
            "parameters": [_STREAM_ID],
            "get": {
                "summary": "Read a stream as SSE (default) or NDJSON; resumable",
                "parameters": [
                    {
                        "name": "from_seq",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0},
                    },
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {
                        "description": "the stream",
                        "content": {
                            "text/event-stream": {"schema": {"type": "string"}},
                            "application/x-ndjson": {"schema": {"type": "string"}},
                        },
                    },
                    "204": {"description": "the terminal was already delivered"},
                    "400": _error("bad resume point"),
                    "404": _error("unknown stream"),
                    "410": _error(
                        f"{ErrorCode.HISTORY_GONE.value}: the resume point is no longer held"
                    ),
                    **_COMMON_ERRORS,
                },
            },
            "delete": {
                "summary": "Cancel the stream's run",
                "responses": {
                    "200": _json("StreamStatus", "the stream after cancelling"),
                    "404": _error("unknown stream"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/v1/streams/{stream_id}/status": {
            "parameters": [_STREAM_ID],
            "get": {
                "summary": "State, last seq and subscribers",
                "responses": {
                    "200": _json("StreamStatus", "status"),
                    "404": _error("unknown stream"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/v1/streams/{stream_id}/poll": {
            "parameters": [_STREAM_ID],
            "get": {
                "summary": "Long-poll: chunks after after_seq, waiting up to wait_s",
                "parameters": [
                    {
                        "name": "after_seq",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": -1},
                    },
                    {
                        "name": "wait_s",
                        "in": "query",
                        "schema": {"type": "number", "minimum": 0, "maximum": 30},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "chunks (an {error} object ends an abnormal stream)",
                        "content": {"application/json": {"schema": {"type": "array"}}},
                    },
                    "400": _error("bad parameters"),
                    "404": _error("unknown stream"),
                    "410": _error(f"{ErrorCode.HISTORY_GONE.value}: after_seq is no longer held"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/v1/chat": {
            "post": {
                "summary": "Start a run for a useChat request; the reply as a UI message stream",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}
                    },
                },
                "responses": {
                    "200": _UI_STREAM,
                    "400": _error("invalid body"),
                    "413": _error("body too large"),
                    "503": _error("overloaded; see Retry-After"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/v1/chat/{chat_id}/stream": {
            "parameters": [_CHAT_ID, _CHAT_TENANT],
            "get": {
                "summary": "Resume the chat's running reply from its start",
                "responses": {
                    "200": _UI_STREAM,
                    "204": {"description": "the chat has no running reply"},
                    "404": _error("a tenant the caller may not see"),
                    "410": _error(f"{ErrorCode.HISTORY_GONE.value}: the reply's start is gone"),
                    **_COMMON_ERRORS,
                },
            },
            "delete": {
                "summary": "Stop (cancel) the chat's running reply",
                "responses": {
                    "200": _json("ChatStopped", "the reply was cancelled"),
                    "204": {"description": "the chat has no running reply"},
                    "404": _error("a tenant the caller may not see"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/v1/topics/{topic}": {
            "parameters": [_TOPIC],
            "post": {
                "summary": "Publish an event to the hub",
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Publish"}}
                    },
                },
                "responses": {
                    "201": _json("Published", "published"),
                    "400": _error("bad topic, headers or body"),
                    "413": _error("body too large"),
                    "503": _error("overloaded; see Retry-After"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/v1/topics/{pattern}": {
            "parameters": [
                {
                    "name": "pattern",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "maxLength": 256},
                }
            ],
            "get": {
                "summary": "Subscribe to the hub's events on matching topics (SSE or NDJSON)",
                "parameters": [
                    {"name": "filter", "in": "query", "schema": {"type": "string"}},
                    {"name": "from_offset", "in": "query", "schema": {"type": "integer"}},
                    {"name": "epoch", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "buffer",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 4096},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "events, until the client leaves",
                        "content": {
                            "text/event-stream": {"schema": {"type": "string"}},
                            "application/x-ndjson": {"schema": {"type": "string"}},
                        },
                    },
                    "400": _error("bad pattern, filter or parameters"),
                    "410": _error("from_offset no longer retained, or the topic's epoch changed"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/v1/events": {
            "get": {
                "summary": "Follow several streams and topic patterns on one SSE connection",
                "parameters": [
                    {
                        "name": "stream",
                        "in": "query",
                        "schema": {"type": "array", "items": {"type": "string", "maxLength": 128}},
                        "style": "form",
                        "explode": True,
                    },
                    {
                        "name": "topic",
                        "in": "query",
                        "schema": {"type": "array", "items": {"type": "string", "maxLength": 256}},
                        "style": "form",
                        "explode": True,
                    },
                    {"name": "from", "in": "query", "schema": {"type": "string"}},
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {
                        "description": "tagged events of every source, until all end",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "204": {"description": "every source ended and was delivered"},
                    "400": _error("bad parameters or cursor; over 32 sources"),
                    "404": _error("no such stream (another tenant's reads the same)"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}},
        "/readyz": {
            "get": {
                "summary": "Readiness",
                "responses": {"200": {"description": "ready"}, "503": _error("not ready")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (with auth on: the metrics scope)",
                "responses": {
                    "200": {
                        "description": "metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_COMMON_ERRORS,
                },
            }
        },
    },
}
